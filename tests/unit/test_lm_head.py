"""Dense logits (pipelines/lm/lm_head.py) against TRL's fused LM head: the same per-token fields, loss and gradients,
and the same training through TRL's DPO and SFT trainers."""
import copy

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel
from trl import DPOConfig, SFTConfig, SFTTrainer
from trl.trainer.utils import add_fused_lm_head

from pipelines.dpo import SampledTokenDPOTrainer
from pipelines.lm.lm_head import ALL_OUTPUTS, apply_to_trainer, use_dense_logits
from pipelines.lm.models import train_tokenizer

VOCAB = 61


def tiny_model(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                      resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)).eval()


def pair(temperature: float = 1.0):
    """The same weights twice: TRL's fused head, and TRL's patch replaced by the dense one."""
    fused = tiny_model()
    dense = copy.deepcopy(fused)
    add_fused_lm_head(fused, temperature=temperature, outputs=ALL_OUTPUTS)
    add_fused_lm_head(dense, temperature=temperature, outputs=ALL_OUTPUTS)
    use_dense_logits(dense, temperature, ALL_OUTPUTS)
    return fused, dense


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (3, 9), generator=g)
    attn = torch.ones_like(ids)
    attn[1, 6:] = 0  # right padding
    labels = ids.masked_fill(attn == 0, -100)
    labels[:, :3] = -100  # a prompt
    return ids, attn, labels


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_fields_loss_and_gradients_match_trl(temperature):
    fused, dense = pair(temperature)
    ids, attn, labels = batch()
    weights = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    outs = {}
    for name, model in (("fused", fused), ("dense", dense)):
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True)
        # A loss through both log_probs and the mean NLL, as the trainers use them.
        ((out.log_probs * weights).sum() + out.loss).backward()
        outs[name] = (out, {n: p.grad.clone() for n, p in model.named_parameters()})
    (f, f_grad), (d, d_grad) = outs["fused"], outs["dense"]
    assert torch.equal(f.label_mask, d.label_mask)
    for field in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits"):
        assert getattr(d, field).shape == getattr(f, field).shape == (3, 8)
        torch.testing.assert_close(getattr(d, field), getattr(f, field), atol=1e-5, rtol=1e-5, msg=field)
    assert torch.equal(d.is_top1, f.is_top1)
    assert (d.log_probs[~d.label_mask] == 0).all()
    torch.testing.assert_close(d.loss, f.loss, atol=1e-6, rtol=1e-6)
    for n in f_grad:
        torch.testing.assert_close(d_grad[n], f_grad[n], atol=1e-5, rtol=1e-4, msg=n)


def test_shift_labels_and_num_items_in_batch():
    fused, dense = pair()
    ids, attn, labels = batch()
    shifted = torch.cat([labels[:, 1:], torch.full((3, 1), -100)], 1)
    kw = dict(input_ids=ids, attention_mask=attn, shift_labels=shifted, num_items_in_batch=torch.tensor(7),
              fused_lm_head=True)
    f, d = fused(**kw), dense(**kw)
    assert d.log_probs.shape == (3, 9)
    torch.testing.assert_close(d.log_probs, f.log_probs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d.loss, -d.log_probs.sum() / 7)


def test_all_masked_batch_is_a_differentiable_zero():
    _, dense = pair()
    ids, attn, _ = batch()
    out = dense(input_ids=ids, attention_mask=attn, labels=torch.full_like(ids, -100), fused_lm_head=True)
    assert float(out.loss.detach()) == 0.0
    out.loss.backward()  # connected to the graph: no error


def test_plain_calls_are_unchanged():
    plain = tiny_model()
    _, dense = pair()
    ids, attn, labels = batch()
    torch.testing.assert_close(dense(input_ids=ids, attention_mask=attn).logits,
                               plain(input_ids=ids, attention_mask=attn).logits)
    torch.testing.assert_close(dense(input_ids=ids, attention_mask=attn, labels=labels).loss,
                               plain(input_ids=ids, attention_mask=attn, labels=labels).loss)


def test_only_the_asked_fields_are_computed():
    model = tiny_model()
    use_dense_logits(model, 1.0, ("log_probs", "entropy"))
    ids, attn, labels = batch()
    out = model(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True)
    assert out.entropy is not None and out.is_top1 is None and out.mean_logits is None
    assert out.log_sum_sq_probs is None


def test_softcapped_heads_are_refused():
    model = tiny_model()
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="dense_logits=false"):
        use_dense_logits(model)


