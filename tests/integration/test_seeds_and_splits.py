"""Full-pipeline seeds, validation/test prefixes, r_phi on DPO's pairs, Best-of-N on everyone's prefixes, and the
resumable seed sweep with its ledger, at smoke scale."""
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipelines import sweep
from pipelines.infra.bookkeeping import plan_hash, read_done
from pipelines.infra.io import read_jsonl
from pipelines.lm.models import load_tokenizer
from pipelines.run import STAGES, run_pipeline
from pipelines.stages.reward_model import accuracy_interval, pair_datasets
from pipelines.tasks.prefixes import eval_prompts


def test_a_seed_retrains_its_pipeline_and_keeps_the_environment(smoke_cfg):
    one = smoke_cfg("seed=1", "pipeline=[data,tokenizer,sft,reward,pairs]")
    zero = smoke_cfg("seed=0", "pipeline=[data,tokenizer,sft,reward,pairs]")
    assert one.shared_seed == 1 and zero.shared_seed == 0
    # fixed by data_seed: the same folders for every seed; SFT and pairs: one folder per pipeline seed
    assert one.paths.data == zero.paths.data and one.paths.reward == zero.paths.reward
    assert one.paths.sft.endswith("pipeline1/sft") and zero.paths.sft.endswith("shared/sft")
    assert one.paths.method.endswith("seed1/dpo_beta0.1")
    h1, h0 = run_pipeline(one), run_pipeline(zero)
    assert h1["data"] == h0["data"] and h1["reward"] == h0["reward"] and h1["tokenizer"] == h0["tokenizer"]
    assert h1["sft"] != h0["sft"] and h1["pairs"] != h0["pairs"]
    # the shared-SFT mode: seed 1 of the method on pipeline seed 0 goes to a folder of its own
    shared_mode = smoke_cfg("seed=1", "shared_seed=0")
    assert shared_mode.paths.sft == zero.paths.sft and shared_mode.paths.method.endswith("seed1_sft0/dpo_beta0.1")


def test_validation_and_test_prefixes_come_from_disjoint_documents(smoke_cfg):
    cfg = smoke_cfg("pipeline=[data,tokenizer,sft,reward,evaluate_sft,pairs]")
    run_pipeline(cfg)
    data = Path(cfg.paths.data)
    val, test = read_jsonl(data / "validation.jsonl"), read_jsonl(data / "test.jsonl")
    train = read_jsonl(data / "train.jsonl")
    assert val and test and not ({r["text"] for r in val} & {r["text"] for r in test})
    assert not ({r["text"] for r in val + test} & {r["text"] for r in train})
    point = json.loads((Path(cfg.paths.sft) / "eval" / "step000000.json").read_text())
    assert point["n"] == cfg.task.eval.n_prompts and point["val_n"] == cfg.task.eval.n_validation_prompts
    assert point["shared_seed"] == 0 and point["val_kl"] == 0.0
    # pairs of validation and test prefixes exist, are not trained on, and r_phi's datasets are exactly them
    pairs_dir = Path(cfg.paths.pairs)
    train_pairs = read_jsonl(pairs_dir / "pairs.jsonl")
    val_pairs, test_pairs = (read_jsonl(pairs_dir / f"pairs_{s}.jsonl") for s in ("validation", "test"))
    tok = load_tokenizer(Path(cfg.paths.sft) / "policy")
    test_prefixes = {tuple(p) for p in eval_prompts(cfg, tok, "test")}
    val_prefixes = {tuple(p) for p in eval_prompts(cfg, tok, "validation")}
    assert {tuple(p["prompt_ids"]) for p in test_pairs} <= test_prefixes
    assert {tuple(p["prompt_ids"]) for p in val_pairs} <= val_prefixes
    train_ds, val_ds, test_ds, _ = pair_datasets(pairs_dir, cfg.reward_model.eval_fraction)
    # r_phi trains on every pair DPO trains on, and only on those
    assert len(train_ds) == len(train_pairs) == len(read_jsonl(pairs_dir / "pairs.jsonl"))
    assert train_ds["chosen_ids"] == [p["prompt_ids"] + p["chosen_ids"] for p in train_pairs]
    assert len(val_ds) == len(val_pairs) and len(test_ds) == len(test_pairs)


def test_accuracy_interval_resamples_prompts():
    # two prompts: one with 3 of 3 pairs right, one with 0 of 3; resampling prompts gives 0, .5 or 1
    low, high = accuracy_interval([True] * 3 + [False] * 3, [[1]] * 3 + [[2]] * 3, n_boot=500)
    assert low == 0.0 and high == 1.0
    low, high = accuracy_interval([True] * 30, [[i] for i in range(30)])
    assert low == high == 1.0


