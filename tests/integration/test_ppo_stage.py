"""The RLHF baseline at smoke scale through the stage runner: reward model, PPO with it, PPO-GT with r*; and the
PPO stage's parts on tiny models: learning-rate schedule, value model from r_phi, snapshot schedule."""
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel
from trl.trainer.reward_trainer import DataCollatorForPreference

from baselines import ppo as ppo_stage
from baselines.ppo import PPO, ValueModel
from pipelines.infra.io import UserError, read_jsonl
from pipelines.lm.scorers import RewardModelScorer
from pipelines.run import run_pipeline
from pipelines.stages.reward_model import held_out

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
    # and the model's own last-non-pad pooling, on the test pairs the stage reports on (sampled by the pairs stage
    # where it writes them, else the held-out share of pairs.jsonl).
    pairs_dir = Path(cfg.paths.pairs)
    pairs = read_jsonl(pairs_dir / "pairs_test.jsonl") if (pairs_dir / "pairs_test.jsonl").exists() else \
        [p for p in read_jsonl(pairs_dir / "pairs.jsonl") if held_out(p["prompt_ids"], cfg.reward_model.eval_fraction)]
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
    # The default schedule anneals linearly over the 4 steps: lr * (1 - s / 4) at steps s = 0..3.
    assert cfg.method.lr_schedule == "linear"
    assert [r["lr"] for r in rows] == pytest.approx([cfg.method.learning_rate * f for f in (1, 0.75, 0.5, 0.25)])
    assert sorted(p.name for p in (run_dir / "eval").glob("step*.json")) == ["step000002.json", "step000004.json"]
    point = json.loads((run_dir / "eval" / "step000004.json").read_text())
    assert point["method"] == "ppo" and point["param"] == cfg.method.kl.target
    assert not (run_dir / "last").exists()  # resume state removed once the stage is done


def test_ppo_gt_raises_r_star_above_sft(smoke_cfg):
    # An explicit snapshot schedule: steps past total_steps are ignored, the last step is always saved.
    cfg = smoke_cfg("method=ppo_gt", "method.total_steps=30", "method.batch_size=16", "method.minibatch_size=8",
                    "method.micro_batch_size=8", "method.learning_rate=3e-3", "method.snapshot_steps=[3,45]",
                    "method.kl.target=4")
    run_pipeline(cfg)
    evaluated = sorted(p.name for p in (Path(cfg.paths.method) / "eval").glob("step*.json"))
    assert evaluated == ["step000003.json", "step000030.json"]
    rows = read_jsonl(Path(cfg.paths.method) / "metrics.jsonl")
    first = sum(r["objective/scores"] for r in rows[:5]) / 5
    last = sum(r["objective/scores"] for r in rows[-5:]) / 5
    assert last > first + 0.05, (first, last)  # r* of the training rollouts (80 samples each side)
    sft = json.loads((Path(cfg.paths.sft) / "eval" / "step000000.json").read_text())
    final = json.loads((Path(cfg.paths.method) / "eval" / "step000030.json").read_text())
    assert final["reward"] > sft["reward"] and final["kl"] > 0.5


@pytest.mark.parametrize("value_init", ["sft", "reward_model"])
def test_interrupted_ppo_resumes_to_the_same_weights(smoke_cfg, tmp_path, monkeypatch, value_init):
    # Resumed: the same weights, KL coefficients and (annealed) learning rates as an uninterrupted run, with the
    # value model from SFT or from r_phi (whose trunk, with its extra pad-token row, is saved and reloaded).
    reference = smoke_cfg("method=ppo", f"method.value_init={value_init}", f"paths.root={tmp_path / 'uninterrupted'}")
    run_pipeline(reference)
    expected = load_file(str(Path(reference.paths.method) / "policy" / "model.safetensors"))
    expected_rows = read_jsonl(Path(reference.paths.method) / "metrics.jsonl")

    cfg = smoke_cfg("method=ppo", f"method.value_init={value_init}")
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
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)


def test_ppo_and_rloo_divide_by_the_same_score_normalisation(smoke_cfg):
    """One normalisation for both online methods (baselines/onpolicy.py): on one seed and one reward model, RLOO
    measures it on the samples PPO measures it on."""
    metrics = {}
    for method in ("ppo", "rloo"):
        cfg = smoke_cfg(f"method={method}", "method.total_steps=1", "pipeline=[train]")
        run_pipeline(cfg)
        metrics[method] = done(cfg.paths.method)["metrics"]
    assert metrics["ppo"]["score_std"] > 1e-6
    assert (metrics["rloo"]["score_mean"], metrics["rloo"]["score_std"]) == \
        (metrics["ppo"]["score_mean"], metrics["ppo"]["score_std"])


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


