"""make gpu-smoke without a GPU: its --dry mode runs every case's code at tiny shapes on the CPU and writes the
record (numbers are not asserted beyond being positive and finite: no timed tests), and a real run on a machine
without CUDA stops at once with a one-line message."""
import json
import math
import os

import pytest
import torch

from pipelines import gpu_smoke


def test_dry_run_writes_every_case(tmp_path, capsys):
    out = tmp_path / "bench"
    rendezvous = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")}
    path = gpu_smoke.main(["--dry", "--out", str(out)])
    record = json.loads(path.read_text())
    assert path.parent == out and path.with_suffix(".md").exists() and record["dry"]
    assert set(record["cases"]) == set(gpu_smoke.CASES)
    for name, case in record["cases"].items():
        assert "error" not in case and case["seconds"] > 0, name
        assert case["results"], name
        for r in case["results"].values():
            assert r["median_s"] > 0 and r["tokens"] > 0 and r["tokens_per_s"] > 0, name
    generated = record["cases"]["generation"]["results"]
    assert {n.split("_")[-1] for n in generated} == {"fp32", "bf16"} and len(generated) == 4  # two models x two
    for check in record["cases"]["generation"]["precision_check"].values():
        assert check["tokens"] > 0 and all(math.isfinite(v) for v in check.values())
    assert all(math.isfinite(v) for v in record["cases"]["reward_model"]["bf16_vs_fp32_scores"].values())
    # the sharded path in a process group of one computes the plain step (exactly, on a CPU) and moved the weights
    sharded = record["cases"]["ppo_sharded"]["sharded_vs_plain"]
    assert sharded["tensors_compared"] > 0 and sharded["max_abs_weight_change_of_the_step"] > 0
    assert sharded["max_abs_start_diff"] == 0 and set(sharded["tensors_in_one_file_only"]) <= {"lm_head.weight"}
    assert sharded["max_abs_weight_diff"] <= 1e-6 * sharded["max_abs_weight_change_of_the_step"]
    assert all(d <= 1e-6 for d in sharded["metric_abs_diff"].values()), sharded
    assert len(record["cases"]["ppo_sharded"]["results"]) == 2  # plain and sharded timings
    assert not torch.distributed.is_initialized()  # the one-process group is closed and its variables restored
    assert {k: os.environ.get(k) for k in rendezvous} == rendezvous
    assert record["cases"]["dpo"]["layers_used"] == gpu_smoke.DRY["n_layer"]
    assert record["cases"]["dpo"]["attempts"][0]["settings"]["optim"] == "rmsprop"  # the preset's optimiser
    # one progress line per case, then the files
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("gpu-smoke: ")]
    assert [x.split(":")[1].strip() for x in lines[:-1]] == list(gpu_smoke.CASES)
    # the index beside the folder shows the record as a column of its step table
    index = (tmp_path / "bench.md").read_text()
    assert f"[{path.stem}]({out.name}/{path.stem}.md)" in index
    assert any(f"| {name} |" in index for name in generated)


def test_a_failing_sharded_path_is_recorded_and_the_next_cases_run(tmp_path, monkeypatch):
    def broken():
        raise RuntimeError("NCCL error: unhandled system error\nmore lines")
    monkeypatch.setattr(gpu_smoke, "one_process", broken)
    path = gpu_smoke.main(["--dry", "--out", str(tmp_path / "bench"), "--only", "ppo_sharded", "reward_model"])
    cases = json.loads(path.read_text())["cases"]
    assert cases["ppo_sharded"]["error"] == "RuntimeError: NCCL error: unhandled system error"
    assert "error" not in cases["reward_model"] and cases["reward_model"]["results"]
    assert "ppo_sharded: **RuntimeError: NCCL error" in path.with_suffix(".md").read_text()


def test_dpo_retries_with_fewer_layers_after_out_of_memory(tmp_path, monkeypatch):
    real = gpu_smoke.dpo_attempt

    def attempt(a, layers):
        if layers == gpu_smoke.DRY["n_layer"]:  # the full depth of the dry shape runs out of memory
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(a, layers)

    monkeypatch.setattr(gpu_smoke, "dpo_attempt", attempt)
    path = gpu_smoke.main(["--dry", "--only", "dpo", "--out", str(tmp_path)])
    dpo = json.loads(path.read_text())["cases"]["dpo"]
    assert [(x["layers"], x.get("error")) for x in dpo["attempts"]] == [(2, "out of memory"), (1, None)]
    assert dpo["layers_used"] == 1 and "extrapolate" in dpo["note"] and dpo["results"]
    assert "2 layers: out of memory, 1 layers: ran" in path.with_suffix(".md").read_text()


def test_without_cuda_a_real_run_stops_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        gpu_smoke.main(["--out", str(tmp_path)])
    assert stop.value.code == 2
    assert capsys.readouterr().err == gpu_smoke.NO_GPU + "\n"
    assert not any(tmp_path.iterdir())
