"""The benchmark script runs end to end and writes both of its files (numbers are not asserted: no timed tests)."""
import json

from pipelines import bench


def test_bench_writes_its_record(tmp_path):
    bench.main(["--out", str(tmp_path), "--repeats", "1"])
    records = list(tmp_path.glob("*.json"))
    assert len(records) == 1 and list(tmp_path.glob("*.md"))
    results = json.loads(records[0].read_text())["results"]
    assert {"dpo_step_32_pairs", "sft_step_32x128", "ppo_step_64_rollouts_2_epochs"} <= set(results)
    assert all(r["median_s"] > 0 for r in results.values())
