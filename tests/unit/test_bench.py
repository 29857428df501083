"""The benchmark script runs end to end and writes both of its files (numbers are not asserted: no timed tests)."""
import json
import shutil

import pytest

from pipelines import bench, bench_e2e


@pytest.mark.heavy  # minutes of training or timing: make test runs it, make test-fast does not
def test_bench_writes_its_record(tmp_path):
    out = tmp_path / "bench"
    bench.main(["--out", str(out), "--repeats", "1", "--eval-prefixes", "16"])
    records = list(out.glob("*.json"))
    assert len(records) == 1 and list(out.glob("*.md"))
    results = json.loads(records[0].read_text())["results"]
    assert {"dpo_step_32_pairs", "dpo_step_32_pairs_stored_ref_logps", "sft_step_32x128",
            "ppo_step_64_rollouts_2_epochs", "evaluate_checkpoint_16_prefixes"} <= set(results)
    assert all(r["median_s"] > 0 for r in results.values())
    if bench.use_bf16("bf16"):  # the preset trains in bf16 where the CPU has it: both precisions are timed
        assert {"sft_step_32x128_bf16", "dpo_step_32_pairs_stored_ref_logps_bf16",
                "ppo_step_64_rollouts_2_epochs_bf16"} <= set(results)
    assert results["sft_step_32x128"]["tokens"] == 32 * 128
    # FLOPs as the stages' cost meter counts them: one SFT step is one trained pass over 32 x 128 positions
    record = json.loads(records[0].read_text())
    n = record["n_params"] - record["model"]["n_positions"] * record["model"]["n_embd"]  # no position table
    assert results["sft_step_32x128"]["flops"] == pytest.approx(6 * n * 32 * 128, rel=1e-3)
    dpo = results["dpo_step_32_pairs_stored_ref_logps"]  # padded pairs, no reference pass: at least 6N per token
    assert dpo["flops"] >= 6 * n * dpo["tokens"] * (1 - 1e-3)
    assert results["dpo_step_32_pairs"]["flops"] > dpo["flops"]  # + the reference model's forward
    assert record["peak_bf16_tflops"] is None and not any("mfu" in r for r in results.values())  # CPU: no MFU
    # The preset's dense logits, and TRL's fused head beside them for comparison
    assert "dpo_step_32_pairs_stored_ref_logps_trl_fused_head" in results
    assert "tokens / s" in next(out.glob("*.md")).read_text()
    index = (tmp_path / "bench.md").read_text()  # the one-page index beside the folder
    assert f"| sft_step_32x128 | {results['sft_step_32x128']['median_s']} (" in index
    assert "No end-to-end record yet" in index


