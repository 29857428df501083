"""The sweep entry every reproduce target runs (pipelines/sweep.py), with its runner faked: what it sweeps comes from
the experiment's yaml (sweep:), the seed's pipeline stages from cfg.pipeline, who waits for r_phi from the METHODS
rows; --no-ledger leaves the ledger alone; --accelerate checks its file before anything and prefixes every command;
the progress lines and the ETA. Nothing is trained."""
import sys
import threading
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipelines import sweep
from pipelines.infra.io import UserError
from pipelines.run import METHODS
from tests.helpers import CONF, compose_cfg

SWEPT = ("sentiment_embedded", "sentiment_paper", "summarization_embedded", "dialogue_embedded",
         "summarization_paper", "dialogue_paper")


def own_sweep_block(experiment: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{experiment}.yaml").sweep)


@pytest.fixture
def planned(monkeypatch):
    """Calls of run_sweep: (methods, seeds, jobs), nothing composed per job."""
    calls = []
    monkeypatch.setattr(sweep, "run_sweep", lambda args, exp, methods, seeds, jobs, prefix, **group:
                        calls.append((methods, seeds, jobs)))
    return calls


def test_default_methods_and_jobs_come_from_the_experiments_yaml(planned):
    for experiment in SWEPT:
        block = own_sweep_block(experiment)
        sweep.main(["--experiment", experiment])
        assert planned.pop() == (block["methods"], [0], block.get("jobs", sweep.DEFAULT_JOBS)), experiment
    assert own_sweep_block("summarization_paper")["jobs"] == 1 and "ppo" not in own_sweep_block("dialogue_paper")[
        "methods"]
    sweep.main(["--experiment", "summarization_paper", "--methods", "dpo ppo", "--seeds", "0 2", "--jobs", "3"])
    assert planned.pop() == (["dpo", "ppo"], [0, 2], 3)


def test_groups_run_one_after_the_other_and_change_from_the_command_line(planned):
    groups = own_sweep_block("sentiment_embedded")["groups"]
    sweep.main(["--experiment", "sentiment_embedded", "--groups"])
    assert planned == [(groups["headline"]["methods"], list(range(10)), 2), (groups["tuning"]["methods"], [0], 2),
                       (groups["other"]["methods"], [0, 1, 2], 2)]
    planned.clear()
    sweep.main(["--experiment", "sentiment_embedded", "--groups", "--group", "HEADLINE_SEEDS=0-4", "--group",
                "other.methods=", "--group", "tuning.methods="])
    assert planned == [(["dpo", "ppo", "ppo_gt"], [0, 1, 2, 3, 4], 2)]


@pytest.mark.parametrize("argv,message", [
    (["--experiment", "smoke"], "names no sweep.methods"),
    (["--experiment", "sentiment_embedded", "--methods", "sparkle"], "unknown method"),
    (["--experiment", "sentiment_embedded", "--groups", "--seeds", "0"], "no --methods or --seeds"),
    (["--experiment", "sentiment_embedded", "--groups", "--group", "nosuch.seeds=1"], "NAME one of"),
    (["--experiment", "sentiment_embedded", "--seeds", "a-b"], "cannot read"),
])
def test_bad_arguments_stop_with_one_message(planned, capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        sweep.main(argv)
    assert err.value.code == 2 and message in capsys.readouterr().err and not planned


def test_sweep_methods_exist_and_the_pipeline_stages_are_those_before_the_methods():
    # the stage lists the Makefile used to keep (SHARED_PIPELINE, TEXT_SHARED_PIPELINE, PAPER_TEXT_SHARED_PIPELINE)
    shared, text, paper_text = (["data", "tokenizer", "sft", "reward", "evaluate_sft", "pairs"],
                                ["data", "tokenizer", "sft", "reward", "pairs"], ["data", "tokenizer", "sft", "pairs"])
    expected = {"sentiment_embedded": shared, "sentiment_paper": shared, "summarization_embedded": text,
                "dialogue_embedded": text, "summarization_paper": paper_text, "dialogue_paper": paper_text}
    for experiment in SWEPT:
        assert sweep.pipeline_stages(compose_cfg([f"experiment={experiment}"])) == expected[experiment], experiment
        assert set(own_sweep_block(experiment)["methods"]) <= set(METHODS), experiment
    # who trains r_phi first is read off the METHODS rows
    assert {m for m in METHODS if sweep.reads_rphi(m)} == {"ppo", "rloo", "bon"}


@pytest.fixture
def fake_runs(monkeypatch, tmp_path):
    """The runner faked: each command is recorded (label, command) and takes 10 ms; the ledger calls counted."""
    monkeypatch.setenv("RVD_RUNS", str(tmp_path / "runs"))
    ran, ledger = [], {"restore": 0, "record": 0}

    def fake_run(cmd, log, label, echo=False):
        ran.append((label, cmd))
        time.sleep(0.01)
        return 90.0
    monkeypatch.setattr(sweep, "_run", fake_run)
    for name in ledger:
        real = getattr(sweep, name)

        def counted(*a, _name=name, _real=real):
            ledger[_name] += 1
            return _real(*a)
        monkeypatch.setattr(sweep, name, counted)
    return ran, ledger


def smoke(tmp_path, *extra):
    return ["--experiment", "smoke", "--methods", "dpo", "ppo", "--jobs", "2", "--threads", "4", *extra, "--",
            f"paths.results={tmp_path / 'results'}"]


def test_a_sweep_runs_the_pipeline_then_r_phi_beside_the_jobs_and_records_the_ledger(fake_runs, tmp_path, capsys):
    ran, ledger = fake_runs
    sweep.main(smoke(tmp_path))
    labels = [label for label, _ in ran]
    assert labels[0] == "seed 0 pipeline" and set(labels[1:]) == {"seed 0 r_phi", "seed 0 dpo_beta0.1",
                                                                  "seed 0 ppo_kl2"}
    assert labels.index("seed 0 r_phi") < labels.index("seed 0 ppo_kl2")
    cmds = dict(ran)
    assert cmds["seed 0 pipeline"][:3] == [sys.executable, "-m", "pipelines.run"]
    assert "pipeline=[data,tokenizer,sft,reward,evaluate_sft,pairs]" in cmds["seed 0 pipeline"]
    assert cmds["seed 0 pipeline"][-1] == "threads=4" and cmds["seed 0 dpo_beta0.1"][-1] == "threads=2"
    assert "pipeline=[reward_model]" in cmds["seed 0 r_phi"] and "method=ppo" in cmds["seed 0 ppo_kl2"]
    assert ledger == {"restore": 1, "record": 4}  # pipeline, r_phi, two jobs
    out = capsys.readouterr().out
    assert "2 job(s) over seeds 0, 0 done, 2 to run" in out
    assert "1 of 2 jobs done, ETA ~1.5 min" in out and "2 of 2 jobs done" in out
    assert "smoke: 2 job(s) over seeds 0 done in" in out


def test_no_ledger_neither_restores_nor_records(fake_runs, tmp_path):
    ran, ledger = fake_runs
    sweep.main(smoke(tmp_path, "--no-ledger"))
    assert len(ran) == 4 and ledger == {"restore": 0, "record": 0}
    assert not (tmp_path / "results").exists()


def test_accelerate_prefixes_every_command(fake_runs, tmp_path):
    ran, _ = fake_runs
    sweep.main(smoke(tmp_path, "--accelerate", "ddp", "--no-ledger"))
    prefix = ["launch", "--config_file", str(CONF / "accelerate" / "ddp.yaml"), "-m", "pipelines.run"]
    assert len(ran) == 4 and all(Path(cmd[0]).name == "accelerate" and cmd[1:6] == prefix for _, cmd in ran)
    assert sweep.launcher(None) == [sys.executable, "-m", "pipelines.run"]


def test_an_unknown_accelerate_config_fails_in_one_line_before_anything(monkeypatch, capsys):
    def nothing(*a, **k):
        raise AssertionError("composed or ran something")
    monkeypatch.setattr(sweep, "compose_cfg", nothing)
    monkeypatch.setattr(sweep, "_run", nothing)
    with pytest.raises(SystemExit) as err:
        sweep.main(["--experiment", "sentiment_embedded", "--accelerate", "nosuch"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert err.value.code == 2 and len(lines) == 1
    assert "no conf/accelerate/nosuch.yaml" in lines[0] and "ddp" in lines[0]


def test_progress_and_eta_formatting():
    assert [sweep.minutes(s) for s in (45, 600, 1500, 3900)] == ["0.8 min", "10 min", "25 min", "1 h 05 min"]
    assert sweep.progress(0, 20, 0.0, 2) == "0 of 20 jobs done"
    assert sweep.progress(4, 20, 180.0, 2) == "4 of 20 jobs done, ETA ~24 min"  # 16 left x 3 min / 2 jobs
    assert sweep.progress(19, 20, 180.0, 2) == "19 of 20 jobs done, ETA ~3.0 min"  # one left: one job at a time
    assert sweep.progress(20, 20, 180.0, 2) == "20 of 20 jobs done"
    prog = sweep.Progress(3, 1)
    assert prog.add(60) == "1 of 3 jobs done, ETA ~2.0 min" and prog.add(120) == "2 of 3 jobs done, ETA ~1.5 min"
    assert sweep.seeds_text([0]) == "0" and sweep.seeds_text([0, 1, 2]) == "0-2" and sweep.seeds_text([0, 2]) == "0,2"
    assert sweep.split_names(["dpo ppo", "bon,sft"]) == ["dpo", "ppo", "bon", "sft"]


def test_tasks_wait_only_for_what_they_read_and_a_failure_stops_new_starts(monkeypatch, tmp_path):
    events, lock = [], threading.Lock()

    def fake_run(cmd, log, label, echo=False):
        with lock:
            events.append(f"start {label}")
        time.sleep(0.3 if label == "r_phi" else 0.05)
        if label == "bad":
            raise UserError("[bad] FAILED")
        with lock:
            events.append(f"end {label}")
        return 1.0
    monkeypatch.setattr(sweep, "_run", fake_run)
    task = lambda label, after=(): sweep.Task(label, [], tmp_path / "log", after=after)  # noqa: E731
    sweep.run_tasks([task("r_phi"), task("ppo", ("r_phi",)), task("dpo"), task("ipo")], 2, sweep.Progress(3, 2))
    assert events.index("start dpo") < events.index("end r_phi") < events.index("start ppo")
    events.clear()
    with pytest.raises(UserError, match="bad"):
        sweep.run_tasks([task("bad"), task("r_phi"), task("later", ("bad",)), task("last")], 2, sweep.Progress(3, 2))
    assert "start later" not in events and "start last" not in events and "end r_phi" in events


def test_a_job_logs_its_output_and_echoes_it_when_alone(tmp_path, capsys):
    log = tmp_path / "logs" / "one.log"
    took = sweep._run([sys.executable, "-c", "print('hello from the job')"], log, "one", echo=True)
    assert took >= 0 and "hello from the job" in log.read_text() and "hello from the job" in capsys.readouterr().out
    with pytest.raises(UserError, match=r"\[two\] FAILED after .* min; the end of .*\n.*boom"):
        sweep._run([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], tmp_path / "two.log", "two")
