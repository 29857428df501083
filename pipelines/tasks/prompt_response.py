"""The prompt-response tasks (task.format=prompt_response: TL;DR summarization, HH dialogue). Their prompts, reference
answers and preference pairs come from the data, where the sentiment task draws prefixes from documents and ranks
its own samples by r*. The shared stages and methods read them through the functions here:

  data stage   train.jsonl (prompt, completion, text: the SFT data; `text` also trains the tokenizer),
               prefs.jsonl (prompt, chosen, rejected), test.jsonl (prompt, reference), ood.jsonl (optional)
  pairs stage  the preference records as token ids with the SFT policy's log-probs of both answers (pairs.jsonl,
               the format every pair-reading method and the reward model read)
  SFT data     (prompt, completion + EOS) examples, the loss on the completion
  prompts      train prompts (the PPO / RLOO pool) and test prompts with their references (Best-of-N, win rates)
They are this format's row of pipelines/tasks/registry.py.

A prompt longer than task.prompt.max_tokens is left out wherever it appears (never cut: a summarization prompt cut
at the end loses its "TL;DR:"), and counted. A completion is cut at task.generation.max_new_tokens; an uncut one
ends with EOS, as the policy's own samples do. With task.prompt.truncation (the HH paper preset) the DPO reference
code's rule applies instead (`fit_lengths`): nothing is left out; a prompt + answer over max_length keeps the
prompt's last max_prompt_length tokens (the end of the dialogue), then the answers are cut to the rest.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

from omegaconf import DictConfig
from tqdm.auto import tqdm

from pipelines.infra.device import pick_device
from pipelines.infra.io import UserError, read_jsonl, write_jsonl
from pipelines.tasks import embedded_text
from pipelines.tasks import preference_data as pdata

log = logging.getLogger(__name__)
FORMAT = "prompt_response"


def is_text_task(cfg: DictConfig) -> bool:
    return cfg.task.get("format", "prefix") == FORMAT


# The markers a prompt ends with for the policy, removed from what the judge is shown.
PROMPT_MARKERS = ("TL;DR:", "Assistant:")


def judge_prompt(prompt: str) -> str:
    """The prompt as the judge reads it: without the trailing "TL;DR:" / "Assistant:" the policy continues from."""
    text = prompt.strip()
    for marker in PROMPT_MARKERS:
        if text.endswith(marker):
            return text[:-len(marker)].rstrip()
    return text


# ---------------------------------------------------------------------------------------------------- data stage
def _cap(rows: list[dict], n: int | None, seed: int, what: str) -> list[dict]:
    rows = list(rows)
    random.Random(f"{seed}-{what}").shuffle(rows)
    return rows[:n] if n else rows


def _summarization(cfg: DictConfig) -> tuple[dict[str, list[dict]], dict]:
    d = cfg.task.data
    if d.source == "embedded":
        rows, stats = embedded_text.load_debian_summaries(cfg.paths.cache, d.embedded_min_words,
                                                          d.embedded_max_words)
        train, test = embedded_text.split_by_group(rows, d.test_fraction, cfg.data_seed)
        sft = [{"prompt": r["prompt"], "completion": r["completion"]} for r in train]
        return {"train": sft, "prefs": embedded_text.mismatched_pairs(sft, cfg.data_seed),
                "test": [{"prompt": r["prompt"], "reference": r["completion"]} for r in test]}, stats
    if d.source == "hf":
        h = d.hf
        load = lambda kind, hf_id, split, config=None: pdata.load_rows(kind, source="hf", hf_id=hf_id,  # noqa: E731
                                                                        hf_config=config, split=split)
        sft_train, sft_test = load("tldr_sft", h.sft, "train"), load("tldr_sft", h.sft, "test")
        comparisons = load("tldr_comparisons", h.comparisons, "train")
        ood = load("cnn_dailymail", h.ood, "test", h.ood_config) if h.ood else None
    elif d.source == "local":
        files = d.local
        missing = [k for k in ("sft_train", "sft_test", "comparisons") if not files.get(k)]
        if missing:
            raise UserError(f"task.data.source=local needs task.data.local.{', '.join(missing)} (files in the "
                            "schemas of the hf datasets of conf/task/summarization.yaml)")
        load = lambda kind, f: pdata.load_rows(kind, source="local", local_files=f)  # noqa: E731
        sft_train, sft_test = load("tldr_sft", files.sft_train), load("tldr_sft", files.sft_test)
        comparisons = load("tldr_comparisons", files.comparisons)
        ood = load("cnn_dailymail", files.ood) if files.get("ood") else None
    else:
        raise UserError(f"task.data.source: unknown source '{d.source}' (embedded, hf or local)")
    prefs, stats = pdata.tldr_comparisons(comparisons)
    test = [{"prompt": r["prompt"], "reference": r["completion"]} for r in pdata.tldr_sft(sft_test)]
    out = {"train": pdata.tldr_sft(sft_train), "prefs": prefs, "test": test}
    if ood is not None:
        out["ood"] = pdata.cnn_dailymail(ood)
    return out, stats


def _dialogue(cfg: DictConfig) -> tuple[dict[str, list[dict]], dict]:
    d = cfg.task.data
    if d.source == "embedded":
        rows, stats = embedded_text.load_chitchat(cfg.paths.cache)
        train, test = embedded_text.split_by_group(rows, d.test_fraction, cfg.data_seed)
        prefs = embedded_text.mismatched_pairs(train, cfg.data_seed)
        test_prefs = [{"prompt": r["prompt"], "chosen": r["completion"]} for r in test]
    else:
        if d.source == "hf":
            train_rows = pdata.load_rows("hh", source="hf", hf_id=d.hf.comparisons, split="train")
            test_rows = pdata.load_rows("hh", source="hf", hf_id=d.hf.comparisons, split="test")
        elif d.source == "local":
            if not d.local.get("comparisons_train") or not d.local.get("comparisons_test"):
                raise UserError("task.data.source=local needs task.data.local.comparisons_train and "
                                "comparisons_test (files with Anthropic/hh-rlhf's chosen, rejected columns)")
            train_rows = pdata.load_rows("hh", source="local", local_files=d.local.comparisons_train)
            test_rows = pdata.load_rows("hh", source="local", local_files=d.local.comparisons_test)
        else:
            raise UserError(f"task.data.source: unknown source '{d.source}' (embedded, hf or local)")
        prefs, stats = pdata.hh(train_rows)
        test_prefs, test_stats = pdata.hh(test_rows, single_turn=d.test_single_turn)
        stats = {**stats, **{f"test_{k}": v for k, v in test_stats.items()}}
    # The reference policy is Preferred-FT on the chosen answers: they are this task's SFT data.
    sft = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in prefs]
    return {"train": sft, "prefs": prefs,
            "test": [{"prompt": r["prompt"], "reference": r["chosen"]} for r in test_prefs]}, stats


def run_data(cfg: DictConfig, out_dir: Path) -> dict:
    d = cfg.task.data
    builders = {"summarization": _summarization, "dialogue": _dialogue}
    if cfg.task.name not in builders:
        raise UserError(f"task '{cfg.task.name}' has format {FORMAT} but no data builder ({sorted(builders)})")
    splits, stats = builders[cfg.task.name](cfg)
    caps = {"train": d.max_sft, "prefs": d.max_pairs, "test": d.max_test, "ood": d.max_test}
    counts = {}
    for name, rows in splits.items():
        rows = _cap(rows, caps[name], cfg.data_seed, name)
        if not rows:
            raise UserError(f"data: the {name} split is empty")
        if name == "train":
            rows = [{**r, "text": r["prompt"] + r["completion"]} for r in rows]
        write_jsonl(out_dir / f"{name}.jsonl", rows)
        counts[f"n_{name}"] = len(rows)
    stats = {**stats, **counts}
    log.info("data: %s", stats)
    return stats


# ------------------------------------------------------------------------------------------------ tokenisation
def encode_prompt(tokenizer, prompt: str) -> list[int]:
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def encode_completion(tokenizer, completion: str, max_tokens: int) -> list[int]:
    """Completion ids ending in EOS, or cut at max_tokens (then without EOS, like a sample that hit the cap)."""
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids[:max_tokens]


def answer_cap(cfg: DictConfig) -> int:
    """Tokens an answer of the data keeps before `fit_lengths`: max_new_tokens, or max_length under truncation."""
    t = cfg.task.prompt.get("truncation")
    return t.max_length if t else cfg.task.generation.max_new_tokens


def fit_lengths(cfg: DictConfig, prompt: list[int], answers: list[list[int]]
                ) -> tuple[list[int], list[list[int]]] | None:
    """A prompt and its answers as training reads them. Without task.prompt.truncation: unchanged, or None for a
    prompt over task.prompt.max_tokens (left out). With it (max_length, max_prompt_length; the DPO reference code's
    rule for HH): if prompt + the longer answer exceed max_length, the prompt keeps its last max_prompt_length
    tokens; if they still do, every answer is cut to max_length - max_prompt_length (losing its EOS)."""
    t = cfg.task.prompt.get("truncation")
    if not t:
        return None if len(prompt) > cfg.task.prompt.max_tokens else (prompt, answers)
    longest = max(len(a) for a in answers)
    if len(prompt) + longest > t.max_length:
        prompt = prompt[-t.max_prompt_length:]
    if len(prompt) + longest > t.max_length:
        answers = [a[:t.max_length - t.max_prompt_length] for a in answers]
    return prompt, answers


def sft_examples(cfg: DictConfig, tokenizer, split: str) -> tuple[list[dict], int]:
    """SFT examples (input_ids, labels: -100 on the prompt, or on nothing when task.sft.completion_only_loss is
    off) from train.jsonl / a held-out slice of it. Returns (examples, prompts left out as too long)."""
    rows = read_jsonl(Path(cfg.paths.data) / "train.jsonl")
    n_held = max(1, min(len(rows) // 20, 500))  # held-out SFT loss: the last 5 % of the (shuffled) rows
    rows = rows[-n_held:] if split == "test" else rows[:-n_held]
    only = cfg.task.sft.completion_only_loss
    out, too_long = [], 0
    for r in rows:
        fitted = fit_lengths(cfg, encode_prompt(tokenizer, r["prompt"]),
                             [encode_completion(tokenizer, r["completion"], answer_cap(cfg))])
        if fitted is None:
            too_long += 1
            continue
        p, (c,) = fitted
        out.append({"input_ids": p + c, "labels": ([-100] * len(p) if only else p) + c})
    if not out:
        raise UserError(f"sft: no {split} example has a prompt of <= task.prompt.max_tokens="
                        f"{cfg.task.prompt.max_tokens} tokens")
    return out, too_long


def sft_data(cfg: DictConfig, tokenizer, model) -> tuple:
    """(train, test, extra metrics, max_length) of the SFT stage: the `sft_examples` as datasets, each checked
    against the model's context (max_length None: the examples are not cut)."""
    from datasets import Dataset

    from pipelines.lm.models import context_length

    (train, too_long), (test, _) = (sft_examples(cfg, tokenizer, split) for split in ("train", "test"))
    longest = max(len(x["input_ids"]) for x in train + test)
    if longest > context_length(model):
        raise UserError(f"sft: an example of {longest} tokens exceeds the model's context "
                        f"{context_length(model)}; lower task.prompt.max_tokens or max_new_tokens")
    train, test = Dataset.from_list(train), Dataset.from_list(test)
    return train, test, {"n_prompt_too_long": too_long, "train_examples": len(train)}, None


