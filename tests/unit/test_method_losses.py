"""The loss or selection rule of every method besides DPO and PPO, against hand-worked numbers.

cDPO and IPO go through TRL's DPOTrainer exactly as the pipeline configures it (pipelines.dpo.loss_options); the
reference log-probs are set so that the policy-minus-reference log-ratios are chosen numbers."""
import math

import pytest
import torch
from datasets import Dataset
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel
from trl import DPOConfig, SFTConfig, SFTTrainer

from baselines.best_of_n import analytic_kl, select_best
from baselines.preferred_ft import IGNORE, completion_labels
from baselines.rloo import make_reward_func
from pipelines.dpo import SampledTokenDPOTrainer, loss_options
from pipelines.lm.models import train_tokenizer
from pipelines.lm.sampling import sequence_logprobs
from pipelines.numerics.losses import unlikelihood_loss

EXAMPLE = {"prompt_ids": [5, 6, 11], "chosen_ids": [7, 8, 0], "rejected_ids": [9, 12]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tok = train_tokenizer(["a good film and a bad one", "fine words here"] * 20, 300, 1)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    return tok, GPT2LMHeadModel(cfg).eval(), GPT2LMHeadModel(cfg).eval(), tmp_path_factory


def family_loss(tiny, method: dict, chosen_logratio: float, rejected_logratio: float) -> float:
    """The training loss TRL computes for EXAMPLE when log pi - log pi_ref is the given number on each side."""
    tok, policy, ref, tmp = tiny
    m = OmegaConf.create({"loss_type": "sigmoid", **method})
    args = DPOConfig(output_dir=str(tmp.mktemp("t")), beta=m.beta, report_to=[], bf16=False,
                     gradient_checkpointing=False, per_device_train_batch_size=1, **loss_options(m))
    data = Dataset.from_dict({k: [v] for k, v in EXAMPLE.items()})
    trainer = SampledTokenDPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=data,
                                     processing_class=tok)
    pol_w, pol_l = sequence_logprobs(policy, [EXAMPLE["prompt_ids"]] * 2,
                                     [EXAMPLE["chosen_ids"], EXAMPLE["rejected_ids"]], 2)
    batch = trainer.data_collator([{**EXAMPLE, "ref_chosen_logps": pol_w - chosen_logratio,
                                    "ref_rejected_logps": pol_l - rejected_logratio}])
    trainer.precompute_ref_logps = True
    with torch.no_grad():
        return trainer.compute_loss(policy, batch).item()


# cDPO, eps = 0.1, beta = 0.1: loss(h) = -0.9 log sigmoid(0.1 h) - 0.1 log sigmoid(-0.1 h)
#   h = 0:  log 2                                    = 0.693147
#   h = 10: 0.9 * 0.313262 + 0.1 * 1.313262          = 0.413262
#   h = 20: 0.9 * 0.126928 + 0.1 * 2.126928          = 0.326928
#   h = 40: 0.9 * 0.018150 + 0.1 * 4.018150          = 0.418150  (rises again: the conservative pull-back)
@pytest.mark.parametrize("h,expected", [(0.0, 0.693147), (10.0, 0.413262), (20.0, 0.326928), (40.0, 0.418150)])
def test_cdpo_is_label_smoothed_dpo(tiny, h, expected):
    loss = family_loss(tiny, {"name": "cdpo", "beta": 0.1, "label_smoothing": 0.1}, h, 0.0)
    assert loss == pytest.approx(expected, abs=2e-5)


def test_cdpo_without_smoothing_is_dpo(tiny):
    # eps = 0 -> -log sigmoid(0.1 * 10) = 0.313262, DPO's number
    assert family_loss(tiny, {"name": "cdpo", "beta": 0.1, "label_smoothing": 0.0}, 10.0, 0.0) == \
        pytest.approx(0.313262, abs=2e-5)


