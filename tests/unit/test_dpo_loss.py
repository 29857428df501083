"""The DPO loss the project trains with (TRL's, through SampledTokenDPOTrainer) against hand-worked numbers.

With h = (log pi(y_w) - log pi(y_l)) - (log pi_ref(y_w) - log pi_ref(y_l)) the loss is -log sigmoid(beta * h):
beta = 0.1 and h = 0, 10, 20 give 0.693147, 0.313262, 0.126928 (conventions.md)."""
import math

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel
from trl import DPOConfig

from pipelines.dpo import SampledTokenDPOTrainer
from pipelines.lm.models import train_tokenizer
from pipelines.lm.sampling import sequence_logprobs


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    tok = train_tokenizer(["a good film and a bad one", "fine words here"] * 20, 300, 1)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    policy, ref = GPT2LMHeadModel(cfg), GPT2LMHeadModel(cfg)
    data = Dataset.from_dict({"prompt_ids": [[5, 6]], "chosen_ids": [[7, 8, 0]], "rejected_ids": [[9]]})
    args = DPOConfig(output_dir=str(tmp_path_factory.mktemp("dpo")), beta=0.1, report_to=[], bf16=False,
                     gradient_checkpointing=False, per_device_train_batch_size=1)
    return SampledTokenDPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=data, processing_class=tok)


@pytest.mark.parametrize("h,expected", [(0.0, 0.693147), (10.0, 0.313262), (20.0, 0.126928)])
def test_trained_loss_matches_golden_numbers(trainer, h, expected):
    example = {"prompt_ids": [5, 6, 11], "chosen_ids": [7, 8, 0], "rejected_ids": [9, 12]}
    model = trainer.model.eval()
    pol_w, pol_l = sequence_logprobs(model, [example["prompt_ids"]] * 2,
                                     [example["chosen_ids"], example["rejected_ids"]], 2)
    # Reference log-probs chosen so that the policy-minus-reference margin is exactly h.
    batch = trainer.data_collator([{**example, "ref_chosen_logps": pol_w - h, "ref_rejected_logps": pol_l}])
    trainer.precompute_ref_logps = True
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
    assert loss.item() == pytest.approx(expected, abs=2e-5)


def test_equal_policy_and_reference_give_ln2(trainer):
    example = {"prompt_ids": [3, 4], "chosen_ids": [5], "rejected_ids": [6, 7, 0]}
    batch = trainer.data_collator([example])
    trainer.precompute_ref_logps = False  # reference forward through a copy of the policy's weights
    trainer.ref_model.load_state_dict(trainer.model.state_dict())
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model.eval(), batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_trainer_keeps_sampled_ids_verbatim(trainer):
    """No EOS appended, no re-tokenisation: the collator sees exactly the sampled ids."""
    ds = Dataset.from_dict({"prompt_ids": [[1, 2]], "chosen_ids": [[3, 4]], "rejected_ids": [[5]]})
    prepared = trainer._prepare_dataset(ds, trainer.processing_class, trainer.args, "train")
    assert prepared[0]["chosen_ids"] == [3, 4] and prepared[0]["rejected_ids"] == [5]
    with pytest.raises(ValueError, match="token-id columns"):
        trainer._prepare_dataset(Dataset.from_dict({"prompt": ["x"], "chosen": ["y"], "rejected": ["z"]}),
                                 trainer.processing_class, trainer.args, "train")


def test_stored_reference_logps_equal_trls_own_reference_pass(trainer):
    """The pairs stage stores log pi_SFT of every sample (sequence_logprobs); TRL's reference forward on the same
    pairs gives the same numbers, so a run that reads the stored ones trains on the same loss."""
    rows = [{"prompt_ids": [5, 6, 11], "chosen_ids": [7, 8, 0], "rejected_ids": [9, 12]},
            {"prompt_ids": [3], "chosen_ids": [5, 4, 4, 2], "rejected_ids": [6]}]
    ref = trainer.ref_model.eval()
    trl_chosen, trl_rejected = trainer.compute_ref_log_probs(ref, trainer.data_collator(rows))
    ours = [sequence_logprobs(ref, [r["prompt_ids"]] * 2, [r["chosen_ids"], r["rejected_ids"]], 2) for r in rows]
    assert torch.allclose(trl_chosen, torch.tensor([o[0] for o in ours]), atol=1e-5)
    assert torch.allclose(trl_rejected, torch.tensor([o[1] for o in ours]), atol=1e-5)


def test_stored_reference_columns_are_used_as_given(trainer):
    ds = Dataset.from_dict({"prompt_ids": [[1, 2]], "chosen_ids": [[3, 4]], "rejected_ids": [[5]],
                            "ref_chosen_logps": [-1.5], "ref_rejected_logps": [-2.5]})
    kept = trainer._precompute_ref_logps(ds, "train", 1)
    assert kept is ds
    batch = trainer.data_collator([kept[0]])
    assert batch["ref_chosen_logps"].tolist() == [-1.5] and batch["ref_rejected_logps"].tolist() == [-2.5]