def test_end_to_end_refuses_a_runs_folder_that_is_not_empty(tmp_path, monkeypatch):
    (tmp_path / "runs" / "sentiment").mkdir(parents=True)
    monkeypatch.setenv("RVD_RUNS", str(tmp_path / "runs"))
    import pytest
    with pytest.raises(SystemExit, match="starts from an empty"):
        bench.main(["--e2e", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_end_to_end_record_has_phases_and_keeps_earlier_measurements(tmp_path):
    from datetime import datetime

    runs = tmp_path / "runs" / "sentiment" / "embedded"
    t0 = datetime.fromisoformat("2026-12-01T09:00:00+00:00").timestamp()
    for folder, stage, finished, wall in (("shared/sft", "sft", "09:08:00", 480.0),
                                          ("shared/pairs", "pairs", "09:10:00", 30.0),
                                          ("shared/reward_model", "reward_model", "09:20:00", 200.0),
                                          ("seed0/dpo_beta0.1", "train", "09:30:00", 300.0),
                                          ("seed0/dpo_beta0.1/eval", "evaluate", "09:31:00", 20.0)):
        (runs / folder).mkdir(parents=True)
        (runs / folder / "done.json").write_text(json.dumps(
            {"stage": stage, "wall_time_s": wall, "finished_at": f"2026-12-01T{finished}+00:00"}))
    times = bench_e2e.stage_times(tmp_path / "runs", t0)
    # the shared phase ends with pairs: r_phi is one of the parallel jobs
    assert list(times["phase_seconds"].values()) == [600.0]
    assert times["stage_seconds"] == {"method evaluate": 20.0, "method train": 300.0, "pairs": 30.0,
                                      "reward_model": 200.0, "sft": 480.0}
    out = tmp_path / "out"
    for sha, seconds in (("a" * 40, 3000.0), ("b" * 40, 1860.0)):
        bench_e2e.write_e2e(out, {"command": "make reproduce-sentiment", "seconds": seconds, "git_sha": sha,
                              "finished_at": "2026-12-01T09:31:00+00:00", "machine": "Machine: test.", **times})
    (record,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert record["git_sha"] == "b" * 40 and [h["git_sha"] for h in record["history"]] == ["a" * 40]
    text = next(out.glob("*.md")).read_text()
    assert "**31.0 min**" in text and "10.0 min; the parallel method jobs (and r_phi) after them: 21.0 min" in text
    assert "| `aaaaaaaaaa` | 2026-12-01T09:31:00+00:00 | 50.0 | not measured |" in text
    assert "speed" not in text.split("Earlier")[0]  # no probe, no line about one


def test_end_to_end_keeps_the_machine_speed_beside_its_time(tmp_path, monkeypatch):
    """make bench-e2e probes the machine before and after the timed run; the probe is kept in the record, its
    history and the index (times from different sessions are compared beside it)."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    monkeypatch.setenv("RVD_RUNS", str(runs))
    order = []

    def probe():
        order.append("probe")
        return {"operation": "sample_256x32_tokens", "threads": 1, "repeats": 5, "median_s": 0.75 + len(order) / 100}

    monkeypatch.setattr(bench_e2e, "_timed_make", lambda cmd: order.append(cmd) or {
        "command": " ".join(cmd), "seconds": 2100.0, "git_sha": "a" * 40, "finished_at": "2026-12-08T05:00:00+00:00"})
    for folder, size in (("shared/sft/policy", 3000), ("seed0/dpo_beta0.1/policy", 2 * 2**20), ("seed0/bon", 0)):
        (runs / "sentiment" / "embedded" / folder).mkdir(parents=True)
        if size:
            (runs / "sentiment" / "embedded" / folder / "model.safetensors").write_bytes(b"x" * size)
    assert bench_e2e.disk_usage(runs) == {"total": 2.0, "shared": 0.0, "seed0/bon": 0.0, "seed0/dpo_beta0.1": 2.0}
    shutil.rmtree(runs)
    monkeypatch.setattr(bench_e2e, "disk_usage", lambda runs: {"total": 420.5, "shared": 23.0, "seed0/ppo_kl1": 51.2})
    bench_e2e.end_to_end(out, ["JOBS=2"], probe)
    assert order == ["probe", ["make", "reproduce-sentiment", "JOBS=2"], "probe"]
    record = json.loads((out / next(p.name for p in out.glob("*.json"))).read_text())
    assert record["speed_probe"] == {"operation": "sample_256x32_tokens", "threads": 1, "repeats": 5,
                                     "before_s": 0.76, "after_s": 0.78}
    page = next(out.glob("*.md")).read_text()
    assert "sample_256x32_tokens on 1 thread, median of 5" in page and "0.760 s before the run, 0.780 s after" in page
    assert "- disk: 420.5 MiB of files under the runs folder's sentiment/embedded/ when it finished: `shared/` " \
           "23 MiB; each method run of seed 0, in MiB: ppo_kl1 51.2." in page
    # a second measurement: the first goes to the history with its probe
    bench_e2e.end_to_end(out, [], probe)
    record = json.loads(next(out.glob("*.json")).read_text())
    assert record["history"][0]["speed_probe"]["before_s"] == 0.76 and record["speed_probe"]["before_s"] == 0.79
    assert "| 35.0 | 0.760 / 0.780 s |" in next(out.glob("*.md")).read_text()
    index = (tmp_path / "out.md").read_text()
    assert index.count("speed probe") == 1 and "0.790 / 0.810 s |" in index


def test_the_speed_probe_times_sampling_on_one_thread(monkeypatch):
    threads, seen = bench.torch.get_num_threads(), []
    timed = bench._timed
    monkeypatch.setattr(bench, "_timed", lambda fn, repeats: seen.append(bench.torch.get_num_threads())
                        or timed(fn, repeats))
    p = bench.speed_probe(repeats=1)
    assert seen == [1]  # timed on one thread, as each method job of the sweep runs
    assert p["operation"] == "sample_256x32_tokens" and p["repeats"] == 1 and p["median_s"] > 0
    assert bench.torch.get_num_threads() == threads  # restored


def test_multi_seed_continues_an_end_to_end_record(tmp_path, monkeypatch):
    out, runs = tmp_path / "out", tmp_path / "runs"
    monkeypatch.setenv("RVD_RUNS", str(runs))
    import pytest
    with pytest.raises(SystemExit, match="make bench-e2e"):  # nothing to continue
        bench.main(["--seeds", "--out", str(out)])
    bench_e2e.write_e2e(out, {"command": "make reproduce-sentiment", "seconds": 1500.0, "git_sha": "c" * 40,
                          "finished_at": "2026-12-01T10:00:00+00:00", "machine": "Machine: test.",
                          "stage_seconds": {"sft": 280.0}, "phase_seconds": {}})
    (runs / "sentiment" / "embedded" / "seed0" / "dpo_beta0.1").mkdir(parents=True)
    (runs / "sentiment" / "embedded" / "seed0" / "dpo_beta0.1" / "done.json").write_text("{}")
    from types import SimpleNamespace
    calls, clock = [], iter([100.0, 1300.0])
    monkeypatch.setattr(bench_e2e, "subprocess", SimpleNamespace(run=lambda cmd, check: calls.append(cmd)))
    monkeypatch.setattr(bench_e2e, "time", SimpleNamespace(time=lambda: next(clock)))
    monkeypatch.setattr(bench_e2e, "git_sha", lambda: "d" * 40)
    # the machine's speed, probed before and after the timed run (here a machine that slowed down during it)
    probes = iter([0.8, 1.1])
    monkeypatch.setattr(bench, "speed_probe", lambda: {"operation": "sample_256x32_tokens", "threads": 1,
                                                       "repeats": 5, "median_s": next(probes)})
    bench.main(["--seeds", "--out", str(out), "--make-args", "JOBS=2"])
    assert calls == [["make", "reproduce-sentiment", "SEEDS=0 1 2", "JOBS=2"]]
    (record,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert record["seconds"] == 1500.0 and record["history"] == []  # the e2e measurement itself is unchanged
    assert record["multi_seed"]["seconds"] == 1200.0 and record["multi_seed"]["total_seconds"] == 2700.0
    assert record["multi_seed"]["speed_probe"] == {"operation": "sample_256x32_tokens", "threads": 1, "repeats": 5,
                                                   "before_s": 0.8, "after_s": 1.1}
    text = next(out.glob("*.md")).read_text()
    assert "**25.0 min** from an empty runs folder" in text and "took 20.0 min more" in text
    assert "**45.0 min** for the three-seed frontier from an empty runs folder (speed probe before / after: " \
           "0.800 / 1.100 s)." in text
    # a later end-to-end measurement keeps this one, its three-seed time included, in its history
    bench_e2e.write_e2e(out, {**record, "seconds": 1800.0, "git_sha": "e" * 40, "multi_seed": None})
    (record,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert record["history"][0]["multi_seed"]["total_seconds"] == 2700.0
    history = next(out.glob("*.md")).read_text().split("Earlier measurements")[1]
    assert "| `cccccccccc` | 2026-12-01T10:00:00+00:00 | 25.0 | not measured | 45.0 |" in history


def test_index_puts_every_record_on_one_page_against_the_target(tmp_path):
    out = tmp_path / "bench"
    out.mkdir()
    run = {"command": "make reproduce-sentiment", "git_sha": "e" * 40, "finished_at": "2026-12-01T10:00:00+00:00",
           "machine": "Machine: 2 cores (test), 24 GiB.", "stage_seconds": {}, "phase_seconds": {}}
    (out / "e2e-cpu-2cores.json").write_text(json.dumps({**run, "seconds": 1548.0, "multi_seed": {
        "command": "make reproduce-sentiment-seeds", "seconds": 2382.0, "git_sha": "f" * 40,
        "finished_at": "2026-12-01T11:00:00+00:00", "total_seconds": 3930.0}}))
    (out / "e2e-cpu-16cores.json").write_text(json.dumps({**run, "seconds": 1900.0}))  # not the target's machine
    step = {"model": {"n_layer": 3, "n_embd": 128}, "vocab": 2048, "n_params": 873600, "results": {
        "dpo_step_32_pairs": {"median_s": 0.5, "repeats": 5, "tokens": 2000}, "ppo_step": {"median_s": 2.0}}}
    (out / "cpu-2threads.json").write_text(json.dumps(step))
    text = bench_e2e.write_index(out).read_text()
    assert "| [e2e-cpu-2cores](bench/e2e-cpu-2cores.md) | **25.8** | met | 65.5 | `eeeeeeeeee` |" in text
    assert "| [e2e-cpu-16cores](bench/e2e-cpu-16cores.md) | **31.7** |  | not measured |" in text
    assert "| dpo_step_32_pairs | 0.5 (4000) |" in text and "| ppo_step | 2.0 |" in text
    assert "GPT-2 3x128, vocab 2048, 0.87M parameters" in text and "No GPU record yet" in text
    (out / "e2e-cpu-2cores.json").write_text(json.dumps({**run, "seconds": 1860.0}))
    assert "| **31.0** | missed | not measured |" in bench_e2e.write_index(out).read_text()
    step_gpu = {**step, "results": {"dpo_step_32_pairs": {"median_s": 0.01, "repeats": 5, "tokens": 2000},
                                    "dpo_step_32_pairs_bf16": {"median_s": 0.005, "tokens": 2000, "mfu": 0.25}}}
    (out / "NVIDIA_H200.json").write_text(json.dumps(step_gpu))
    text = bench_e2e.write_index(out).read_text()
    assert "No GPU record yet" not in text and "| dpo_step_32_pairs | 0.01 (200000) | 0.5 (4000) |" in text
    assert "| dpo_step_32_pairs_bf16 | 0.005 (400000, MFU 25.0 %) |  |" in text


@pytest.mark.heavy  # minutes of training or timing: make test runs it, make test-fast does not
def test_another_shape_gets_its_own_record_and_gpus_their_peak(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    bench.main(["--out", str(out), "--repeats", "1", "--eval-prefixes", "4",
                "--arch", "n_layer=1", "n_embd=32", "n_head=2", "--vocab", "300"])
    (record,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert record["model"]["n_layer"] == 1 and record["model"]["n_embd"] == 32 and record["vocab"] == 300
    page = next(out.glob("*-1x32-v300.md")).read_text()  # beside, not over, the preset-shape record
    assert "--arch n_layer=1 n_embd=32 n_head=2 --vocab 300" in page and "shape set by --arch" in page
    with pytest.raises(SystemExit, match="unknown key"):  # a typo is refused, not silently ignored
        bench.main(["--out", str(out), "--arch", "n_layers=2"])
    assert bench.peak_tflops("NVIDIA H200") == 989.0 and bench.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_tflops("Tesla T4") is None
    monkeypatch.setenv("RVD_PEAK_TFLOPS", "65")
    assert bench.peak_tflops("Tesla T4") == 65.0
