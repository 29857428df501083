"""Left padding does not move positions: TRL's RLOOTrainer left-pads the prompts and scores them without position
ids; the trainer baselines/rloo.py trains with takes them from the attention mask, so a padded row's per-token
log-probs are those of the same sequence unpadded (the model that sampled it), for the policy and the reference,
with TRL's fused LM head and with the dense one."""
import inspect

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel
from trl import RLOOConfig, RLOOTrainer

from baselines.rloo import make_trainer
from pipelines.lm.models import load_policy, train_tokenizer

PROMPTS = [[5, 9, 14], [7, 3, 11, 20, 8, 6], [12, 4, 17, 9, 21, 5, 13, 10, 2]]
COMPLETIONS = [[8, 15, 3, 19], [22, 6, 9], [4, 4, 18, 7]]


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    tok = train_tokenizer(["a good film and a bad one", "fine words here"] * 20, 300, 1)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                       pad_token_id=tok.pad_token_id))
    with torch.no_grad():  # position embeddings as large as a trained model's, so that a shift shows
        model.transformer.wpe.weight.normal_(0.0, 0.5)
    folder = tmp_path_factory.mktemp("policy")
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    return folder, tok


def rloo_trainer(policy_dir, tmp_path, dense: bool, trainer_class=None) -> RLOOTrainer:
    folder, tok = policy_dir
    args = RLOOConfig(output_dir=str(tmp_path / "rloo"), per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=4, temperature=1.0, top_k=0, top_p=1.0, beta=0.05, max_steps=1,
                      disable_dropout=True, bf16=False, gradient_checkpointing=False, report_to=[], use_cpu=True,
                      dataloader_num_workers=0)
    data = Dataset.from_dict({"prompt": ["a good film", "fine words"], "prompt_ids": [[5, 9], [7, 3]]})

    def reward(completion_ids, **kwargs):
        return [0.0] * len(completion_ids)
    if trainer_class is None:
        return make_trainer(load_policy(folder), reward, args, data, tok, [], dense)
    return trainer_class(model=load_policy(folder), reward_funcs=reward, args=args, train_dataset=data,
                         processing_class=tok)


def rollout_batch(pad: int):
    """Prompts left-padded, completions right-padded, concatenated: the batch TRL scores."""
    pw, cw = max(map(len, PROMPTS)), max(map(len, COMPLETIONS))
    ids = torch.tensor([[pad] * (pw - len(p)) + p + c + [pad] * (cw - len(c)) for p, c in zip(PROMPTS, COMPLETIONS)])
    mask = torch.tensor([[0] * (pw - len(p)) + [1] * (len(p) + len(c)) + [0] * (cw - len(c))
                         for p, c in zip(PROMPTS, COMPLETIONS)])
    return ids, mask, cw


def padded_vs_alone(trainer, model) -> float:
    """Largest |difference| between a completion's per-token log-probs in the padded batch and alone, through the
    hook RLOOTrainer computes old, reference and training log-probs with."""
    ids, mask, width = rollout_batch(trainer.processing_class.pad_token_id)
    with torch.no_grad():
        batched, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, width)
        worst = 0.0
        for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS)):
            alone, _, _ = trainer._get_per_token_logps_and_entropies(model, torch.tensor([p + c]),
                                                                     torch.ones(1, len(p) + len(c), dtype=torch.long),
                                                                     len(c))
            worst = max(worst, float((batched[i, :len(c)] - alone[0]).abs().max()))
    return worst


@pytest.mark.parametrize("dense", [False, True])
def test_rloo_scores_a_left_padded_batch_as_the_unpadded_sequences(policy_dir, tmp_path, dense):
    trainer = rloo_trainer(policy_dir, tmp_path, dense)
    assert trainer.ref_model is not None
    for model in (trainer.model, trainer.ref_model):
        assert padded_vs_alone(trainer, model) < 1e-5


def test_without_mask_positions_trl_scores_a_shifted_model(policy_dir, tmp_path):
    # The defect the test above guards against: TRL's own trainer, same batch, far from the unpadded log-probs.
    trainer = rloo_trainer(policy_dir, tmp_path, False, trainer_class=RLOOTrainer)
    assert padded_vs_alone(trainer, trainer.model) > 1e-2


def test_generation_is_unchanged(policy_dir, tmp_path):
    """`generate` (RLOO's sampler) still sees position_ids in the forward's signature and passes its own: greedy
    completions of left-padded prompts are those of each prompt alone."""
    trainer = rloo_trainer(policy_dir, tmp_path, False)
    model = trainer.model.eval()
    assert "position_ids" in inspect.signature(model.forward).parameters
    pad = trainer.processing_class.pad_token_id
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in PROMPTS])
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=pad, eos_token_id=None)
    with torch.no_grad():
        batched = model.generate(input_ids=ids, attention_mask=mask, **kw)[:, width:]
        for i, p in enumerate(PROMPTS):
            alone = model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p),
                                                                                         dtype=torch.long), **kw)
            assert batched[i].tolist() == alone[0, len(p):].tolist()
