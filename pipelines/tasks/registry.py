"""What each task format is, behind one dict keyed by task.format: the stages and methods call
`task_of(cfg).<field>` and never branch on the task.

  prefix           sentiment: prefixes of reviews as prompts, r* a classifier of the documents, preference pairs
                   sampled from the SFT policy and ranked by r* (pipelines/tasks/sentiment.py, gold_reward.py)
  prompt_response  summarization, dialogue: prompts, answers and preference pairs from the data, r* a relevance
                   score of (prompt, answer) for the oracle judge (pipelines/tasks/prompt_response.py, relevance.py)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from pipelines.infra.io import UserError
from pipelines.tasks import gold_reward, prompt_response, relevance, sentiment


@dataclass(frozen=True)
class Task:
    """Every per-format function and fact the stages and methods need."""
    # Stage bodies, (cfg, out_dir) -> done-marker fields: the data stage (read, split and write data/), the reward
    # stage (fit or check r*, write reward/), the pairs stage (write pairs.jsonl with the SFT log-probs)
    run_data: Callable[[DictConfig, Path], dict]
    run_reward: Callable[[DictConfig, Path], dict]
    run_pairs: Callable[[DictConfig, Path], dict]
    # r* as the reward stage left it: cfg -> a callable of texts (sentiment) or (prompt, answer) texts -> rewards
    load_reward: Callable[[DictConfig], Callable]
    # The SFT stage's data, (cfg, tokenizer, model) -> (train Dataset, test Dataset, extra metrics, max_length)
    sft_data: Callable
    # The prompt pool of the online methods (PPO, RLOO), (cfg, tokenizer, n) -> the first n train prompts' ids
    train_prompts: Callable[[DictConfig, object, int], list[list[int]]]
    # Best-of-N's held-out prompts, (cfg, tokenizer) -> (prompt ids, the split of each)
    bon_prompts: Callable[[DictConfig, object], tuple[list[list[int]], list[str]]]
    # What the win-rate stage judges against, (cfg, SFT tokenizer, n, split) -> (prompt ids, [{prompt, completion}])
    winrate_references: Callable[[DictConfig, object, int, str], tuple[list[list[int]], list[dict]]]
    # Best-of-N samples at every non-zero win-rate temperature (samples/T<t>/) and is judged at each (T = 0: the
    # greedy sample); else it samples at task.generation.temperature for its frontier points and is judged at T = 1
    # by its evaluation's selections
    bon_per_temperature: bool
    # What the STAGES rows of pipelines/run.py add per format: the SFT stage's extra hash keys, the pairs stage's
    # upstream stages, Best-of-N's train-stage extra keys, the win-rate stage's extra keys and its upstream stages
    sft_keys: tuple[str, ...]
    pairs_deps: tuple[str, ...]
    bon_keys: tuple[str, ...]
    winrate_keys: tuple[str, ...]
    winrate_deps: Callable[[DictConfig], tuple[str, ...]]


TASKS = {
    "prefix": Task(
        run_data=sentiment.run_data, run_reward=gold_reward.run, run_pairs=sentiment.run_pairs,
        load_reward=gold_reward.load, sft_data=sentiment.sft_data, train_prompts=sentiment.train_prompts,
        bon_prompts=sentiment.held_out_prompts, winrate_references=sentiment.winrate_references,
        bon_per_temperature=False,
        sft_keys=(),
        # the pairs are the SFT policy's samples ranked by r*
        pairs_deps=("data", "sft", "reward"),
        # Best-of-N samples for every evaluation prefix (task.eval's test and validation counts)
        bon_keys=("task.eval",),
        winrate_keys=(),
        # the references are the SFT policy's samples of the evaluation stage
        winrate_deps=lambda c: ("evaluate", "evaluate_sft")),
    "prompt_response": Task(
        run_data=prompt_response.run_data, run_reward=relevance.run, run_pairs=prompt_response.run_pairs,
        load_reward=relevance.load, sft_data=prompt_response.sft_data, train_prompts=prompt_response.train_prompts,
        bon_prompts=prompt_response.held_out_prompts, winrate_references=prompt_response.winrate_references,
        bon_per_temperature=True,
        # which examples fit and where answers are cut, and the loss mask, shape the SFT data too
        sft_keys=("task.sft", "task.prompt", "task.generation.max_new_tokens"),
        # the data's own (human) comparisons: no r*
        pairs_deps=("data", "sft"),
        # Best-of-N samples at each win-rate temperature, for the win-rate prompts
        bon_keys=("task.winrate",),
        # the prompt cap picks the judged prompts
        winrate_keys=("task.prompt",),
        # judged against the data's answers (no evaluation stage); the oracle judge is r*
        winrate_deps=lambda c: ("train", "data") + (("reward",) if c.judge.backend == "oracle" else ())),
}


def task_of(cfg: DictConfig) -> Task:
    """The Task of cfg.task.format (prefix when unset)."""
    fmt = cfg.task.get("format", "prefix")
    if fmt not in TASKS:
        raise UserError(f"task.format must be one of {tuple(TASKS)}, got '{fmt}'")
    return TASKS[fmt]
