"""The one per-token log-prob gather (pipelines/numerics/logprobs.py) on hand-made numbers, and what it buys: the
KL that PPO penalises is, sample for sample, the sequence KL that the evaluator reports."""
import math

import pytest
import torch
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel

from baselines.ppo import PPO, ValueModel, pack, token_logprobs
from pipelines.lm.sampling import completion_token_logprobs, sample_completions
from pipelines.numerics import ppo_math as pm
from pipelines.numerics.logprobs import entropy, gather_logprobs
from pipelines.stages.evaluate import evaluate_policy

P = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]])
EOS = 0


def test_gather_returns_the_log_probability_of_each_token():
    logits = P.log() + torch.tensor([[3.0], [-1.0], [0.5]])  # softmax is shift-invariant per row
    tokens = torch.tensor([3, 1, 0])
    out = gather_logprobs(logits, tokens)
    assert out.dtype == torch.float32 and out.shape == (3,)
    assert out.tolist() == pytest.approx([math.log(0.4), math.log(0.25), math.log(0.7)], abs=1e-6)
    # The exact arithmetic of every former copy of the gather: log_softmax in fp32, then gather.
    assert torch.equal(out, torch.log_softmax(logits.float(), -1).gather(-1, tokens[:, None]).squeeze(-1))


def test_gather_in_fp32_from_bf16_logits_and_the_full_distribution():
    logits = P.log().to(torch.bfloat16)
    out, log_p = gather_logprobs(logits, torch.tensor([0, 2, 1]), full=True)
    assert out.dtype == log_p.dtype == torch.float32 and log_p.shape == (3, 4)
    assert torch.equal(log_p, torch.log_softmax(logits.float(), -1))
    assert out.tolist() == pytest.approx([math.log(0.1), math.log(0.25), math.log(0.1)], abs=1e-2)


def test_masked_positions_are_zero_and_may_hold_any_token_id():
    logits = P.log().reshape(1, 3, 4).repeat(2, 1, 1)
    tokens = torch.tensor([[3, -100, 0], [1, 2, 12345]])
    mask = torch.tensor([[True, False, True], [True, True, False]])
    out = gather_logprobs(logits, tokens, mask)
    expected = [[math.log(0.4), 0.0, math.log(0.7)], [math.log(0.2), math.log(0.25), 0.0]]
    assert out.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]


def test_gradient_is_one_hot_minus_softmax():
    logits = P.log().clone().requires_grad_(True)
    gather_logprobs(logits, torch.tensor([3, 1, 0])).sum().backward()
    expected = torch.nn.functional.one_hot(torch.tensor([3, 1, 0]), 4).float() - P
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_entropy():
    expected = [-sum(p * math.log(p) for p in row) for row in P.tolist()]
    assert entropy(P.log()).tolist() == pytest.approx(expected, abs=1e-6)
    assert float(entropy(torch.full((5,), -math.log(5)))) == pytest.approx(math.log(5), abs=1e-6)


# -- PPO and the evaluator on the same samples ---------------------------------------------------------------------
def tiny_lm(seed: int, vocab: int = 11) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                       eos_token_id=EOS, bos_token_id=EOS, pad_token_id=EOS))
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # peaked, so policy and reference differ clearly
    return model.eval()


class Tokens:
    """The evaluator's tokenizer interface on plain ids (text = the ids, space-separated)."""
    eos_token_id = pad_token_id = EOS

    def batch_decode(self, seqs, skip_special_tokens=True):
        return [self.decode(s) for s in seqs]

    def decode(self, ids):
        return " ".join(str(i) for i in ids)


def ppo_learner(policy, ref) -> PPO:
    args = OmegaConf.create(dict(
        learning_rate=1e-3, value_learning_rate=1e-3, lr_schedule="constant", total_steps=1,
        kl=dict(target=None, init_coef=0.3, horizon=1), batch_size=24, minibatch_size=8, micro_batch_size=5,
        ppo_epochs=1, gamma=1.0, lam=0.95, clip_range=0.2, clip_range_value=0.2, vf_coef=0.1, max_grad_norm=1.0,
        whiten_advantages=True, normalize_scores=False, missing_eos_penalty=None, ref_ema_decay=None))
    value = ValueModel(GPT2LMHeadModel(policy.config).transformer)
    return PPO(policy, ref, value, lambda p, c: [float(len(x)) for x in c], args, eos_id=EOS, pad_id=EOS,
               max_new_tokens=6, seed=0, generation_batch_size=8)


def test_ppo_penalises_the_sequence_kl_the_evaluator_reports():
    """Per sample: sum_t (log pi - log pi_ref)(y_t) of PPO's rollout forward (prompts of several lengths, completions
    right-padded, micro-batched) = the evaluator's log-ratio of the same completion; and PPO's logged objective/kl
    of that batch = the evaluator's kl."""
    policy, ref = tiny_lm(1), tiny_lm(2)
    prompts = [[3 + i % 5] * (1 + i % 4) for i in range(24)]
    metrics, rows = evaluate_policy(policy, ref, Tokens(), lambda texts: [0.0] * len(texts), prompts,
                                    max_new_tokens=6, batch_size=8, seed=0)
    completions = [r["completion_ids"] for r in rows]
    assert len({len(c) for c in completions}) > 1  # padding is exercised
    assert metrics["kl"] > 0.5  # the models differ enough for the test to mean something

    ppo = ppo_learner(policy, ref)
    b = pack(prompts, completions, EOS, "cpu")
    old = ppo.rollout_forward(b)
    _, kl = pm.kl_shaped_rewards(torch.zeros(len(prompts)), old.logprobs, old.ref_logprobs, b.mask, 0.3)
    assert kl.sum(1).tolist() == pytest.approx([r["logratio"] for r in rows], abs=1e-4)

    ppo.sample = lambda p, tag: completions  # the step's rollout: the evaluator's samples
    logged = ppo.step(0, prompts)
    assert logged["objective/kl"] == pytest.approx(metrics["kl"], abs=1e-4)


def test_ppo_and_the_sampler_gather_the_same_token_logprobs():
    """PPO normalises only the states that emit completion tokens; the sampler every position: same numbers."""
    policy = tiny_lm(3)
    prompts = [[4], [5, 6, 7], [8, 9]]
    completions = sample_completions(policy, prompts, max_new_tokens=5, eos_id=EOS, pad_id=EOS, batch_size=3, seed=1)
    b = pack(prompts, completions, EOS, "cpu")
    with torch.no_grad():
        ppo_side = token_logprobs(policy, b)
        sampler_side = completion_token_logprobs(policy, prompts, completions)
    for i, expected in enumerate(sampler_side):
        n = len(completions[i])
        assert torch.allclose(ppo_side[i, :n], expected, atol=1e-5)
        assert torch.all(ppo_side[i, n:] == 0)  # padding