def tiny_gpt2_config(vocab: int = 7) -> GPT2Config:
    return GPT2Config(vocab_size=vocab, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0,
                      eos_token_id=0, pad_token_id=0, num_labels=1)


def test_learning_rates_anneal_linearly_on_both_optimisers():
    torch.manual_seed(0)
    policy, ref = GPT2LMHeadModel(tiny_gpt2_config()), GPT2LMHeadModel(tiny_gpt2_config())
    args = OmegaConf.create(dict(learning_rate=1e-3, value_learning_rate=4e-3, lr_schedule="linear", total_steps=10,
                                 kl=dict(target=None, init_coef=0.1, horizon=1)))
    ppo = PPO(policy, ref, ValueModel(GPT2LMHeadModel(tiny_gpt2_config()).transformer), None, args, eos_id=0,
              pad_id=0, max_new_tokens=2, seed=0)

    def rates(step: int) -> tuple[float, float]:
        ppo.set_learning_rates(step)
        return ppo.policy_opt.param_groups[0]["lr"], ppo.value_opt.param_groups[0]["lr"]
    # 1 - s / 10 of each base rate: steps 0 (first), 5 (mid), 9 (last)
    assert rates(0) == pytest.approx((1e-3, 4e-3))
    assert rates(5) == pytest.approx((5e-4, 2e-3))
    assert rates(9) == pytest.approx((1e-4, 4e-4))
    args.lr_schedule = "constant"
    assert rates(9) == pytest.approx((1e-3, 4e-3))


def test_value_model_from_reward_model_reproduces_its_score(tmp_path):
    """value_init=reward_model: V at a sequence's last token is r_phi's score of it (the classifier pools there).
    The classifier has r_phi's extra embedding row (an added pad token, id 7) that the policy never emits."""
    torch.manual_seed(0)
    clf = GPT2ForSequenceClassification(tiny_gpt2_config()).eval()
    clf.resize_token_embeddings(8)
    clf.config.pad_token_id = 7
    clf.save_pretrained(str(tmp_path / "rm"), safe_serialization=True)
    value = ValueModel.from_reward_model(tmp_path / "rm")
    assert value.trunk.get_input_embeddings().weight.shape[0] == 8
    ids = torch.tensor([[1, 2, 3, 4, 5], [3, 1, 6, 7, 7]])  # the second right-padded with the pad id
    attn = (ids != 7).long()
    with torch.no_grad():
        scores = clf(input_ids=ids, attention_mask=attn).logits[:, 0]
        values = value(ids, attn)
    last = attn.sum(1) - 1
    assert values[torch.arange(2), last].tolist() == pytest.approx(scores.tolist(), abs=1e-5)
    assert abs(float(scores[0] - scores[1])) > 1e-3  # two different scores reproduced, not one constant
    # Rescaled to the normalised score (s - mean) / std that PPO's returns are made of.
    value.normalise_head(mean=0.3, std=2.0)
    with torch.no_grad():
        rescaled = value(ids, attn)[torch.arange(2), last]
    assert rescaled.tolist() == pytest.approx(((scores - 0.3) / 2.0).tolist(), abs=1e-5)


def test_value_init_reward_model_is_refused_without_a_learned_reward_model(smoke_cfg, tmp_path):
    cfg = smoke_cfg("method=ppo_gt", "method.value_init=reward_model")
    with pytest.raises(UserError, match="value_init=reward_model needs the learned reward model"):
        ppo_stage.run(cfg, tmp_path / "out")  # before any model is loaded (the SFT policy does not even exist)
    assert not (tmp_path / "out").exists()


def test_snapshot_schedule():
    m = OmegaConf.create(dict(total_steps=100, eval_every=25, snapshot_steps=None))
    assert ppo_stage.snapshot_steps(m) == {25, 50, 75, 100}
    m.eval_every, m.total_steps = 40, 90
    assert ppo_stage.snapshot_steps(m) == {40, 80, 90}  # the last step always
    m.snapshot_steps = [5, 10, 20, 35, 50, 75, 100, 150]
    assert ppo_stage.snapshot_steps(m) == {5, 10, 20, 35, 50, 75, 90}
