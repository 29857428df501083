"""The one score normalisation of the online methods (baselines/onpolicy.py): which samples it measures, and that
PPO and RLOO both go through it."""
import pytest
import torch
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel

from baselines import onpolicy, ppo, rloo
from pipelines.lm.sampling import sample_completions

EOS = 0


def test_mean_and_std_of_the_scores_of_sft_samples_on_the_seeded_prompt_stream():
    torch.manual_seed(0)
    policy = GPT2LMHeadModel(GPT2Config(vocab_size=9, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                        eos_token_id=EOS, bos_token_id=EOS, pad_token_id=EOS)).eval()
    pool = [[1 + i % 8, 1 + (3 * i) % 8] for i in range(10)]
    cfg = OmegaConf.create(dict(seed=3, method=dict(score_norm_samples=14),
                                task=dict(generation=dict(max_new_tokens=4, batch_size=5, temperature=1.0))))
    score = lambda prompts, completions: [float(sum(c)) for c in completions]  # noqa: E731
    mean, std = onpolicy.score_normalisation(policy, score, pool, cfg, EOS, EOS)

    # 14 prompts of the pool's stream of seed + 1 (more than the pool: a second pass), sampled at the run's seed
    prompts = onpolicy.prompt_stream(pool, 14, 4, 0)
    completions = sample_completions(policy, prompts, max_new_tokens=4, eos_id=EOS, pad_id=EOS, batch_size=5,
                                     seed=3, tag=onpolicy.SCORE_NORM_TAG)
    scores = torch.tensor(score(prompts, completions))
    assert (mean, std) == (float(scores.mean()), float(scores.std()))
    assert std > 0

    constant = onpolicy.score_normalisation(policy, lambda p, c: [2.0] * len(c), pool, cfg, EOS, EOS)
    assert constant == pytest.approx((2.0, 1e-6))  # the std is floored


def test_ppo_and_rloo_use_the_one_normalisation():
    assert ppo.score_normalisation is onpolicy.score_normalisation
    assert rloo.score_normalisation is onpolicy.score_normalisation
