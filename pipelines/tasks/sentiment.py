"""The sentiment task (task.format=prefix; paper: IMDb, GPT-2 large). Its documents are labelled reviews, its prompts
are their first few tokens (pipelines/tasks/prefixes.py), its r* a classifier of the documents
(pipelines/tasks/gold_reward.py), and its preference pairs are the SFT policy's own samples ranked by r*. The shared
stages and methods read it through the functions here (pipelines/tasks/registry.py):

  data stage   train.jsonl, validation.jsonl, test.jsonl: documents (text, label, corpus)
  pairs stage  k SFT samples per train prefix, every pair of them ordered by r* (pairs.jsonl), and the same on
               validation and test prefixes (the learned reward model's selection and accuracy)
  SFT data     the documents joined with EOS and cut into blocks
  prompts      train prefixes (the PPO / RLOO pool), the evaluation prefixes (Best-of-N), and the SFT policy's
               evaluation samples as the win-rate references
"""
from __future__ import annotations

import itertools
import logging
from collections import Counter
from pathlib import Path

import torch
from datasets import Dataset
from omegaconf import DictConfig
from tqdm.auto import tqdm

from pipelines.infra.device import pick_device
from pipelines.infra.io import UserError, read_jsonl, write_jsonl
from pipelines.lm.models import context_length, load_policy, load_tokenizer
from pipelines.lm.sampling import reference_logps, sample_completions
from pipelines.tasks.data import load_split, read_embedded, read_hf, read_local, split_docs, split_validation
from pipelines.tasks.gold_reward import load as load_classifier
from pipelines.tasks.prefixes import eval_prompts, make_prefixes, test_prompts

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- data stage
def run_data(cfg: DictConfig, out_dir: Path) -> dict:
    """Read the corpus, split it into train / validation / test, write data/."""
    d = cfg.task.data
    if d.source == "embedded":
        train, test = split_docs(read_embedded(cfg.paths.cache, list(d.embedded_corpora)), d.test_fraction,
                                 cfg.data_seed, d.max_docs)
    elif d.source == "local":
        train, test = split_docs(read_local(d.local_files), d.test_fraction, cfg.data_seed, d.max_docs)
    elif d.source == "hf":
        splits = read_hf(d.hf_id)
        if "test" in splits:  # keep the dataset's own split (IMDb: 25k/25k)
            train, test = splits["train"], splits["test"]
            if d.max_docs:
                train, test = train[:d.max_docs], test[:d.max_docs]
        else:
            train, test = split_docs(splits["train"], d.test_fraction, cfg.data_seed, d.max_docs)
    else:
        raise UserError(f"task.data.source: unknown source '{d.source}' (embedded, hf or local)")
    validation, test = split_validation(test, d.get("validation_fraction") or 0.0, cfg.data_seed)
    if len(train) < 2 or len(test) < 1:
        raise UserError(f"too few documents after the split: {len(train)} train, {len(test)} test")
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "validation.jsonl", validation)
    write_jsonl(out_dir / "test.jsonl", test)
    stats = {"n_train": len(train), "n_validation": len(validation), "n_test": len(test),
             "train_by_corpus": dict(Counter(x["corpus"] for x in train)),
             "test_by_corpus": dict(Counter(x["corpus"] for x in test)),
             "train_positive_fraction": round(sum(x["label"] for x in train) / len(train), 4)}
    log.info("data: %s", stats)
    return stats


# --------------------------------------------------------------------------------------------------- pairs stage
# For each train prefix, sample k completions from the SFT policy, score them with r*, and turn every pair of the k
# into a (chosen, rejected) pair by r* (k=4 -> 6 pairs). Exact ties are dropped and counted. Pairs keep the sampled
# token ids, so DPO trains on exactly what was sampled. Each sample's log-probability under the SFT policy
# (= pi_ref of every DPO-family run) is computed here once, from the model that sampled it, and stored with the
# pairs as ref_chosen_logps / ref_rejected_logps: every DPO, IPO and cDPO run then skips the reference forward pass
# (a quarter of a DPO step's compute), and each sample is scored once rather than once per pair it appears in
# (3 pairs each at k = 4). Resumable: prompts are processed in chunks, each chunk written once with its own seed.
# Also samples pairs the same way for validation and test prefixes (pairs_validation.jsonl, pairs_test.jsonl): the
# learned reward model's checkpoint selection and its reported accuracy; nothing trains on them.
# Reads sft/policy, reward/, data/. Writes chunks*/, pairs.jsonl, pairs_validation.jsonl, pairs_test.jsonl.
def rank_pairs(prompt_ids: list[int], completions: list[list[int]], rewards: list[float], tie_threshold: float,
               ref_logps: list[float] | None = None) -> tuple[list[dict], int]:
    """All unordered pairs of the completions, ordered by reward. Returns (pairs, number of ties dropped).
    With `ref_logps` (log pi_ref(completion | prompt) per completion) each pair carries its two reference log-probs."""
    pairs, ties = [], 0
    for i, j in itertools.combinations(range(len(completions)), 2):
        if abs(rewards[i] - rewards[j]) <= tie_threshold or completions[i] == completions[j]:
            ties += 1
            continue
        w, lo = (i, j) if rewards[i] > rewards[j] else (j, i)
        pairs.append({"prompt_ids": prompt_ids, "chosen_ids": completions[w], "rejected_ids": completions[lo],
                      "chosen_reward": rewards[w], "rejected_reward": rewards[lo]})
        if ref_logps is not None:
            pairs[-1].update(ref_chosen_logps=ref_logps[w], ref_rejected_logps=ref_logps[lo])
    return pairs, ties