# IPO, tau = 0.1: target margin 1 / (2 tau) = 5 on per-token log-ratios (chosen has 3 tokens, rejected 2):
#   (15, 0)  -> 15/3 - 0 = 5      -> (5 - 5)^2 = 0
#   (0, 0)   -> 0                 -> 25
#   (6, -4)  -> 2 - (-2) = 4      -> 1
@pytest.mark.parametrize("hw,hl,expected", [(15.0, 0.0, 0.0), (0.0, 0.0, 25.0), (6.0, -4.0, 1.0)])
def test_ipo_pulls_the_per_token_margin_to_its_target(tiny, hw, hl, expected):
    assert family_loss(tiny, {"name": "ipo", "beta": 0.1, "loss_type": "ipo"}, hw, hl) == \
        pytest.approx(expected, abs=1e-4)


def test_unlikelihood_loss_on_hand_made_probabilities():
    # Vocabulary of 2. Row 0 is y_w: target token 1 with p = 0.5 at both positions -> NLL ln 2 = 0.693147.
    # Row 1 is y_l: target token 0 with p = 0.2 -> -log(1 - 0.2) = 0.223144 (one position; the other ignored).
    half = [0.0, 0.0]
    p02 = [math.log(0.2), math.log(0.8)]  # softmax -> [0.2, 0.8]
    logits = torch.tensor([[half, half, half], [p02, half, half]])
    labels = torch.tensor([[IGNORE, 1, 1], [IGNORE, 0, IGNORE]])
    negative = torch.tensor([False, True])
    for alpha, expected in [(0.0, 0.693147), (0.5, 0.693147 + 0.5 * 0.223144), (1.0, 0.693147 + 0.223144)]:
        loss, stats = unlikelihood_loss(logits, labels, negative, alpha)
        assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert stats["p_rejected"].item() == pytest.approx(0.2, abs=1e-6)
    # The gradient lowers the rejected token's logit (pushes p(y_l) down) and raises the chosen one.
    logits.requires_grad_(True)
    unlikelihood_loss(logits, labels, negative, 1.0)[0].backward()
    assert logits.grad[1, 0, 0] > 0 and logits.grad[0, 0, 1] < 0


def test_unlikelihood_trainer_loss_equals_the_loss_on_full_logits(tiny):
    # The trainer scores only the completion positions (pipelines/lm/lm_head.py); same loss as on (B, T, V) logits.
    from transformers import TrainingArguments

    from baselines.unlikelihood import UnlikelihoodTrainer
    tok, _, _, tmp = tiny
    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2)).eval()
    rows = [EXAMPLE, {"prompt_ids": [4, 5], "chosen_ids": [9, 9, 10, 0], "rejected_ids": [13, 0]}]
    args = TrainingArguments(output_dir=str(tmp.mktemp("ul")), report_to=[], remove_unused_columns=False,
                             per_device_train_batch_size=2)
    trainer = UnlikelihoodTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), alpha=0.5,
                                  pad_id=0)
    batch = trainer._collate(rows)
    loss = trainer.compute_loss(model, batch)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected, _ = unlikelihood_loss(logits, batch["labels"], batch["negative"], 0.5)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5) and loss.requires_grad


def test_preferred_ft_trains_on_the_chosen_tokens_only_and_verbatim(tiny):
    tok, policy, _, tmp = tiny
    assert completion_labels([5, 6], [7, 0]) == [IGNORE, IGNORE, 7, 0]
    data = Dataset.from_dict({"input_ids": [[5, 6, 7, 8, 0]], "labels": [completion_labels([5, 6], [7, 8, 0])]})
    args = SFTConfig(output_dir=str(tmp.mktemp("pft")), report_to=[], bf16=False, gradient_checkpointing=False,
                     max_length=None, per_device_train_batch_size=1)
    trainer = SFTTrainer(model=policy, args=args, train_dataset=data, processing_class=tok)
    row = trainer.train_dataset[0]
    assert row["input_ids"] == [5, 6, 7, 8, 0] and row["labels"] == [IGNORE, IGNORE, 7, 8, 0]  # no EOS added
    # TRL's loss = mean NLL over the 3 completion tokens, as computed independently here
    batch = trainer.data_collator([row])
    with torch.no_grad():
        loss = trainer.compute_loss(policy, batch).item()
    expected = -sequence_logprobs(policy, [[5, 6]], [[7, 8, 0]], 1)[0] / 3
    assert loss == pytest.approx(expected, abs=1e-4)


