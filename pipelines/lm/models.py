"""Tokenizer and policy construction/loading, one code path for both scales.

Embedded: a byte-level BPE tokenizer trained on the train text and a GPT-2-style model built from config.
Paper: a pretrained Hub model (gpt2-large) and its tokenizer. Models load as safetensors, remote code off.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from pipelines.infra.cost_meter import meter
from pipelines.infra.hub import loaded, revision_of
from pipelines.infra.io import hub_hint

EOS = "<|endoftext|>"

# Attention kernel of every model this process builds or loads (model.attn_implementation; None = transformers'
# default, sdpa). Set once per process by the entry point, like the torch thread count; transformers does not save it
# with the model, so each load passes it.
_ATTN: dict[str, str | None] = {"impl": None}


def set_attn_implementation(name: str | None) -> None:
    _ATTN["impl"] = name


def attn_kwargs() -> dict:
    """from_pretrained / config keyword for the chosen attention kernel (empty: transformers' default)."""
    return {"attn_implementation": _ATTN["impl"]} if _ATTN["impl"] else {}


def train_tokenizer(texts: list[str], vocab_size: int, min_frequency: int) -> PreTrainedTokenizerFast:
    """GPT-2-style byte-level BPE trained on `texts`; EOS doubles as pad (there is no padding in the training text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=EOS)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    revision = revision_of(str(path))
    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, revision=revision)
    except (OSError, ValueError) as err:
        raise hub_hint(str(path), err, revision) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # Left padding for generation; not persisted by save_pretrained, so set on every load.
    tok.padding_side = "left"
    return tok


def build_policy(model_cfg: DictConfig, tokenizer) -> torch.nn.Module:
    """The model SFT starts from: built from `arch` (from scratch) or loaded from `pretrained`."""
    if model_cfg.pretrained:
        return load_policy(model_cfg.pretrained)
    a = model_cfg.arch
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=a.n_positions, n_embd=a.n_embd, n_layer=a.n_layer,
                        n_head=a.n_head, activation_function=a.get("activation", "gelu_new"),
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, **attn_kwargs())
    return meter(GPT2LMHeadModel(config))


def load_policy(path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """Load a causal LM (safetensors only, no remote code) in eval mode (dropout off); a Hub id at its pinned
    revision (conf/hub_revisions.yaml)."""
    revision = revision_of(str(path))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, trust_remote_code=False,
                                                     dtype=dtype, revision=revision, **attn_kwargs())
    except (OSError, ValueError) as err:
        raise hub_hint(str(path), err, revision) from None
    loaded(str(path), getattr(model.config, "_commit_hash", None))
    return meter(model.to(device).eval())


def context_length(model) -> int:
    return int(getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 1024))