def test_best_of_n_is_scored_on_every_evaluation_prefix(smoke_cfg):
    cfg = smoke_cfg("method=bon")
    run_pipeline(cfg)
    point = json.loads((Path(cfg.paths.method) / "eval" / "step000001.json").read_text())
    assert point["n"] == cfg.task.eval.n_prompts and point["val_n"] == cfg.task.eval.n_validation_prompts
    rows = read_jsonl(Path(cfg.paths.method) / "eval" / "step000001.samples.jsonl")
    sft_rows = read_jsonl(Path(cfg.paths.sft) / "eval" / "step000000.samples.jsonl")
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in sft_rows]


def test_sweep_plans_hashes_records_a_ledger_and_resumes_from_it(smoke_cfg, tmp_path, capsys):
    cfg = smoke_cfg("method=dpo", f"paths.results={tmp_path / 'results'}")
    hashes = run_pipeline(cfg)
    # the hash the sweep computes without running anything is the one the run gave
    assert plan_hash(cfg, STAGES, "evaluate") == hashes["evaluate"]
    assert sweep.job_done(cfg)
    assert sweep.record(cfg, 0, [Path(cfg.paths.method), Path(cfg.paths.sft)]) > 0
    assert sweep.record(cfg, 0, [Path(cfg.paths.method)]) == 0  # nothing new
    ledger = read_jsonl(tmp_path / "results" / "ledger" / "seed0.jsonl")
    paths = {e["path"] for e in ledger}
    assert "seed0/dpo_beta0.1/eval/step000002.json" in paths and "shared/sft/eval/done.json" in paths
    assert not any(p.endswith((".safetensors", ".samples.jsonl")) for p in paths)
    # a fresh clone: the run folder is gone, the ledger is committed
    run_root = Path(cfg.paths.run_root)
    import shutil
    shutil.rmtree(run_root)
    assert sweep.restore(cfg) == len(ledger)
    assert sweep.job_done(cfg)  # the restored job is skipped by the sweep
    eval_done = json.loads((Path(cfg.paths.method) / "eval" / "done.json").read_text())
    assert eval_done["restored"] is True
    # but the stage runner does not trust a restored marker: weights are not there, so a run redoes the stages
    assert read_done(Path(cfg.paths.sft)) is not None and not (Path(cfg.paths.sft) / "policy").exists()
    run_pipeline(cfg)
    assert (Path(cfg.paths.sft) / "policy").is_dir()
    assert "restored" not in json.loads((Path(cfg.paths.method) / "eval" / "done.json").read_text())


def test_sweep_expands_each_methods_own_grid_and_lists_without_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RVD_RUNS", str(tmp_path / "runs"))
    assert sweep.parse_seeds("0-2,5") == [0, 1, 2, 5]
    assert sweep.grid("smoke", "dpo", []) == [[]]  # no preset grid: one job with the method's own setting
    betas = sweep.grid("sentiment_embedded", "dpo", [])
    assert len(betas) == 5 and all(len(g) == 1 and g[0].startswith("method.beta=") for g in betas)
    assert all(g[0].startswith("method.kl.target=") for g in sweep.grid("sentiment_embedded", "ppo", []))
    sweep.main(["--experiment", "smoke", "--seeds", "0-1", "--methods", "dpo", "ppo", "--list",
                f"paths.results={tmp_path / 'results'}"])
    out = capsys.readouterr().out
    assert "4 job(s)" in out and "to run" in out and "seed 1  ppo_kl" in out and "seed 0  dpo_beta" in out
    assert not (tmp_path / "runs" / "sentiment" / "smoke" / "shared").exists()  # nothing trained
    with pytest.raises(SystemExit) as err:
        sweep.main(["--experiment", "smoke", "--methods", "sparkle", "--list"])
    assert err.value.code == 2
    assert "unknown method" in capsys.readouterr().err


def test_stage_hashes_name_the_pipeline_seed():
    from tests.helpers import compose_cfg
    cfg = compose_cfg(["experiment=smoke", "seed=3"])
    for stage in ("sft", "pairs", "reward_model", "evaluate_sft"):
        keys = STAGES[stage].keys(cfg) if callable(STAGES[stage].keys) else STAGES[stage].keys
        assert "shared_seed" in keys, stage
    assert "data_seed" in STAGES["data"].keys and OmegaConf.select(cfg, "shared_seed") == 3
