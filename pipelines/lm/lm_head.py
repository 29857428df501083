"""Dense next-token log-probs for TRL's trainers, for small vocabularies on CPU.

TRL (>= 1.14) patches every model it trains (SFT, DPO and its variants, RLOO) with a "fused LM head": called with
`fused_lm_head=True`, the forward returns per-token log-probs (and entropy, top-1 flags...) computed in vocabulary
tiles, so the (tokens x vocab) logits are never materialised. That saves GPU memory at a 50k vocabulary, but on a
CPU (no Triton) TRL runs the tiles as a torch fallback that scores every position (padding and prompt included),
recomputes the projection in the backward pass and accumulates both gradients in fp32: measured here it was about
a third of a DPO step of the embedded model (4x192, vocab 2,048, bf16 autocast).

`use_dense_logits(model)` replaces that forward with one that keeps TRL's contract (a `FusedCausalLMOutput` with
the same fields, zero where the label is -100, the same loss normalisation) but projects only the scored positions,
once, under the trainer's autocast, and takes the log-softmax of those logits in fp32 with autograd. The logits of
the scored tokens are materialised: tokens x vocab x 4 bytes (21 MB for a DPO batch of the embedded model; 512 MB
for 2,560 tokens at GPT-2's 50k vocabulary), so it is meant for small vocabularies (`model.dense_logits`); the
paper presets keep TRL's kernel. Models with logit soft-capping, logit scaling or MoE routers are refused.

Left padding: a causal LM called without `position_ids` numbers positions from the first column, padding included,
so a left-padded row is scored by a shifted model (GPT-2: six pad columns moved the SFT policy's per-token log-probs
by up to 0.37 nats), while `generate` numbers them from the attention mask. The dense forward derives them from the
mask the same way when none are given (`mask_position_ids`), and `use_mask_positions` does so for any forward
(TRL's fused head included), for trainers that left-pad (RLOO, baselines/rloo.py)."""
from __future__ import annotations

import functools
import types

import torch
from trl.trainer.utils import FusedCausalLMOutput

from pipelines.numerics.logprobs import entropy, gather_logprobs

_UNSUPPORTED = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                "logits_scaling")


def _check_supported(model) -> None:
    text_config = model.config.get_text_config()
    odd = [k for k in _UNSUPPORTED if getattr(text_config, k, None) is not None]
    if getattr(text_config, "output_router_logits", False):
        odd.append("output_router_logits")
    if odd:
        raise ValueError(f"dense logits support plain LM heads only; {type(model).__name__} sets {odd}: "
                         "set model.dense_logits=false to keep TRL's fused LM head")