def _sample_rows(cfg: DictConfig, policy, tokenizer, reward, prompts: list[dict], chunk_dir: Path, tag: str,
                 desc: str) -> list[dict]:
    """k completions per prefix with their r* and SFT log-probs, in chunks written once each (resumable)."""
    p, g = cfg.task.pairs, cfg.task.generation
    chunk_dir.mkdir(exist_ok=True)
    n_chunks = (len(prompts) + p.chunk_size - 1) // p.chunk_size
    for c in tqdm(range(n_chunks), desc=desc):
        path = chunk_dir / f"{c:05d}.jsonl"
        if path.exists():
            continue  # finished before an interruption
        chunk = prompts[c * p.chunk_size:(c + 1) * p.chunk_size]
        repeated = [x["prompt_ids"] for x in chunk for _ in range(p.samples_per_prompt)]
        completions = sample_completions(policy, repeated, max_new_tokens=g.max_new_tokens,
                                         eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                                         batch_size=g.batch_size, seed=cfg.shared_seed, tag=f"{tag}/{c}",
                                         temperature=g.temperature)
        rewards = reward(tokenizer.batch_decode([x + y for x, y in zip(repeated, completions)],
                                                skip_special_tokens=True))
        logps = reference_logps(cfg, policy, repeated, completions)
        k = p.samples_per_prompt
        write_jsonl(path, [{"prompt_ids": x["prompt_ids"], "doc": x["doc"],
                            "completions": completions[i * k:(i + 1) * k], "rewards": rewards[i * k:(i + 1) * k],
                            "sft_logps": logps[i * k:(i + 1) * k]}
                           for i, x in enumerate(chunk)])
    rows = []
    for c in range(n_chunks):
        for row in read_jsonl(chunk_dir / f"{c:05d}.jsonl"):
            if "sft_logps" not in row:  # a chunk written before the log-probs were stored with it
                row["sft_logps"] = reference_logps(cfg, policy, [row["prompt_ids"]] * len(row["completions"]),
                                                    row["completions"])
            rows.append(row)
    return rows


def _ranked(rows: list[dict], tie_threshold: float) -> tuple[list[dict], int]:
    pairs, ties = [], 0
    for row in rows:
        new, t = rank_pairs(row["prompt_ids"], row["completions"], row["rewards"], tie_threshold, row["sft_logps"])
        pairs += new
        ties += t
    return pairs, ties


def run_pairs(cfg: DictConfig, out_dir: Path) -> dict:
    p = cfg.task.pairs
    tokenizer = load_tokenizer(Path(cfg.paths.sft) / "policy")
    policy = load_policy(Path(cfg.paths.sft) / "policy", pick_device(cfg.device))
    reward = load_classifier(cfg)
    prompts = make_prefixes(load_split(cfg.paths.data, "train"), tokenizer, p.n_prompts, cfg.task.prompt.min_tokens,
                            cfg.task.prompt.max_tokens, cfg.shared_seed, "train")
    rows = _sample_rows(cfg, policy, tokenizer, reward, prompts, out_dir / "chunks", "pairs", "pairs: sampling chunks")
    pairs, ties = _ranked(rows, p.tie_threshold)
    write_jsonl(out_dir / "pairs.jsonl", pairs)
    samples = [(c, r) for row in rows for c, r in zip(row["completions"], row["rewards"])]
    # Held-out pairs, sampled the same way on validation and test prefixes (the evaluation's prefixes, drawn with
    # data_seed): r_phi's checkpoint selection and its reported accuracy. No method trains on them.
    held_out = {}
    for split in ("validation", "test"):
        n = p.get(f"n_{split}_prompts") or 0
        if n == 0:
            continue
        split_prompts = make_prefixes(load_split(cfg.paths.data, split), tokenizer, n, cfg.task.prompt.min_tokens,
                                      cfg.task.prompt.max_tokens, cfg.data_seed, split)
        split_rows = _sample_rows(cfg, policy, tokenizer, reward, split_prompts, out_dir / f"chunks_{split}",
                                  f"pairs_{split}", f"pairs: {split} prefixes")
        split_pairs, _ = _ranked(split_rows, p.tie_threshold)
        write_jsonl(out_dir / f"pairs_{split}.jsonl", split_pairs)
        held_out[f"n_{split}_pairs"] = len(split_pairs)
    eos = tokenizer.eos_token_id
    stats = {"n_prompts": len(prompts), "n_pairs": len(pairs), "n_ties_dropped": ties, **held_out,
             "sft_mean_reward": round(sum(r for _, r in samples) / len(samples), 4),
             "sft_mean_length": round(sum(len(c) for c, _ in samples) / len(samples), 2),
             "sft_eos_rate": round(sum(c[-1] == eos for c, _ in samples) / len(samples), 4),
             "mean_reward_margin": round(sum(x["chosen_reward"] - x["rejected_reward"] for x in pairs)
                                         / max(1, len(pairs)), 4)}
    log.info("pairs: %s", stats)
    del policy
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return stats


