"""The whole chain at smoke scale through the real entry points: Hydra multiruns of DPO over beta and of PPO and
PPO-GT over KL targets (what `make reproduce-sentiment` runs), then the analysis."""
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import ROOT


def run(args, tmp_path, check=True):
    env = {**os.environ, "RVD_RUNS": str(tmp_path / "runs"), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chain")
    from tests.conftest import write_reviews
    data = write_reviews(tmp / "reviews.jsonl")
    common = ["experiment=smoke", "task.data.source=local", f"task.data.local_files={data}",
              f"hydra.sweep.dir={tmp}/multirun"]
    sweep = run(["-m", "pipelines.run", "-m", *common, "method.beta=0.1,1.0"], tmp)
    again = run(["-m", "pipelines.run", *common, "method.beta=1.0", f"hydra.run.dir={tmp}/single"], tmp)
    ppo = run(["-m", "pipelines.run", "-m", *common, "method=ppo", "method.kl.target=1,3"], tmp)
    run(["-m", "pipelines.run", "-m", *common, "method=ppo_gt", "method.kl.target=3"], tmp)
    out = tmp / "results"
    analysis = run(["-m", "analysis.frontier", "--runs", str(tmp / "runs"), "--preset", "smoke", "--out", str(out),
                    "--command", "pytest smoke"], tmp)
    return {"tmp": tmp, "sweep": sweep, "again": again, "ppo": ppo, "analysis": analysis,
            "out": out / "sentiment" / "smoke",
            "common": common}


def test_frontier_is_written_and_sane(smoke_run):
    df = pd.read_csv(smoke_run["out"] / "frontier.csv")
    assert list(df.columns[:9]) == ["method", "param", "seed", "step", "kl", "kl_se", "reward", "reward_se", "n"]
    sft = df[df.method == "sft"]
    assert len(sft) == 1 and sft.kl.iloc[0] == 0.0 and sft.step.iloc[0] == 0
    dpo = df[df.method == "dpo"]
    # max_steps=4, eval_every=2: snapshots at steps 2 and 4 for each beta
    assert sorted(dpo.param.unique()) == [0.1, 1.0]
    assert sorted(dpo.step.unique()) == [2, 4] and len(dpo) == 4
    assert (df.n == 12).all() and df.reward.between(0, 1).all() and df[["kl", "reward"]].notna().all().all()
    assert (dpo.kl_se > 0).all()
    assert (smoke_run["out"] / "frontier.png").stat().st_size > 10_000
    summary = (smoke_run["out"] / "summary.md").read_text()
    for needle in ("pytest smoke", "held-out perplexity", "Prefix 1", "dpo β=0.1", "**total**", "git SHA",
                   "ppo KL target=3", "ppo_gt KL target=3", "## Methods at matched KL", "| KL ≤ | dpo | ppo | ppo_gt |",
                   "held-out pairwise accuracy", "## Seconds per training step", "| ppo | 2 |", "| dpo | 2 |"):
        assert needle in summary
    for method, params in (("ppo", [1.0, 3.0]), ("ppo_gt", [3.0])):
        points = df[df.method == method]
        assert sorted(points.param.unique()) == params and sorted(points.step.unique()) == [2, 4]


def test_ppo_sweep_reuses_the_shared_stages_and_trains_one_reward_model(smoke_run):
    log = smoke_run["ppo"].stdout + smoke_run["ppo"].stderr
    assert log.count("stage reward_model running") == 1
    assert "stage sft       done, skipped" in log and "stage sft       running" not in log


def test_sweep_trains_shared_stages_once(smoke_run):
    log = smoke_run["sweep"].stdout + smoke_run["sweep"].stderr
    for stage in ("data", "tokenizer", "sft", "reward", "pairs"):
        assert log.count(f"stage {stage:<9} running") == 1, stage
        assert log.count(f"stage {stage:<9} done, skipped") == 1, stage
    rerun = smoke_run["again"].stdout + smoke_run["again"].stderr
    assert "running" not in rerun and rerun.count("skipped") == 8


@pytest.mark.parametrize("override,message,code", [
    ("method.beta=-0.5", "method.beta must be > 0", 2),
    ("method=sparkle", "Could not find 'method/sparkle'", 1),
    ("task=poetry", "Could not find 'task/poetry'", 1),
])
def test_cli_reports_bad_config_clearly(smoke_run, override, message, code):
    proc = run(["-m", "pipelines.run", *smoke_run["common"], override], smoke_run["tmp"], check=False)
    assert proc.returncode == code
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