def _fitting(cfg: DictConfig, tokenizer, rows: list[dict], n: int | None, what: str) -> list[dict]:
    # News articles are longer than posts: the out-of-distribution split may have a cap of its own.
    key = "ood_max_tokens" if what == "ood" and cfg.task.prompt.get("ood_max_tokens") else "max_tokens"
    cap = cfg.task.prompt[key]
    t = cfg.task.prompt.get("truncation")
    out = []
    for r in rows:
        ids = encode_prompt(tokenizer, r["prompt"])
        if t and len(ids) + cfg.task.generation.max_new_tokens > t.max_length:
            ids = ids[-t.max_prompt_length:]  # the reference code's rule, with the sample's room as the answer
        if len(ids) <= cap:
            out.append({**r, "prompt_ids": ids})
            if n and len(out) == n:
                return out
    if n and len(out) < n:
        raise UserError(f"asked for {n} {what} prompts but only {len(out)} have <= task.prompt.{key}={cap} tokens; "
                        "lower the count or raise the cap")
    return out


def train_prompts(cfg: DictConfig, tokenizer, n: int) -> list[list[int]]:
    """The first n train prompts that fit (the prompt pool of PPO and RLOO; the SFT data's prompts)."""
    return [r["prompt_ids"] for r in _fitting(cfg, tokenizer, read_jsonl(Path(cfg.paths.data) / "train.jsonl"), n,
                                              "train")]


