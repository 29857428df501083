"""The objective, not just the code: on a problem whose KL-regularised optimum is known in closed form, PPO with a
fixed KL coefficient beta and DPO on Bradley-Terry preferences both land near

    pi*(y | x) = pi_ref(y | x) * exp(r(y) / beta) / Z        (DPO paper, Eq. 4)

The problem: one prompt, responses of one token from a vocabulary of 6 (token 0 doubles as EOS), a tiny random
GPT-2 as pi_ref (its initial next-token distribution is far from uniform), and a known reward per token.
The bound of 0.08 in total variation is tight enough to fail for a wrong objective: the optimum for beta / 2 is at
TV ~0.2 from pi*, the reward maximiser at ~0.5, pi_ref itself at ~0.3.
"""
import copy

import pytest
import torch
from datasets import Dataset
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from trl import DPOConfig

from baselines.ppo import PPO, ValueModel
from pipelines.dpo import SampledTokenDPOTrainer

PROMPT = [1, 2]
REWARD = torch.tensor([0.0, 1.0, -1.0, 0.5, 2.0, -0.5])
BETA = 1.0
TV_BOUND = 0.08


def tiny_policy() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=6, n_positions=8, n_embd=16, n_layer=1, n_head=2, initializer_range=0.3,
                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


@torch.no_grad()
def next_token_dist(model) -> torch.Tensor:
    return torch.softmax(model(torch.tensor([PROMPT])).logits[0, -1].float(), -1)


def optimum(pi_ref: torch.Tensor, beta: float) -> torch.Tensor:
    unnorm = pi_ref * torch.exp(REWARD / beta)
    return unnorm / unnorm.sum()


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def test_the_problem_discriminates():
    pi_ref = next_token_dist(tiny_policy())
    target = optimum(pi_ref, BETA)
    assert tv(pi_ref, target) > 0.25
    assert tv(optimum(pi_ref, BETA / 2), target) > 2 * TV_BOUND
    assert tv(torch.nn.functional.one_hot(REWARD.argmax(), 6).float(), target) > 0.4


@pytest.mark.heavy  # minutes of training or timing: make test runs it, make test-fast does not
def test_ppo_with_fixed_kl_coefficient_converges_to_the_analytic_optimum():
    policy = tiny_policy()
    ref = copy.deepcopy(policy)
    target = optimum(next_token_dist(ref), BETA)
    value = ValueModel(copy.deepcopy(policy.transformer))
    args = OmegaConf.create(dict(
        # A constant rate: the fixed point of the updates is the optimum; annealing would only stop short of it.
        learning_rate=3e-3, value_learning_rate=3e-3, lr_schedule="constant", total_steps=150,
        kl=dict(target=None, init_coef=BETA, horizon=1),
        batch_size=256, minibatch_size=128, micro_batch_size=128, ppo_epochs=2, gamma=1.0, lam=0.95, clip_range=0.2,
        clip_range_value=0.2, vf_coef=0.1, max_grad_norm=1.0, whiten_advantages=True,
        # Normalising the score would rescale r and move the optimum; this test pins the objective itself.
        normalize_scores=False, missing_eos_penalty=None, ref_ema_decay=None))
    scorer = lambda prompts, completions: [float(REWARD[c[0]]) for c in completions]  # noqa: E731
    ppo = PPO(policy, ref, value, scorer, args, eos_id=0, pad_id=0, max_new_tokens=1, seed=0,
              generation_batch_size=256)
    for step in range(150):
        metrics = ppo.step(step, [PROMPT] * 256)
    final = next_token_dist(policy)
    assert tv(final, target) < TV_BOUND, (final, target)
    # The logged sequence KL is the KL to the reference of the policy that sampled the last batch.
    assert metrics["objective/kl"] == pytest.approx(float((target * (target / next_token_dist(ref)).log()).sum()),
                                                    abs=0.15)


@pytest.mark.heavy  # minutes of training or timing: make test runs it, make test-fast does not
def test_dpo_on_bradley_terry_preferences_converges_to_the_analytic_optimum():
    policy = tiny_policy()
    ref = copy.deepcopy(policy)
    pi_ref = next_token_dist(ref)
    target = optimum(pi_ref, BETA)
    # Pairs: two responses drawn from pi_ref, the first preferred with probability sigmoid(r1 - r2) (BT model).
    gen = torch.Generator().manual_seed(0)
    y = torch.multinomial(pi_ref, 2 * 6000, replacement=True, generator=gen).view(-1, 2)
    y = y[y[:, 0] != y[:, 1]]
    first_wins = torch.rand(len(y), generator=gen) < torch.sigmoid(REWARD[y[:, 0]] - REWARD[y[:, 1]])
    chosen = torch.where(first_wins, y[:, 0], y[:, 1])
    rejected = torch.where(first_wins, y[:, 1], y[:, 0])
    data = Dataset.from_dict({"prompt_ids": [PROMPT] * len(y), "chosen_ids": [[int(c)] for c in chosen],
                              "rejected_ids": [[int(r)] for r in rejected]})
    tok = PreTrainedTokenizerFast(tokenizer_object=_char_tokenizer(), eos_token="a", pad_token="a")
    args = DPOConfig(output_dir="/tmp/unused-dpo-analytic", beta=BETA, learning_rate=1e-2, optim="adamw_torch",
                     lr_scheduler_type="constant", per_device_train_batch_size=256, num_train_epochs=8,
                     logging_steps=1000, save_strategy="no", report_to=[], max_length=None, seed=0,
                     gradient_checkpointing=False, bf16=False, dataloader_num_workers=0,
                     dataloader_pin_memory=False)
    SampledTokenDPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=data, processing_class=tok).train()
    final = next_token_dist(policy)
    assert tv(final, target) < TV_BOUND, (final, target)


def _char_tokenizer():
    """A 6-symbol tokenizer (only its ids and special tokens are used: DPO trains on the given ids)."""
    from tokenizers import Tokenizer, models
    return Tokenizer(models.WordLevel({c: i for i, c in enumerate("abcdef")}, unk_token="a"))
