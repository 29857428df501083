"""The Makefile is thin: each reproduce target is one `pipelines.sweep` command (what the experiment sweeps is in its
conf/experiment yaml) and then its analysis. Read with `make -n` (print, do not run); the printed sweep command is
parsed by the sweep's own argument parser, and one is run with --list (compose, train nothing)."""
import re
import shlex
import subprocess

from pipelines import sweep
from tests.helpers import ROOT

ONE_SEED_TARGETS = {  # target -> (experiment, the analysis command)
    "reproduce-sentiment": ("sentiment_embedded", "analysis.frontier --task sentiment --preset embedded"),
    "reproduce-sentiment-paper": ("sentiment_paper", "analysis.frontier --task sentiment --preset paper"),
    "reproduce-summarization": ("summarization_embedded", "analysis.winrate --task summarization --preset embedded"),
    "reproduce-dialogue": ("dialogue_embedded", "analysis.winrate --task dialogue --preset embedded"),
    "reproduce-summarization-paper": ("summarization_paper", "analysis.winrate --task summarization --preset paper"),
    "reproduce-dialogue-paper": ("dialogue_paper", "analysis.winrate --task dialogue --preset paper"),
}


def plan(*args: str, env: dict | None = None) -> list[str]:
    """The commands `make -n` prints, without the venv's own (pip) lines."""
    out = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=env or {"PATH": "/usr/bin:/bin", "RVD_RUNS": "/nonexistent/runs"})
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if "pip install" not in line and ".installed" not in line
            and "-m venv" not in line]


def sweep_args(lines: list[str]):
    """The one sweep command of a plan, parsed by pipelines.sweep's own parser."""
    [line] = [x for x in lines if "-m pipelines.sweep" in x]
    argv = shlex.split(line)
    return sweep.parse_args(argv[argv.index("pipelines.sweep") + 1:])


def test_every_one_seed_target_is_one_sweep_without_the_ledger_then_its_analysis():
    for target, (experiment, analysis) in ONE_SEED_TARGETS.items():
        lines = plan(target)
        assert len(lines) == 2 and "-m pipelines.sweep" in lines[0] and analysis in lines[1], target
        args = sweep_args(lines)
        assert args.experiment == experiment and args.no_ledger and not args.groups, target
        # nothing chosen here: methods, seeds and jobs come from the experiment's yaml (sweep:)
        assert (args.methods, args.seeds, args.jobs, args.accelerate, args.overrides) == (None, None, None, None, [])
        assert f'--command "make {target}"' in lines[1], target


def test_the_variables_pass_through_to_the_sweep():
    lines = plan("reproduce-sentiment", "SEEDS=0 1 2", "METHODS=dpo ppo", "JOBS=3", "ACCELERATE=ddp",
                 "ARGS=wandb.mode=online judge=oracle")
    args = sweep_args(lines)
    assert sweep.parse_seeds(args.seeds) == [0, 1, 2] and sweep.split_names(args.methods) == ["dpo", "ppo"]
    assert args.jobs == 3 and args.accelerate == "ddp" and args.no_ledger
    assert args.overrides == ["wandb.mode=online", "judge=oracle"]
    assert 'SEEDS=\\"0 1 2\\" METHODS=\\"dpo ppo\\"' in lines[1]  # the command the summary records


def test_one_seed_results_go_under_the_run_folder_not_over_the_committed_ones():
    line = next(x for x in plan("reproduce-sentiment", "METHODS=dpo") if "analysis.frontier" in x)
    assert "--out ${RVD_RUNS:-runs}/results" in line and "--runs ${RVD_RUNS:-runs}" in line