def eval_rows(cfg: DictConfig, tokenizer, n: int, split: str = "test") -> list[dict]:
    """The first n held-out rows that fit: prompt, reference, prompt_ids. The same for every method and seed."""
    path = Path(cfg.paths.data) / f"{split}.jsonl"
    if not path.exists():
        raise UserError(f"{path} does not exist (the task's data has no {split} split)")
    return _fitting(cfg, tokenizer, read_jsonl(path), n, split)


def held_out_prompts(cfg: DictConfig, tokenizer) -> tuple[list[list[int]], list[str]]:
    """Best-of-N's prompts and the split of each: the first win-rate test prompts (method.n_prompts may cap them)."""
    rows = eval_rows(cfg, tokenizer, cfg.method.n_prompts or cfg.task.winrate.n_prompts)
    return [r["prompt_ids"] for r in rows], ["test"] * len(rows)


def winrate_references(cfg: DictConfig, tokenizer, n: int, split: str = "test"
                       ) -> tuple[list[list[int]], list[dict]]:
    """The first n held-out prompts of `split` that fit (token ids) and, for each, the data's reference answer with
    the prompt as the judge reads it: what every method is judged against."""
    rows = eval_rows(cfg, tokenizer, n, split)
    return [r["prompt_ids"] for r in rows], [{"prompt": judge_prompt(r["prompt"]), "completion": r["reference"]}
                                             for r in rows]