# ------------------------------------------------------------------------------------------------------ SFT data
def token_blocks(texts: list[str], tokenizer, block_size: int) -> Dataset:
    """Documents joined with EOS (so the model learns to end a review) and cut into equal blocks."""
    stream: list[int] = []
    for ids in tokenizer(texts)["input_ids"]:
        stream += ids + [tokenizer.eos_token_id]
    n = len(stream) // block_size
    if n == 0:
        raise UserError(f"the text is shorter than one block of {block_size} tokens; lower model.sft.block_size")
    return Dataset.from_dict({"input_ids": [stream[i * block_size:(i + 1) * block_size] for i in range(n)]})


def sft_data(cfg: DictConfig, tokenizer, model) -> tuple[Dataset, Dataset, dict, int | None]:
    """(train, test, extra metrics, max_length) of the SFT stage: blocks of model.sft.block_size tokens."""
    s = cfg.model.sft
    if s.block_size > context_length(model):
        raise UserError(f"model.sft.block_size={s.block_size} exceeds the model's context "
                        f"{context_length(model)}")
    train = token_blocks([d["text"] for d in load_split(cfg.paths.data, "train")], tokenizer, s.block_size)
    test = token_blocks([d["text"] for d in load_split(cfg.paths.data, "test")], tokenizer, s.block_size)
    return train, test, {"train_blocks": len(train)}, s.block_size


# ------------------------------------------------------------------------------------------------------- prompts
def train_prompts(cfg: DictConfig, tokenizer, n: int) -> list[list[int]]:
    """The first n train prefixes (token ids): the prompt pool of the online methods (the pairs stage's prefixes)."""
    return [x["prompt_ids"] for x in make_prefixes(
        load_split(cfg.paths.data, "train"), tokenizer, n, cfg.task.prompt.min_tokens, cfg.task.prompt.max_tokens,
        cfg.shared_seed, "train")]


def held_out_prompts(cfg: DictConfig, tokenizer) -> tuple[list[list[int]], list[str]]:
    """Best-of-N's prompts and the split of each: every method's evaluation prefixes, test then validation (the
    same prefixes every other frontier point is measured on; method.n_prompts may only cap them for a quick run)."""
    test = eval_prompts(cfg, tokenizer, "test", cfg.method.n_prompts)
    validation = eval_prompts(cfg, tokenizer, "validation")
    return test + validation, ["test"] * len(test) + ["validation"] * len(validation)


def winrate_references(cfg: DictConfig, tokenizer, n: int, split: str = "test"
                       ) -> tuple[list[list[int]], list[dict]]:
    """The first n held-out prefixes (token ids) and, for each, the SFT policy's completion from the evaluation
    stage (its first sample of that prefix): the reference every method is judged against. `tokenizer` is the SFT
    policy's. Test prefixes only (sentiment has no other judged split)."""
    if split != "test":
        raise UserError(f"the sentiment task has no '{split}' split to judge")
    path = Path(cfg.paths.sft) / "eval" / "step000000.samples.jsonl"
    rows = read_jsonl(path)[::cfg.task.eval.samples_per_prompt]  # prompt-major: one row per prefix
    if len(rows) < n:
        raise UserError(f"task.winrate.n_prompts={n} but the SFT evaluation has only {len(rows)} prefixes "
                        f"({path}); raise task.eval.n_prompts or lower task.winrate.n_prompts")
    return test_prompts(cfg, tokenizer, n), rows[:n]