def mask_position_ids(attention_mask: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """Positions counted over the attended tokens, cumsum(mask) - 1 clamped at 0 (padding columns get 0 on the left,
    the last position on the right; they are masked anyway): the positions `generate` uses. `length` keeps the last
    columns only (a call whose earlier tokens are in a KV cache)."""
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return positions if length is None else positions[:, -length:]


def _fill_position_ids(args: tuple, kwargs: dict) -> None:
    """Set kwargs["position_ids"] from a 2-D kwargs["attention_mask"] when the call gives no position ids."""
    mask = kwargs.get("attention_mask")
    if kwargs.get("position_ids") is not None or not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return
    tokens = kwargs.get("input_ids", args[0] if args else None)
    if tokens is None:
        tokens = kwargs.get("inputs_embeds")
    kwargs["position_ids"] = mask_position_ids(mask, None if tokens is None else tokens.shape[1])


def use_mask_positions(model) -> None:
    """Make every forward of `model` (in place) that has a 2-D attention mask but no position ids take its position
    ids from the mask, whatever forward is installed now (the model's own, TRL's fused head, the dense one). Calls
    that give position ids (`generate` does) are unchanged; the signature is kept, as `generate` inspects it."""
    inner = model.forward

    @functools.wraps(type(model).forward)
    def forward(self, *args, **kwargs):
        _fill_position_ids(args, kwargs)
        return inner(*args, **kwargs)

    model.forward = types.MethodType(forward, model)


ALL_OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def token_stats(hidden: torch.Tensor, lm_head: torch.nn.Module, targets: torch.Tensor, temperature: float = 1.0,
                outputs: tuple[str, ...] = ALL_OUTPUTS) -> dict[str, torch.Tensor]:
    """Per-token statistics of the next-token distribution at each row of `hidden` (n, d) for `targets` (n,):
    log_probs (with gradient) and, as asked in `outputs`, entropy, log_sum_sq_probs, mean_logits, is_top1
    (without gradient: TRL's SFT, DPO and RLOO trainers only log them).

    The projection runs in the ambient autocast dtype, the softmax in fp32."""
    z = lm_head(hidden).float()
    if temperature != 1.0:
        z = z / temperature
    log_probs, log_p = gather_logprobs(z, targets, full=True)
    out = {"log_probs": log_probs}
    with torch.no_grad():
        if "entropy" in outputs:
            out["entropy"] = entropy(log_p)
        if "log_sum_sq_probs" in outputs:
            out["log_sum_sq_probs"] = torch.logsumexp(2 * log_p, dim=-1)
        if "mean_logits" in outputs:
            out["mean_logits"] = z.mean(-1)
        if "is_top1" in outputs:
            # argmax returns the first maximum: a tie with an earlier token is not a top-1 prediction (as in TRL)
            out["is_top1"] = z.argmax(-1) == targets
    return out


def use_dense_logits(model, temperature: float = 1.0, outputs: tuple[str, ...] = ALL_OUTPUTS) -> None:
    """Replace TRL's fused-LM-head forward of `model` (in place) by the dense one, computing the per-token fields
    in `outputs` (the others are None, as in TRL); plain calls are unchanged."""
    _check_supported(model)
    plain_forward = model.forward  # TRL's patched forward: without fused_lm_head it is the model's own

    @functools.wraps(type(model).forward)
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None,
                **kwargs):
        if not fused_lm_head:
            return plain_forward(*args, labels=labels, shift_labels=shift_labels,
                                 num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        _fill_position_ids(args, kwargs)  # a left-padded batch is scored at the positions it was sampled at
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        lm_head = self.get_output_embeddings()
        hidden, labels = hidden.to(lm_head.weight.device), labels.to(lm_head.weight.device)
        mask = labels != -100
        stats = token_stats(hidden[mask], lm_head, labels[mask], temperature, outputs)
        # Back to (batch, positions), zero where the label is -100; masked_scatter keeps an all-masked batch
        # connected to the graph (a differentiable zero), as TRL does.
        full = {k: torch.zeros(mask.shape, dtype=v.dtype, device=mask.device).masked_scatter(mask, v)
                for k, v in stats.items()}
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-full["log_probs"].sum() / denominator, label_mask=mask, **full)

    model.forward = types.MethodType(forward, model)


def apply_to_trainer(trainer, enabled: bool) -> None:
    """After a TRL trainer has patched its models: switch the policy (and a reference model, if any) to dense
    logits when `enabled` (the model config's `dense_logits`). The fields are those TRL's SFT, DPO and RLOO
    trainers read (log_sum_sq_probs only for DPO's WPO weighting); the reference model gives log-probs only. The
    temperature is the trainer's (RLOO scores at args.temperature, the others at 1)."""
    if not enabled:
        return
    temperature = float(getattr(trainer, "temperature", 1.0) or 1.0)
    fields = ("log_probs", "entropy", "mean_logits", "is_top1")
    if getattr(trainer, "use_weighting", False):
        fields += ("log_sum_sq_probs",)
    use_dense_logits(trainer.model, temperature, fields)
    if getattr(trainer, "ref_model", None) is not None:
        use_dense_logits(trainer.ref_model, temperature, ("log_probs",))
