"""The benchmark script runs end to end and writes both of its files (numbers are not asserted: no timed tests)."""
import json

from pipelines import bench


def test_bench_writes_its_record(tmp_path):
    bench.main(["--out", str(tmp_path), "--repeats", "1", "--eval-prefixes", "16"])
    records = list(tmp_path.glob("*.json"))
    assert len(records) == 1 and list(tmp_path.glob("*.md"))
    results = json.loads(records[0].read_text())["results"]
    assert {"dpo_step_32_pairs", "dpo_step_32_pairs_stored_ref_logps", "sft_step_32x128",
            "ppo_step_64_rollouts_2_epochs", "evaluate_checkpoint_16_prefixes"} <= set(results)
    assert all(r["median_s"] > 0 for r in results.values())
    assert results["sft_step_32x128"]["tokens"] == 32 * 128
    assert "tokens / s" in next(tmp_path.glob("*.md")).read_text()


def test_end_to_end_refuses_a_runs_folder_that_is_not_empty(tmp_path, monkeypatch):
    (tmp_path / "runs" / "sentiment").mkdir(parents=True)
    monkeypatch.setenv("RVD_RUNS", str(tmp_path / "runs"))
    import pytest
    with pytest.raises(SystemExit, match="starts from an empty"):
        bench.main(["--e2e", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
