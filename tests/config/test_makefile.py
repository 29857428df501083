"""The reproduce targets' plan, read with `make -n` (print, do not run): shared stages once on every core first,
then one multirun per method as parallel jobs with the cores divided among them."""
import subprocess

from tests.conftest import ROOT


def plan(*args: str) -> list[str]:
    out = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "RVD_RUNS": "/nonexistent/runs"})
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_shared_stages_run_first_then_methods_as_parallel_jobs():
    lines = plan("reproduce-sentiment", "METHODS=dpo ppo", "JOBS=2", "NPROC=4")
    shared = next(i for i, line in enumerate(lines) if "pipeline=[data,tokenizer,sft" in line)
    assert "threads=4" in lines[shared] and "--multirun" not in lines[shared]
    fork = next(i for i, line in enumerate(lines) if "-j2 method-dpo method-ppo" in line)
    assert shared < fork
    jobs = [line for line in lines if "--multirun" in line and "> $log" in line]
    assert [("method=dpo" in j, "method=ppo" in j) for j in jobs] == [(True, False), (False, True)]
    assert all("threads=2" in j and "seed=0" in j for j in jobs)  # 4 cores / 2 jobs
    assert any("analysis.frontier" in line for line in lines[fork:])


def test_seeds_and_a_single_job():
    lines = plan("reproduce-sentiment", "METHODS=dpo", "SEEDS=0 1 2", "JOBS=1", "NPROC=2")
    job = next(line for line in lines if "--multirun" in line and "method=dpo" in line)
    assert "seed=0,1,2" in job and "threads=2" in job


def test_paper_preset_defaults_to_one_job():
    lines = plan("reproduce-sentiment-paper", "METHODS=dpo", "NPROC=8")
    assert any("-j2 method-dpo" in line for line in plan("reproduce-sentiment-paper", "METHODS=dpo", "PAPER_JOBS=2"))
    assert any("-j1 method-dpo" in line for line in lines)
    assert any("experiment=sentiment_paper" in line and "threads=8" in line for line in lines)


def test_reward_model_is_trained_inside_the_jobs_that_read_it():
    lines = plan("reproduce-sentiment", "METHODS=ppo dpo bon ppo_gt", "JOBS=2", "NPROC=2")
    shared = next(line for line in lines if "pipeline=[data,tokenizer,sft" in line)
    assert "reward_model" not in shared
    jobs = {m: line for line in lines if "> $log" in line
            for m in ("method=ppo ", "method=dpo", "method=bon", "method=ppo_gt") if m in line}
    assert len(jobs) == 4
    # PPO and Best-of-N read r_phi: their job trains it first (skipped when done), in the job's own log
    for m in ("method=ppo ", "method=bon"):
        assert jobs[m].index("pipeline=[reward_model]") < jobs[m].index(m) < jobs[m].index("> $log")
        assert "{ " in jobs[m] and "&& " in jobs[m]
    assert all("reward_model" not in jobs[m] for m in ("method=dpo", "method=ppo_gt"))
    assert all("threads=1" in line for line in jobs.values())
    # the job order is the METHODS order (make starts them in it)
    fork = next(line for line in lines if "-j2 method-" in line)
    assert fork.split("-j2 ")[1].split() == ["method-ppo", "method-dpo", "method-bon", "method-ppo_gt"]


def test_summarization_and_dialogue_targets_use_their_own_stages_and_methods():
    for target, experiment, methods, analysis in (
            ("reproduce-summarization", "summarization_embedded", "ppo dpo bon preferred_ft sft", "summarization"),
            ("reproduce-dialogue", "dialogue_embedded", "ppo dpo bon sft", "dialogue"),
            ("reproduce-summarization-paper", "summarization_paper", "bon dpo preferred_ft sft base", "summarization"),
            ("reproduce-dialogue-paper", "dialogue_paper", "bon dpo sft base", "dialogue")):
        lines = plan(target, "NPROC=2")
        shared = next(line for line in lines if f"experiment={experiment} 'pipeline=[data,tokenizer,sft" in line)
        assert "evaluate_sft" not in shared and ("reward," in shared) == ("paper" not in target), target
        fork = next(line for line in lines if " method-" in line and "-j" in line)
        assert [m.removeprefix("method-") for m in fork.split()[-len(methods.split()):]] == methods.split(), target
        assert ("-j1 " in fork) == ("paper" in target), target
        assert any(f"analysis.winrate --task {analysis}" in line for line in lines), target


def test_seeds_target_runs_the_resumable_sweep_headline_methods_first_then_the_analysis():
    plan_text = " ".join(plan("reproduce-sentiment-seeds", "JOBS=2", "NPROC=2"))
    lines = plan_text.replace("\\ ", "").split(".venv/bin/python")
    sweeps = [x for x in lines if "pipelines.sweep" in x]
    assert len(sweeps) == 2
    assert "--seeds 0-9 --methods dpo ppo ppo_gt" in sweeps[0] and "--jobs 2 --threads 2" in sweeps[0]
    assert "--seeds 0-2 --methods ipo cdpo rloo rloo_gt bon preferred_ft unlikelihood" in sweeps[1]
    assert "analysis.frontier" in lines[-1] and "--runs ${RVD_RUNS:-runs}" in lines[-1]


def test_one_seed_results_go_under_the_run_folder_not_over_the_committed_ones():
    line = next(x for x in plan("reproduce-sentiment", "METHODS=dpo") if "analysis.frontier" in x)
    assert "--out ${RVD_RUNS:-runs}/results" in line and "--runs ${RVD_RUNS:-runs}" in line
