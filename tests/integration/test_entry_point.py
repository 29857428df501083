"""The whole chain at smoke scale through the real entry points: a Hydra multirun per method over its preset grid
(what `make reproduce-sentiment` runs: DPO over beta, PPO and PPO-GT over KL targets, IPO, cDPO, Preferred-FT,
Unlikelihood over alpha, Best-of-N, RLOO and RLOO-GT), extra seeds for one DPO setting, then the analysis."""
import os
import subprocess
import sys

import pandas as pd
import pytest

from baselines.best_of_n import analytic_kl
from tests.helpers import ROOT

OTHER_METHODS = ("ipo", "cdpo", "preferred_ft", "unlikelihood", "bon", "rloo", "rloo_gt")


def run(args, tmp_path, check=True):
    env = {**os.environ, "RVD_RUNS": str(tmp_path / "runs"), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chain")
    from tests.helpers import write_reviews
    data = write_reviews(tmp / "reviews.jsonl")
    common = ["experiment=smoke", "task.data.source=local", f"task.data.local_files={data}",
              f"hydra.sweep.dir={tmp}/multirun"]
    # The first sweep runs its two jobs side by side (launcher=local, joblib): both need the unfinished shared
    # stages, which the stage file locks must let only one of them train.
    sweep = run(["-m", "pipelines.run", "-m", *common, "method.beta=0.1,1.0", "launcher=local"], tmp)
    again = run(["-m", "pipelines.run", *common, "method.beta=1.0", f"hydra.run.dir={tmp}/single"], tmp)
    ppo = run(["-m", "pipelines.run", "-m", *common, "method=ppo", "method.kl.target=1,3"], tmp)
    run(["-m", "pipelines.run", "-m", *common, "method=ppo_gt", "method.kl.target=3"], tmp)
    others = {m: run(["-m", "pipelines.run", "-m", *common, f"method={m}"], tmp) for m in OTHER_METHODS}
    seeds = run(["-m", "pipelines.run", "-m", *common, "method.beta=1.0", "seed=1,2"], tmp)
    out = tmp / "results"
    analysis = run(["-m", "analysis.frontier", "--runs", str(tmp / "runs"), "--preset", "smoke", "--out", str(out),
                    "--command", "pytest smoke"], tmp)
    return {"tmp": tmp, "sweep": sweep, "again": again, "ppo": ppo, "analysis": analysis, "others": others,
            "seeds": seeds,
            "out": out / "sentiment" / "smoke",
            "common": common}


def test_frontier_is_written_and_sane(smoke_run):
    df = pd.read_csv(smoke_run["out"] / "frontier.csv")
    assert list(df.columns[:10]) == ["method", "param", "seed", "shared_seed", "step", "kl", "kl_se", "reward",
                                     "reward_se", "n"]
    assert {"val_kl", "val_reward"} <= set(df.columns)
    sft = df[df.method == "sft"]  # one SFT point per pipeline seed (0, and 1 and 2 from the seeds sweep)
    assert len(sft) == 3 and (sft.kl == 0.0).all() and (sft.step == 0).all() and (sft.val_kl == 0.0).all()
    dpo = df[(df.method == "dpo") & (df.seed == 0)]
    # max_steps=4, eval_every=2: snapshots at steps 2 and 4 for each beta
    assert sorted(dpo.param.unique()) == [0.1, 1.0]
    assert sorted(dpo.step.unique()) == [2, 4] and len(dpo) == 4
    assert (df.n == 12).all() and df.reward.between(0, 1).all() and df[["kl", "reward"]].notna().all().all()
    assert (dpo.kl_se > 0).all()
    assert (smoke_run["out"] / "frontier.png").stat().st_size > 10_000
    summary = (smoke_run["out"] / "summary.md").read_text()
    for needle in ("pytest smoke", "held-out perplexity", "Prefix 1", "DPO β=0.1", "**total**", "git SHA",
                   "PPO KL target=3", "PPO-GT KL target=3",
                   "## Reward at matched KL (mean across seeds, 95 % interval)", "## Verdict", "## Reproducibility",
                   "pairwise accuracy", "## Seconds per training step", "| PPO | 2 |", "| DPO | 4 |"):
        assert needle in summary
    for method, params in (("ppo", [1.0, 3.0]), ("ppo_gt", [3.0])):
        points = df[df.method == method]
        assert sorted(points.param.unique()) == params and sorted(points.step.unique()) == [2, 4]


def test_every_stage_records_its_cost_and_the_pipelines_are_compared(smoke_run):
    import json

    run_root = smoke_run["tmp"] / "runs" / "sentiment" / "smoke"
    done = {p.parent.relative_to(run_root).as_posix(): json.loads(p.read_text())
            for p in (smoke_run["tmp"] / "runs").glob("**/done.json")}
    assert all({"wall_s", "flops_est", "peak_host_mem_mb", "train_tokens"} <= set(d["cost"]) for d in done.values())
    sft, pairs = done["shared/sft"]["cost"], done["shared/pairs"]["cost"]
    assert sft["train_tokens"] > 0 and sft["flops_est"] >= 6 * sft["train_tokens"] * 1000
    assert pairs["generated_tokens"] > 0 and pairs["train_tokens"] == 0 and pairs["peak_host_mem_mb"] > 100
    # DPO reads the reference log-probs the pairs stage stored: no reference forward pass while it trains.
    dpo = done["seed0/dpo_beta0.1"]
    assert dpo["metrics"]["stored_ref_logps"] is True
    assert dpo["cost"]["train_tokens"] > 0 and dpo["cost"]["forward_tokens"] == 0
    ppo = next(d for k, d in done.items() if k.startswith("seed0/ppo_kl") and "/" not in k[6:])["cost"]
    assert min(ppo["train_tokens"], ppo["forward_tokens"], ppo["generated_tokens"]) > 0
    cost = pd.read_csv(smoke_run["out"] / "cost.csv")
    totals = cost[cost.component == "total"].set_index("pipeline")
    assert set(totals.index) == {"DPO", "RLHF (PPO)"} and (totals.flops_est > 0).all()
    assert (smoke_run["out"] / "cost.png").stat().st_size > 10_000
    summary = (smoke_run["out"] / "summary.md").read_text()
    assert "## Cost: the DPO pipeline against the RLHF pipeline" in summary and "Paper's claim" in summary


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
    assert "running" not in rerun and rerun.count("skipped") == 9


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


def test_every_method_reaches_the_frontier(smoke_run):
    df = pd.read_csv(smoke_run["out"] / "frontier.csv")
    assert set(OTHER_METHODS) | {"sft", "dpo", "ppo", "ppo_gt"} == set(df.method)
    for method, params in (("ipo", [1.0]), ("cdpo", [0.1]), ("unlikelihood", [0.1, 1.0]), ("rloo", [0.05]),
                           ("rloo_gt", [0.05])):
        points = df[df.method == method]
        assert sorted(points.param.unique()) == params and sorted(points.step.unique()) == [2, 4], method
        assert (points.kl_kind == "estimated").all()
    pft = df[df.method == "preferred_ft"]
    assert pft.param.isna().all() and sorted(pft.step) == [2, 4]
    bon = df[df.method == "bon"].sort_values("param")
    # smoke grid N = 1, 2, 4: the KL is the analytic one, N = 1 is a plain SFT sample
    assert list(bon.param) == [1, 2, 4] and (bon.kl_kind == "analytic").all()
    assert list(bon.kl) == pytest.approx([analytic_kl(n) for n in (1, 2, 4)])
    assert (bon.kl_se == 0).all() and (bon.n == 12).all()
    # The RLOO runs use r_phi (trained once, upstream of the first run that needs it) and r* respectively
    log = smoke_run["others"]["bon"].stdout + smoke_run["others"]["bon"].stderr
    assert "stage reward_model done, skipped" in log


def test_seeds_are_aggregated_with_an_interval(smoke_run):
    df = pd.read_csv(smoke_run["out"] / "frontier.csv")
    assert sorted(df[(df.method == "dpo") & (df.param == 1.0)].seed.unique()) == [0, 1, 2]
    log = smoke_run["seeds"].stdout + smoke_run["seeds"].stderr
    # full-pipeline seeds: each new seed trains its own SFT (and pairs); data, tokenizer and r* are shared
    assert log.count("stage sft       running") == 2 and log.count("stage pairs     running") == 2
    assert log.count("stage data      done, skipped") == 2 and "stage reward    running" not in log
    assert (smoke_run["tmp"] / "runs" / "sentiment" / "smoke" / "pipeline2" / "sft" / "policy").is_dir()
    summary = (smoke_run["out"] / "summary.md").read_text()
    verdict = summary[summary.index("## Verdict"):]
    # the verdict sentence is computed: DPO has 3 seeds of beta 1, PPO and PPO-GT one seed each (seed 0 only: fewer
    # than 2 paired seeds, so nothing can be compared)
    assert "PPO" in verdict.splitlines()[2]
    table = summary[summary.index("## Reward at matched KL"):].split("\n\n")[2]
    assert "| KL | DPO |" in table
    # the SFT point of every pipeline seed is in the frontier
    df = pd.read_csv(smoke_run["out"] / "frontier.csv")
    assert sorted(df[df.method == "sft"].shared_seed) == [0, 1, 2]
    assert (smoke_run["out"] / "frontier_runs.png").stat().st_size > 10_000


def test_every_run_has_oracle_win_rates_against_sft(smoke_run):
    wr = pd.read_csv(smoke_run["out"] / "winrates.csv")
    assert set(wr.judge) == {"oracle"}
    assert set(wr.method) == set(OTHER_METHODS) | {"dpo", "ppo", "ppo_gt"}
    per_run = wr[wr.method != "bon"].groupby(["method", "param", "seed"], dropna=False).temperature.apply(sorted)
    assert all(t == [0.0, 0.25, 0.5, 0.75, 1.0] for t in per_run)
    assert (wr[wr.method == "bon"].temperature == 1.0).all()  # Best-of-N: its temperature-1 selections only
    # every comparison answered: valid + invalid (oracle ties) = the 8 judged prefixes of the smoke preset
    assert ((wr.n + wr.n_invalid) == 8).all() and wr.win_rate.between(0, 1).all()
    assert (smoke_run["out"] / "winrate_vs_temperature.png").stat().st_size > 10_000
    summary = (smoke_run["out"] / "summary.md").read_text()
    assert "## Win rates against the SFT policy's completion" in summary and "**Judge: oracle**" in summary


def test_judge_dry_run_counts_calls_and_writes_nothing(smoke_run):
    """An OpenAI judge in dry-run mode: no key, no server, no calls; it says how many calls the run would make."""
    proc = run(["-m", "pipelines.run", *smoke_run["common"], "method.beta=1.0", "judge=openai", "judge_dry_run=true",
                f"hydra.run.dir={smoke_run['tmp']}/dry"], smoke_run["tmp"], check=False)
    # not an error: exit 0, so a multirun's dry run counts every job
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    # 8 prefixes x 5 temperatures, none cached
    assert "judge dry run for dpo_beta1.0 seed 0: 40 call(s) to openai (gpt-4o-mini)" in proc.stdout
    run_dir = smoke_run["tmp"] / "runs" / "sentiment" / "smoke" / "seed0" / "dpo_beta1.0"
    assert not (run_dir / "winrate" / "openai" / "winrates.json").exists()
    assert (run_dir / "winrate" / "oracle" / "winrates.json").exists()


def test_an_unreachable_judge_stops_cleanly(smoke_run, monkeypatch):
    """Connection refused on every call: the stage stops after the configured failures with one clear message."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    proc = run(["-m", "pipelines.run", *smoke_run["common"], "method.beta=1.0", "judge=openai",
                "judge.base_url=http://127.0.0.1:9/v1", "judge.max_retries=0", "judge.max_consecutive_failures=2",
                f"hydra.run.dir={smoke_run['tmp']}/refused"], smoke_run["tmp"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "win rates of dpo_beta1.0 seed 0 at T=0.0: judging stopped after" in proc.stderr
    assert "sk-test-not-a-real-key" not in proc.stdout + proc.stderr