def few_shot_prefix(cfg: DictConfig, tokenizer, shots: int) -> list[int]:
    """Token ids of `shots` worked examples (prompt + answer of the first SFT rows that fit, each ending with a blank
    line), written before a base model's prompt. They must leave room for the prompt and the answer."""
    rows = read_jsonl(Path(cfg.paths.data) / "train.jsonl")
    budget = cfg.task.prompt.max_tokens
    out: list[int] = []
    used = 0
    for r in rows:
        # HH prompts start with their own blank line ("\n\nHuman:"); a TL;DR post needs one after the example.
        gap = "" if r["prompt"].startswith("\n") else "\n\n"
        ids = encode_prompt(tokenizer, r["prompt"] + r["completion"] + gap)
        if len(ids) <= budget // (shots + 1):
            out += ids
            used += 1
            if used == shots:
                return out
    raise UserError(f"method.shots={shots}: found only {used} SFT examples short enough "
                    f"(<= task.prompt.max_tokens / (shots + 1) = {budget // (shots + 1)} tokens each)")


# --------------------------------------------------------------------------------------------------- pairs stage
def run_pairs(cfg: DictConfig, out_dir: Path) -> dict:
    """The data's preference pairs as token ids, with log pi_SFT of both answers (computed once, here, under the
    precision DPO trains in; see the pairs stage, pipelines/stages/pairs.py). Resumable by chunk."""
    from pipelines.lm.models import load_policy, load_tokenizer
    from pipelines.lm.sampling import reference_logps

    p = cfg.task.pairs
    sft_dir = Path(cfg.paths.sft) / "policy"
    tokenizer = load_tokenizer(sft_dir)
    rows = read_jsonl(Path(cfg.paths.data) / "prefs.jsonl")
    encoded, too_long, same = [], 0, 0
    for r in rows:
        fitted = fit_lengths(cfg, encode_prompt(tokenizer, r["prompt"]),
                             [encode_completion(tokenizer, r[k], answer_cap(cfg)) for k in ("chosen", "rejected")])
        if fitted is None:
            too_long += 1
            continue
        prompt, (chosen, rejected) = fitted
        if chosen == rejected:  # identical once cut to the length cap
            same += 1
            continue
        encoded.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
        if p.n_pairs and len(encoded) == p.n_pairs:
            break
    if not encoded:
        raise UserError(f"pairs: no preference pair has a prompt of <= task.prompt.max_tokens="
                        f"{cfg.task.prompt.max_tokens} tokens")
    device = pick_device(cfg.device)
    policy = load_policy(sft_dir, device)
    chunk_dir = out_dir / "chunks"
    chunk_dir.mkdir(exist_ok=True)
    starts = range(0, len(encoded), p.chunk_size)
    for c, start in enumerate(tqdm(starts, desc="pairs: reference log-probs")):
        path = chunk_dir / f"{c:05d}.jsonl"
        if path.exists():
            continue
        chunk = encoded[start:start + p.chunk_size]
        prompts = [x["prompt_ids"] for x in chunk for _ in range(2)]
        answers = [y for x in chunk for y in (x["chosen_ids"], x["rejected_ids"])]
        logps = reference_logps(cfg, policy, prompts, answers)
        write_jsonl(path, [{**x, "ref_chosen_logps": logps[2 * i], "ref_rejected_logps": logps[2 * i + 1]}
                           for i, x in enumerate(chunk)])
    pairs = [r for c in range(len(starts)) for r in read_jsonl(chunk_dir / f"{c:05d}.jsonl")]
    write_jsonl(out_dir / "pairs.jsonl", pairs)
    eos = tokenizer.eos_token_id
    stats = {"n_pairs": len(pairs), "n_prompt_too_long": too_long, "n_identical_after_cut": same,
             "mean_prompt_tokens": round(sum(len(x["prompt_ids"]) for x in pairs) / len(pairs), 2),
             "mean_chosen_tokens": round(sum(len(x["chosen_ids"]) for x in pairs) / len(pairs), 2),
             "mean_rejected_tokens": round(sum(len(x["rejected_ids"]) for x in pairs) / len(pairs), 2),
             "chosen_cut_fraction": round(sum(x["chosen_ids"][-1] != eos for x in pairs) / len(pairs), 4),
             "sft_logp_margin": round(sum(x["ref_chosen_logps"] - x["ref_rejected_logps"] for x in pairs)
                                      / len(pairs), 4)}
    log.info("pairs: %s", stats)
    return stats
