"""The RLHF baseline at smoke scale through the stage runner: reward model, PPO with it, PPO-GT with r*."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trl.trainer.reward_trainer import DataCollatorForPreference

from baselines import ppo as ppo_stage
from baselines.reward_model import RewardModelScorer, held_out
from pipelines.common import read_jsonl
from pipelines.run import run_pipeline

TRL_KEYS = ("objective/kl", "objective/scores", "objective/entropy", "policy/clipfrac", "policy/approxkl",
            "loss/policy", "loss/value", "val/clipfrac")


def done(path: Path) -> dict:
    return json.loads((Path(path) / "done.json").read_text())


def test_reward_model_scores_as_trained_and_ppo_logs_trl_keys(smoke_cfg):
    cfg = smoke_cfg("method=ppo")
    run_pipeline(cfg)
    rm = done(cfg.paths.reward_model)["metrics"]
    assert rm["n_eval_pairs"] > 0 and 0.0 <= rm["eval_accuracy"] <= 1.0
    # The scorer PPO uses gives the rewards the trainer trained: TRL's collator (right padding with the pad id)
    # and the model's own last-non-pad pooling, on the held-out pairs.
    pairs = [p for p in read_jsonl(Path(cfg.paths.pairs) / "pairs.jsonl")
             if held_out(p["prompt_ids"], cfg.reward_model.eval_fraction)]
    scorer = RewardModelScorer(Path(cfg.paths.reward_model) / "model")
    chosen = scorer([p["prompt_ids"] for p in pairs], [p["chosen_ids"] for p in pairs])
    rejected = scorer([p["prompt_ids"] for p in pairs], [p["rejected_ids"] for p in pairs])
    collate = DataCollatorForPreference(pad_token_id=scorer.pad_id)
    batch = collate([{"chosen_ids": p["prompt_ids"] + p["chosen_ids"],
                      "rejected_ids": p["prompt_ids"] + p["rejected_ids"]} for p in pairs])
    with torch.no_grad():
        trained_path = scorer.model(**batch).logits[:, 0].tolist()
    assert trained_path == pytest.approx(chosen + rejected, abs=1e-5)
    assert len(pairs) == rm["n_eval_pairs"]
    assert sum(c > r for c, r in zip(chosen, rejected)) / len(pairs) == pytest.approx(rm["eval_accuracy"], abs=1e-4)

    run_dir = Path(cfg.paths.method)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in TRL_KEYS:
        assert all(isinstance(r[key], float) for r in rows), key
    # The adaptive controller moved the coefficient; snapshots every 2 steps were evaluated against SFT.
    assert rows[-1]["objective/kl_coef"] != cfg.method.kl.init_coef
    assert sorted(p.name for p in (run_dir / "eval").glob("step*.json")) == ["step000002.json", "step000004.json"]
    point = json.loads((run_dir / "eval" / "step000004.json").read_text())
    assert point["method"] == "ppo" and point["param"] == cfg.method.kl.target
    assert not (run_dir / "last").exists()  # resume state removed once the stage is done


def test_ppo_gt_raises_r_star_above_sft(smoke_cfg):
    cfg = smoke_cfg("method=ppo_gt", "method.total_steps=30", "method.batch_size=16", "method.minibatch_size=8",
                    "method.micro_batch_size=8", "method.learning_rate=3e-3", "method.eval_every=30",
                    "method.kl.target=4", "task.eval.n_prompts=24")
    run_pipeline(cfg)
    rows = read_jsonl(Path(cfg.paths.method) / "metrics.jsonl")
    first = sum(r["objective/scores"] for r in rows[:5]) / 5
    last = sum(r["objective/scores"] for r in rows[-5:]) / 5
    assert last > first + 0.05, (first, last)  # r* of the training rollouts (80 samples each side)
    sft = json.loads((Path(cfg.paths.sft) / "eval" / "step000000.json").read_text())
    final = json.loads((Path(cfg.paths.method) / "eval" / "step000030.json").read_text())
    assert final["reward"] > sft["reward"] and final["kl"] > 0.5


def test_interrupted_ppo_resumes_to_the_same_weights(smoke_cfg, tmp_path, monkeypatch):
    reference = smoke_cfg("method=ppo", f"paths.root={tmp_path / 'uninterrupted'}")
    run_pipeline(reference)
    expected = load_file(str(Path(reference.paths.method) / "policy" / "model.safetensors"))
    expected_rows = read_jsonl(Path(reference.paths.method) / "metrics.jsonl")

    cfg = smoke_cfg("method=ppo")
    original = ppo_stage.log_metrics

    def crash_at_step_3(path, step, metrics, wandb_on):
        original(path, step, metrics, wandb_on)
        if step == 3:  # after the checkpoint of step 2, before the one of step 4
            raise KeyboardInterrupt("simulated interruption")
    monkeypatch.setattr(ppo_stage, "log_metrics", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg)
    run_dir = Path(cfg.paths.method)
    assert json.loads((run_dir / "last" / "state.json").read_text())["step"] == 2
    # The worst moment to be interrupted: old checkpoint removed, the complete new one not yet renamed.
    (run_dir / "last").rename(run_dir / "last.tmp")
    monkeypatch.setattr(ppo_stage, "log_metrics", original)
    run_pipeline(cfg)
    assert done(run_dir)["resumed"] is True and done(run_dir)["metrics"]["resumed_from"] == 2
    resumed = load_file(str(run_dir / "policy" / "model.safetensors"))
    for name, tensor in expected.items():
        assert torch.allclose(tensor, resumed[name], atol=1e-5), name
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # step 3 logged once, not twice
    for a, b in zip(rows, expected_rows):
        assert a["objective/kl"] == pytest.approx(b["objective/kl"], abs=1e-4)
        assert a["objective/kl_coef"] == pytest.approx(b["objective/kl_coef"], rel=1e-6)


def test_reward_model_pools_at_eos_not_before_it(smoke_cfg):
    """With pad == EOS the classifier would pool at the token before EOS; r_phi gets a pad token of its own."""
    cfg = smoke_cfg("method=ppo", "pipeline=[reward_model]")
    run_pipeline(cfg)
    scorer = RewardModelScorer(Path(cfg.paths.reward_model) / "model")
    eos = scorer.model.config.eos_token_id
    assert scorer.pad_id != eos
    prompt, text = [5, 6], [7, 8, 9]
    ended, cut = scorer([prompt, prompt], [text + [eos], text])
    assert ended != pytest.approx(cut, abs=1e-6)  # the EOS is read
