"""The same command, run twice on one machine, gives byte-identical evaluation files.

The smoke chain (data, tokenizer, SFT, r*, the SFT evaluation, pairs, then a DPO run and a PPO run with the learned
reward model, each evaluated) runs into two run folders. Every evaluation file (`**/eval/*.json*`: metrics and
samples; the stage bookkeeping files excepted) must exist in both, under the same relative path, with the same
bytes, and every stage must get the same hash. Numbers may differ on another CPU or thread count: each done.json
records that environment.

The default test runs both chains in this process, one after the other (so the second starts from the state the
first left: a stage that does not seed itself shows up); the slow one runs them through the real entry point in
two fresh processes (Python's hash seed random unless PYTHONHASHSEED is set). On an idle 2-core machine: 5 s for
the default test inside a suite, 22 s for the slow one (mostly each process's imports; 55-110 s on a loaded one).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.infra.bookkeeping import DONE
from tests.helpers import ROOT, compose_cfg, write_reviews

PIPELINE = "[data,tokenizer,sft,reward,pairs,train,evaluate]"  # evaluate pulls in evaluate_sft, PPO reward_model
METHODS = ("dpo", "ppo")
BOOKKEEPING = {DONE, "stage_config.json"}  # they carry times and provenance, not results


def _overrides(root: Path, reviews: Path) -> list[str]:
    return ["experiment=smoke", "task.data.source=local", f"task.data.local_files={reviews}", f"paths.root={root}",
            f"pipeline={PIPELINE}"]


def _eval_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob("**/eval/*.json*"))
            if p.is_file() and p.name not in BOOKKEEPING}


def _markers(root: Path) -> dict[str, dict]:
    return {p.parent.relative_to(root).as_posix(): json.loads(p.read_text()) for p in root.glob(f"**/{DONE}")}


def _assert_identical(first_root: Path, second_root: Path) -> None:
    first, second = _eval_files(first_root), _eval_files(second_root)
    names = sorted(first)
    # The SFT baseline and both methods were evaluated, with metrics and samples.
    for needle in ("/sft/eval/", *METHODS):
        assert any(needle in n and n.endswith(".json") for n in names), (needle, names)
        assert any(needle in n and n.endswith(".samples.jsonl") for n in names), (needle, names)
    assert sorted(second) == names, "the two runs wrote different evaluation files"
    differing = [n for n in names if first[n] != second[n]]
    assert not differing, f"evaluation files differ between two identical runs: {differing}"
    # Same config, same stage hashes; each marker records where its stage ran.
    done = _markers(first_root), _markers(second_root)
    assert set(done[0]) == set(done[1]) and len(done[0]) >= 10, sorted(done[0])
    assert {k: d["hash"] for k, d in done[0].items()} == {k: d["hash"] for k, d in done[1].items()}
    assert all(d["environment"]["torch"]["num_threads"] >= 1 for m in done for d in m.values())


def test_rerun_is_byte_identical(tmp_path):
    from pipelines.run import run_pipeline

    reviews = write_reviews(tmp_path / "reviews.jsonl")  # one file: its path is part of the data stage's hash
    roots = tmp_path / "first", tmp_path / "second"
    for root in roots:
        for method in METHODS:
            run_pipeline(compose_cfg([*_overrides(root, reviews), f"method={method}"]))
    _assert_identical(*roots)


@pytest.mark.slow
def test_entry_point_rerun_in_fresh_processes_is_byte_identical(tmp_path):
    reviews = write_reviews(tmp_path / "reviews.jsonl")
    roots = tmp_path / "first", tmp_path / "second"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("RVD_RUNS", None)
    for i, root in enumerate(roots):
        args = [sys.executable, "-m", "pipelines.run", "-m", *_overrides(root, reviews),
                f"hydra.sweep.dir={tmp_path / f'sweep{i}'}", f"method={','.join(METHODS)}"]
        proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    _assert_identical(*roots)
