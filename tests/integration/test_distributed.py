"""A multi-process launch on CPU (torchrun, 2 processes, gloo): the Trainer stages and PPO train data-parallel in
both processes (PPO also sharded, as under an FSDP launch), everything else runs in the main process, and the
bookkeeping is written once. The GPU configs of
conf/accelerate/ parse, and the Makefile puts `accelerate launch` in front of every pipeline command."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, write_reviews

# name -> (distributed type, processes: a node's GPUs, or the one GPU of the offload config)
CONFIGS = {"ddp": ("MULTI_GPU", 8), "fsdp": ("FSDP", 8), "deepspeed_zero3": ("DEEPSPEED", 8),
           "deepspeed_zero3_offload": ("DEEPSPEED", 1)}


def torchrun(args, tmp: Path, timeout=600, **env_vars):
    env = {**os.environ, "RVD_RUNS": str(tmp / "runs"), "WANDB_MODE": "disabled", "ACCELERATE_USE_CPU": "true",
           "OMP_NUM_THREADS": "1", **env_vars}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pipelines.run", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    data = write_reviews(tmp / "reviews.jsonl")
    common = ["experiment=smoke", "task.data.source=local", f"task.data.local_files={data}", "threads=1",
              f"hydra.run.dir={tmp}/hydra"]
    dpo = torchrun([*common, "method.beta=0.1"], tmp)
    ppo = torchrun([*common, "method=ppo", "method.kl.target=3"], tmp)
    # PPO as an FSDP launch runs it (its upstream stages are done above; only PPO's loop reads the flag here).
    sharded = torchrun([*common, "method=ppo", "method.kl.target=5"], tmp, ACCELERATE_USE_FSDP="true")
    again = torchrun([*common, "method.beta=0.1"], tmp)
    root = tmp / "runs" / "sentiment" / "smoke"
    done = {p.parent.relative_to(root).as_posix(): json.loads(p.read_text()) for p in root.glob("**/done.json")}
    return {"dpo": dpo, "ppo": ppo, "sharded": sharded, "again": again, "done": done, "root": root}


def test_trainer_stages_train_in_both_processes(two_process_runs):
    done = two_process_runs["done"]
    assert done["shared/sft"]["metrics"]["world_size"] == 2
    # The configured batch (8 blocks, conf/model/smoke.yaml) is the global batch: 4 per process, so one epoch
    # takes as many steps as in a single process (8 per process would halve them).
    sft = done["shared/sft"]["metrics"]
    per_process_blocks = math.ceil(sft["train_blocks"] / 2)
    assert sft["train_blocks"] > 16 and sft["steps"] == math.ceil(per_process_blocks / 4)
    assert done["shared/sft"]["cost"]["processes"] == 2
    assert done["seed0/dpo_beta0.1"]["metrics"]["world_size"] == 2
    assert done["shared/reward_model"]["metrics"]["world_size"] == 2
    # The saved models are safetensors with no pickled trainer arguments beside them.
    root = two_process_runs["root"]
    for folder in ("seed0/dpo_beta0.1/policy", "shared/sft/policy", "shared/reward_model/model"):
        assert (root / folder / "model.safetensors").exists() and not (root / folder / "training_args.bin").exists()


def test_ppo_trains_data_parallel_in_both_processes(two_process_runs):
    done, root = two_process_runs["done"], two_process_runs["root"]
    ppo = done["seed0/ppo_kl3"]
    # Both processes ran the loop on half of each batch; the weights stayed identical (checked at the end of the
    # stage, which raises otherwise), and the main process alone wrote the policy, snapshots and metrics.
    assert ppo["cost"]["processes"] == 2 and ppo["metrics"]["world_size"] == 2
    assert (root / "seed0/ppo_kl3/policy/model.safetensors").exists()
    rows = [json.loads(x) for x in (root / "seed0/ppo_kl3/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))  # one row per step: written once
    log = two_process_runs["ppo"].stdout + two_process_runs["ppo"].stderr
    assert log.count("ppo: score normalisation from") == 2  # each process fits it on its share, same numbers
    norms = {line.split("ppo: score normalisation from", 1)[1].strip() for line in log.splitlines()
             if "ppo: score normalisation from" in line}
    assert len(norms) == 1, norms


def test_ppo_trains_sharded_under_an_fsdp_launch(two_process_runs):
    done, root = two_process_runs["done"], two_process_runs["root"]
    ppo = done["seed0/ppo_kl5"]
    assert ppo["metrics"]["sharded"] and ppo["metrics"]["world_size"] == 2 and ppo["cost"]["processes"] == 2
    assert not done["seed0/ppo_kl3"]["metrics"]["sharded"]
    # The gathered policy and snapshots were written once and evaluated like any other run's.
    assert (root / "seed0/ppo_kl5/policy/model.safetensors").exists()
    rows = [json.loads(x) for x in (root / "seed0/ppo_kl5/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    assert len(list((root / "seed0/ppo_kl5/snapshots").glob("step*/model.safetensors"))) >= 1
    assert done["seed0/ppo_kl5/eval"]["metrics"]


def test_other_stages_run_in_the_main_process_only(two_process_runs):
    done = two_process_runs["done"]
    for stage in ("shared/pairs", "seed0/dpo_beta0.1/eval", "seed0/ppo_kl3/eval"):
        assert done[stage]["cost"]["processes"] == 1, stage
    log = two_process_runs["dpo"].stdout + two_process_runs["dpo"].stderr
    # The main process prepares and announces every stage once; the other follows its decisions.
    for stage in ("data", "sft", "pairs", "train", "evaluate", "winrate"):
        assert log.count(f"stage {stage:<9} running") == 1, stage


def test_a_rerun_skips_every_stage_in_both_processes(two_process_runs):
    log = two_process_runs["again"].stdout + two_process_runs["again"].stderr
    assert "running" not in log and log.count("done, skipped") == 2 * 9


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    kind, processes = CONFIGS[name]
    cfg = load_config_from_file(str(ROOT / "conf" / "accelerate" / f"{name}.yaml"))
    assert str(cfg.distributed_type).endswith(kind) and cfg.num_processes == processes and cfg.num_machines == 1
    if name == "deepspeed_zero3_offload":
        assert cfg.deepspeed_config["offload_optimizer_device"] == "cpu"
    if kind == "DEEPSPEED":  # DeepSpeed takes each method's own clip from the Trainer (10 for the paper DPO presets)
        assert "gradient_clipping" not in cfg.deepspeed_config
