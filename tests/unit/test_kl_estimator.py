"""The evaluator's KL estimate against the exact sequence KL on a model whose completions can be enumerated,
and the sampler against the model's own distribution (no top-k truncation)."""
import itertools
import math

import evaluate as hf_evaluate
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from pipelines.lm.sampling import completion_token_logprobs, full_distribution_config, sample_completions
from pipelines.stages.evaluate import METRIC_DIR

EOS = 0


def tiny_lm(seed: int, vocab: int, scale: float) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                       eos_token_id=EOS, bos_token_id=EOS, pad_token_id=EOS, tie_word_embeddings=False))
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)  # peaked, unequal token probabilities
    return model.eval()


def all_completions(vocab: int, max_new: int) -> list[list[int]]:
    """Every completion: ends at its first EOS, or runs max_new tokens without one."""
    out = []
    for length in range(1, max_new + 1):
        for body in itertools.product(range(1, vocab), repeat=length - 1):
            out.append(list(body) + [EOS])
    out += [list(t) for t in itertools.product(range(1, vocab), repeat=max_new)]
    return out


@torch.no_grad()
def seq_logps(model, prompt, completions):
    return torch.stack([t.sum() for t in completion_token_logprobs(model, [prompt] * len(completions), completions)])


def test_monte_carlo_kl_matches_exact_sequence_kl():
    vocab, max_new, prompt = 5, 3, [2, 3]
    policy, ref = tiny_lm(1, vocab, 20.0), tiny_lm(2, vocab, 20.0)
    ys = all_completions(vocab, max_new)
    logp, logq = seq_logps(policy, prompt, ys), seq_logps(ref, prompt, ys)
    assert torch.exp(logp).sum().item() == pytest.approx(1.0, abs=1e-5)  # the enumeration is complete
    exact = (torch.exp(logp) * (logp - logq)).sum().item()

    samples = sample_completions(policy, [prompt] * 3000, max_new_tokens=max_new, eos_id=EOS, pad_id=EOS,
                                 batch_size=500, seed=0)
    metric = hf_evaluate.load(str(METRIC_DIR))
    index = {tuple(y): i for i, y in enumerate(ys)}
    idx = torch.tensor([index[tuple(s)] for s in samples])
    est = metric.compute(policy_logps=logp[idx].tolist(), ref_logps=logq[idx].tolist(), rewards=[0.0] * len(idx))
    assert est["n"] == 3000
    assert exact > 0.3  # the two models differ enough for the test to mean something
    assert abs(est["kl"] - exact) < 4 * est["kl_se"], (est, exact)


def test_sampler_draws_from_the_full_distribution():
    """With 60 tokens, top-k 50 (transformers' default) would never sample the 10 least likely first tokens."""
    vocab = 60
    model = tiny_lm(3, vocab, 3.0)
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([[7, 8]])).logits[0, -1], -1)
    tail = torch.argsort(probs)[:10]
    tail_mass = probs[tail].sum().item()
    n = 4000
    firsts = torch.tensor([c[0] for c in sample_completions(model, [[7, 8]] * n, max_new_tokens=1, eos_id=EOS,
                                                            pad_id=EOS, batch_size=1000, seed=1)])
    observed = torch.isin(firsts, tail).float().mean().item()
    se = math.sqrt(tail_mass * (1 - tail_mass) / n)
    assert tail_mass > 0.02
    assert abs(observed - tail_mass) < 5 * se, (observed, tail_mass)


def test_generation_config_has_no_truncation():
    g = full_distribution_config(10, eos_id=0, pad_id=0)
    assert g.do_sample and g.top_k == 0 and g.top_p == 1.0 and g.temperature == 1.0 and g.min_new_tokens == 0


def test_completions_end_at_first_eos_and_match_scored_logprobs():
    model = tiny_lm(4, 8, 5.0)
    prompts = [[1, 2, 3], [4], [5, 6]]
    comps = sample_completions(model, prompts, max_new_tokens=6, eos_id=EOS, pad_id=EOS, batch_size=3, seed=0)
    for c in comps:
        assert EOS not in c[:-1] and 1 <= len(c) <= 6
    # left-padded batched scoring == one-by-one scoring
    batched = completion_token_logprobs(model, prompts, comps)
    for p, c, b in zip(prompts, comps, batched):
        single = completion_token_logprobs(model, [p], [c])[0]
        assert torch.allclose(b, single, atol=1e-5)