def test_apply_to_trainer_reads_temperature_and_patches_the_reference():
    class Stub:
        temperature, use_weighting = 0.5, False

    stub = Stub()
    stub.model, stub.ref_model = tiny_model(), tiny_model(1)
    ids, attn, labels = batch()
    before = stub.model(input_ids=ids, attention_mask=attn).logits
    apply_to_trainer(stub, enabled=False)
    assert stub.model.forward.__func__ is type(stub.model).forward  # untouched when disabled
    apply_to_trainer(stub, enabled=True)
    out = stub.model(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True)
    expected = torch.log_softmax(before[:, :-1] / 0.5, -1).gather(-1, ids[:, 1:, None].clamp(min=0)).squeeze(-1)
    torch.testing.assert_close(out.log_probs[out.label_mask], expected[out.label_mask], atol=1e-5, rtol=1e-5)
    ref_out = stub.ref_model(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True)
    assert ref_out.entropy is None  # the reference gives log-probs only


def _train(trainer_fn, dense: bool) -> list[float]:
    trainer = trainer_fn()
    apply_to_trainer(trainer, dense)
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_dpo_and_sft_train_the_same_with_dense_logits(tmp_path):
    tok = train_tokenizer(["a good film and a bad one", "fine words here"] * 20, 300, 1)
    g = torch.Generator().manual_seed(3)

    def ids(n):
        return [int(x) for x in torch.randint(1, len(tok), (n,), generator=g)]
    pairs = Dataset.from_dict({"prompt_ids": [ids(3) for _ in range(16)], "chosen_ids": [ids(5) for _ in range(16)],
                               "rejected_ids": [ids(4) for _ in range(16)],
                               "ref_chosen_logps": [-30.0] * 16, "ref_rejected_logps": [-25.0] * 16})
    blocks = Dataset.from_dict({"input_ids": [ids(12) for _ in range(16)]})
    common = dict(report_to=[], bf16=False, gradient_checkpointing=False, per_device_train_batch_size=4,
                  max_steps=4, logging_steps=1, save_strategy="no", learning_rate=1e-3, disable_tqdm=True,
                  dataloader_pin_memory=False)

    def model():
        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2))

    def dpo():
        return SampledTokenDPOTrainer(model=model(), ref_model=None, train_dataset=pairs, processing_class=tok,
                                      args=DPOConfig(output_dir=str(tmp_path / "dpo"), beta=0.1,
                                                     precompute_ref_log_probs=True, **common))

    def sft():
        return SFTTrainer(model=model(), train_dataset=blocks, processing_class=tok,
                          args=SFTConfig(output_dir=str(tmp_path / "sft"), max_length=None, packing=False, **common))
    for make in (dpo, sft):
        fused, dense = _train(make, False), _train(make, True)
        assert len(fused) == 4 and fused[0] != fused[-1]
        assert dense == pytest.approx(fused, rel=1e-4), make.__name__


def test_entropy_is_exact_and_stays_fp32_under_autocast():
    from pipelines.lm.lm_head import entropy

    log_p = torch.log_softmax(torch.randn(4, 7, 300, generator=torch.Generator().manual_seed(0)) * 3, -1)
    expected = -(log_p.exp() * log_p).sum(-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = entropy(log_p)
    assert got.dtype == torch.float32 and got.shape == (4, 7)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_dense_path_scores_a_left_padded_batch_as_the_unpadded_sequences():
    """Without position ids, GPT-2 would number a left-padded row's positions from its first pad column; the dense
    forward takes them from the attention mask (as generate does), so padding does not change a log-prob."""
    from pipelines.lm.lm_head import use_mask_positions

    rows = [[3, 9, 14, 8, 15, 3, 19], [7, 3, 11, 20, 8, 6, 22, 6, 9, 2], [12, 4, 17, 4, 4, 18]]
    completion = 3  # the last 3 tokens of each row are scored
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    attn = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    labels = ids.clone()
    labels[:, :-completion] = -100

    def model():
        m = tiny_model()
        with torch.no_grad():  # position embeddings large enough for a shift to show
            m.transformer.wpe.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(4))
        add_fused_lm_head(m, outputs=ALL_OUTPUTS)
        return m
    dense, fused, masked = model(), model(), model()
    use_dense_logits(dense)
    use_mask_positions(masked)  # TRL's fused head, position ids from the mask (what RLOO trains with)

    def completion_logps(m, ids, attn, labels):
        with torch.no_grad():
            return m(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True).log_probs[:, -completion:]
    for m, ok in ((dense, True), (masked, True), (fused, False)):
        batched = completion_logps(m, ids, attn, labels)
        for i, r in enumerate(rows):
            one = torch.tensor([r])
            alone = completion_logps(m, one, torch.ones_like(one), one.masked_fill(torch.arange(len(r)) <
                                                                                    len(r) - completion, -100))
            gap = float((batched[i] - alone[0]).abs().max())
            if ok:
                assert gap < 1e-5, i
            elif i != 1:  # TRL's forward alone: padded rows are scored by a shifted model (row 1 has no padding)
                assert gap > 1e-2, i
