"""Sampling from a policy and scoring sequences under a policy: the two operations every stage that touches
KL shares (pairs, evaluation, later PPO), so they are written once.

Samples come from the policy's full distribution: temperature 1 by default, no top-k, no top-p, no EOS masking.
(transformers samples with top-k 50 unless told otherwise; the samples would then not come from pi and the KL
estimate E_{y~pi}[log pi(y) - log pi_ref(y)] would be wrong.)
"""
from __future__ import annotations

import hashlib

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm
from transformers import GenerationConfig

from pipelines.infra.cost_meter import add_generated, current, flop_params
from pipelines.infra.device import inference_autocast, use_bf16
from pipelines.infra.distributed import is_sharded
from pipelines.lm import vllm_engine
from pipelines.numerics.logprobs import gather_logprobs


def full_distribution_config(max_new_tokens: int, eos_id: int, pad_id: int, temperature: float = 1.0
                             ) -> GenerationConfig:
    """Ancestral sampling from softmax(logits / temperature) with every truncation switched off; temperature 0 is
    greedy decoding (the win-rate sweep's T = 0)."""
    if temperature == 0:
        return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos_id,
                                pad_token_id=pad_id, bos_token_id=None, min_new_tokens=0, repetition_penalty=1.0,
                                no_repeat_ngram_size=0)
    return GenerationConfig(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, min_p=None,
                            typical_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
                            max_new_tokens=max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id,
                            bos_token_id=None)


def batch_seed(seed: int, tag: str, index: int) -> int:
    """A seed per (run seed, purpose, batch index): resumed and uninterrupted runs draw the same samples."""
    return int(hashlib.sha256(f"{seed}/{tag}/{index}".encode()).hexdigest()[:8], 16)


def _left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def right_pad(seqs: list[list[int]], pad_id: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both (B, max length), sequences left-aligned: positions match an unpadded forward
    without position ids, and a sequence classifier finds each sequence's last token before the padding."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def sample_completions(model, prompts: list[list[int]], *, max_new_tokens: int, eos_id: int, pad_id: int,
                       batch_size: int, seed: int, tag: str = "sample", temperature: float = 1.0,
                       desc: str | None = None) -> list[list[int]]:
    """One completion per prompt (repeat prompts for several). Each completion ends at its first EOS (kept) or
    at max_new_tokens (no EOS). Returns token ids without padding. With task.generation.backend=vllm, vLLM samples
    (pipelines/vllm_engine.py) from the model's current weights, one seed per prompt."""
    if vllm_engine.active():
        out = vllm_engine.engine_for(model).sample(
            prompts, max_new_tokens=max_new_tokens, eos_id=eos_id, temperature=temperature,
            seeds=[batch_seed(seed, tag, i) for i in range(len(prompts))])
        cost = current()
        if cost is not None:  # prefill + one position per generated token, as the KV-cached passes below count
            cost.add_pass(sum(len(p) + len(c) for p, c in zip(prompts, out)), flop_params(model), train=False)
        for c in out:
            add_generated(len(c))
        return out
    device = next(model.parameters()).device
    gen_cfg = full_distribution_config(max_new_tokens, eos_id, pad_id, temperature)
    # A model sharded over the processes (PPO under an FSDP launch) runs collectives in every forward pass: each
    # process keeps stepping until all are done (callers give every process the same number of prompts).
    synced = is_sharded(model)
    was_training = model.training
    model.eval()  # dropout off: samples must come from the same function that is scored
    out: list[list[int]] = []
    starts = range(0, len(prompts), batch_size)
    for b, start in enumerate(tqdm(starts, desc=desc, disable=desc is None, leave=False)):
        batch = prompts[start:start + batch_size]
        ids, mask = _left_pad(batch, pad_id, device)
        torch.manual_seed(batch_seed(seed, tag, b))
        with inference_autocast(device):
            gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg, synced_gpus=synced)
        for row in gen[:, ids.shape[1]:].tolist():
            out.append(row[:row.index(eos_id) + 1] if eos_id in row else row)
            add_generated(len(out[-1]))
    model.train(was_training)
    return out


def completion_token_logprobs(model, prompts: list[list[int]], completions: list[list[int]]) -> list[torch.Tensor]:
    """Per-token log pi(y_t | x, y_<t) for each completion (float32, on the model's device), with gradient if the
    model has it. Sequences are right-padded, so positions match an unpadded forward."""
    device = next(model.parameters()).device
    # Any pad id works: padding sits after every real token and is masked.
    ids, mask = right_pad([p + c for p, c in zip(prompts, completions)], 0, device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    # Shape (B, T-1): log-prob of token t+1 given tokens <= t.
    logps = gather_logprobs(logits, ids[:, 1:])
    return [logps[i, len(p) - 1:len(p) - 1 + len(c)] for i, (p, c) in enumerate(zip(prompts, completions))]


@torch.no_grad()
def sequence_logprobs(model, prompts: list[list[int]], completions: list[list[int]], batch_size: int,
                      desc: str | None = None) -> list[float]:
    """log pi(y | x) = sum over completion tokens (EOS included when sampled) for each (prompt, completion)."""
    was_training = model.training
    model.eval()
    out: list[float] = []
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=desc is None, leave=False):
        with inference_autocast(device):
            per_token = completion_token_logprobs(model, prompts[start:start + batch_size],
                                                  completions[start:start + batch_size])
        out += [float(t.sum()) for t in per_token]
    model.train(was_training)
    return out


def reference_logps(cfg: DictConfig, policy, prompts: list[list[int]], completions: list[list[int]]) -> list[float]:
    """log pi_SFT(completion | prompt) in the precision DPO trains in (bf16 autocast where the preset trains in
    bf16), so that at the first step the policy's and the stored reference's log-probs cancel as they would in TRL's
    own reference pass."""
    device = next(policy.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(cfg.model.precision, device)):
        return sequence_logprobs(policy, prompts, completions, cfg.task.generation.batch_size)