def test_best_of_n_keeps_the_highest_proxy_score_among_the_first_n():
    scores = [[0.1, 0.9, 0.3, 2.0], [0.5, 0.5, -1.0, 0.4]]
    assert select_best(scores, 1) == [0, 0]
    assert select_best(scores, 2) == [1, 0]  # a tie keeps the first
    assert select_best(scores, 4) == [3, 0]
    with pytest.raises(ValueError, match="needs 5"):
        select_best(scores, 5)


def test_best_of_n_analytic_kl():
    # log N - (N - 1) / N: N = 1 -> 0; N = 4 -> 1.386294 - 0.75; N = 128 -> 4.852030 - 0.992188
    assert analytic_kl(1) == 0.0
    assert analytic_kl(4) == pytest.approx(0.636294, abs=1e-6)
    assert analytic_kl(128) == pytest.approx(3.859842, abs=1e-6)


def test_rloo_reward_is_the_normalised_score_of_the_project_token_ids():
    seen = {}

    def scorer(prompts, completions):
        seen["args"] = (prompts, completions)
        return [1.0, 3.0]

    fn = make_reward_func(scorer, mean=2.0, std=0.5)
    out = fn(prompts=["a", "b"], completions=["x", "y"], completion_ids=[[7], [8, 0]], prompt_ids=[[1], [2]])
    assert out == [-2.0, 2.0] and seen["args"] == ([[1], [2]], [[7], [8, 0]])


@pytest.mark.parametrize("method", ["preferred_ft", "unlikelihood"])
def test_likelihood_methods_train_without_dropout_as_dpo(tiny, monkeypatch, method):
    """The model Preferred-FT and Unlikelihood hand to their trainer has every dropout probability 0, as the DPO
    family's (DPOConfig.disable_dropout): two forward passes in train mode agree."""
    import json

    from baselines import preferred_ft, unlikelihood
    from tests.helpers import compose_cfg

    tok, _, _, tmp = tiny
    root = tmp.mktemp(method)
    torch.manual_seed(2)
    sft = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2))
    assert sft.config.resid_pdrop > 0  # GPT-2's default dropout, which Trainer's train mode would switch on
    sft.save_pretrained(str(root / "sft" / "policy"), safe_serialization=True)
    tok.save_pretrained(str(root / "sft" / "policy"))
    (root / "pairs").mkdir()
    (root / "pairs" / "pairs.jsonl").write_text(json.dumps(EXAMPLE) + "\n")
    cfg = compose_cfg(["experiment=smoke", f"method={method}", f"paths.root={root / 'runs'}",
                       f"paths.sft={root / 'sft'}", f"paths.pairs={root / 'pairs'}", "wandb.mode=disabled"])
    seen = {}

    def fake_train_and_save(trainer, tokenizer, out_dir):
        seen["model"] = trainer.model
        return {}
    module = preferred_ft if method == "preferred_ft" else unlikelihood
    monkeypatch.setattr(module, "train_and_save", fake_train_and_save)
    getattr(module, f"run_{method}")(cfg, root / "out")
    model = seen["model"]
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(p == 0 for p in dropouts)
    model.train()
    ids = torch.tensor([EXAMPLE["prompt_ids"] + EXAMPLE["chosen_ids"]])
    with torch.no_grad():
        first, second = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert torch.equal(first, second)