def test_seeds_target_runs_the_experiments_groups_with_the_ledger_and_only_the_settings_given():
    lines = plan("reproduce-sentiment-seeds", "JOBS=2")
    args = sweep_args(lines)
    assert args.groups and not args.no_ledger and args.group == [] and args.jobs == 2
    assert "analysis.frontier" in lines[-1] and "--runs ${RVD_RUNS:-runs}" in lines[-1] and "--out" not in lines[-1]
    args = sweep_args(plan("reproduce-sentiment-seeds", "HEADLINE_SEEDS=0-4", "OTHER_METHODS="))
    assert args.group == ["HEADLINE_SEEDS=0-4", "OTHER_METHODS="]
    spec = {"groups": {"headline": {"methods": ["dpo"], "seeds": "0-9"}, "other": {"methods": ["ipo"], "seeds": "0"}}}
    plain = {"trials": None, "folder": None}
    assert sweep.groups_of(spec, args.group) == {"headline": {"methods": ["dpo"], "seeds": "0-4", **plain},
                                                 "other": {"methods": [], "seeds": "0", **plain}}
    # analyze-sentiment restores the same groups' ledger (a --list), then rebuilds the committed frontier
    lines = plan("analyze-sentiment")
    assert sweep_args(lines).list and sweep_args(lines).groups and "analysis.frontier" in lines[-1]


def test_the_printed_sweep_lists_its_jobs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RVD_RUNS", str(tmp_path / "runs"))
    [line] = [x for x in plan("reproduce-sentiment-seeds", "HEADLINE_SEEDS=0", "OTHER_METHODS=")
              if "pipelines.sweep" in x]
    argv = shlex.split(line)
    argv = argv[argv.index("pipelines.sweep") + 1:]
    # listed, against an empty ledger of its own (never the committed one)
    sweep.main([*argv[:argv.index("--")], "--list", "--", f"paths.results={tmp_path / 'results'}"])
    out = capsys.readouterr().out
    assert "group headline: dpo ppo ppo_gt at seeds 0" in out and "group other" not in out
    assert "9 job(s) over seeds 0, 0 done, 9 to run" in out  # 5 betas, 2 KL targets each for PPO and PPO-GT
    assert not (tmp_path / "runs" / "sentiment").exists()  # nothing trained, nothing restored


def test_clean_runs_deletes_the_run_folder_rvd_runs_names(tmp_path):
    assert plan("clean-runs") == ['rm -rf -- "${RVD_RUNS:-runs}"']
    elsewhere, default = tmp_path / "scratch" / "runs", tmp_path / "runs"
    for folder in (elsewhere, default):
        (folder / "x").mkdir(parents=True)
    # run from tmp_path (its own runs/ would be the fallback), never from the repository
    out = subprocess.run(["make", "-f", str(ROOT / "Makefile"), "--no-print-directory", "clean-runs"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "RVD_RUNS": str(elsewhere)})
    assert out.returncode == 0, out.stderr
    assert not elsewhere.exists() and (default / "x").is_dir()


def test_makefile_is_thin_and_help_lists_every_target():
    text = (ROOT / "Makefile").read_text()
    # at most 80 lines besides the comments (the #: lines are the variables `make help` prints)
    assert len([line for line in text.splitlines() if not line.startswith("#")]) <= 80
    # no method lists, job macro, r_phi list or shared-stage lists: those are the experiments' and the sweep's
    assert not re.search(r"^\w*(METHODS|PIPELINE|SEEDS)\s*[:?]?=", text, re.M)
    assert "define " not in text and "RPHI" not in text and "method-%" not in text
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={"PATH": "/usr/bin:/bin"})
    targets = [line.split()[1] for line in out.stdout.split("\n\nVariables")[0].splitlines()]
    for target in [*ONE_SEED_TARGETS, "reproduce-sentiment-seeds", "analyze-sentiment", "test", "test-fast",
                   "test-all", "bench", "bench-e2e", "bench-e2e-seeds", "clean-runs", "venv", "sweep"]:
        assert target in targets, target
    phony = re.search(r"^\.PHONY:(.*?)(?<!\\)\n", text, re.M | re.S).group(1).split()
    assert set(targets) <= set(phony)
    assert plan("test-fast")[-1].endswith("-m pytest -q tests/unit -m 'not slow and not gpu and not network and not "
                                          "heavy'")
