"""Helpers the tests share (import them from here, not from conftest): the repository's paths, Hydra
composition, small synthetic data files in the schemas of the real datasets, and two-process gloo launches."""
from __future__ import annotations

import json
import os
import random
import warnings
from pathlib import Path

from hydra import compose, initialize_config_dir

import pipelines  # noqa: F401  -- registers the run config's schema (conf/config.yaml names it) and resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
POSITIVE = "great wonderful superb moving funny charming brilliant delightful".split()
NEGATIVE = "awful boring dull terrible clumsy tedious bad weak".split()
FILLER = "the story of a man and his dog in the city with music and friends".split()


def review_rows(n: int = 120, seed: int = 0) -> list[dict]:
    """Synthetic reviews: neutral filler plus four words of the label's sentiment."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(12)] + [rng.choice(POSITIVE if label else NEGATIVE)
                                                          for _ in range(4)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words) + " .", "label": label})
    return rows


def write_reviews(path: Path, rows: list[dict] | None = None) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in (rows or review_rows())))
    return path


def compose_cfg(overrides: list[str], hydra_node: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra_node)


# ------------------------------------------------------------------ prompt-response fixtures (in the HF schemas)
TOPICS = {"cooking": "rice pan stove burnt dinner", "cars": "engine brakes tires garage oil",
          "garden": "tomatoes soil seeds water sun", "music": "guitar chords band song practice",
          "money": "rent budget savings loan bank", "pets": "cat dog vet food walk"}


def _post(rng: random.Random, topic: str) -> str:
    words = TOPICS[topic].split()
    body = " ".join(rng.choice(words + FILLER) for _ in range(rng.randint(8, 20)))
    return f"SUBREDDIT: r/{topic}\nTITLE: help with my {rng.choice(words)}\nPOST: {body}"


def write_tldr_files(folder: Path, n_train: int = 80, n_test: int = 30, seed: int = 0) -> dict[str, Path]:
    """TL;DR SFT rows (prompt, label), comparisons (prompt, chosen, rejected) and CNN/DM rows (article,
    highlights): synthetic posts whose good summary names the post's topic words."""
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    files = {}

    def rows(n, make):
        return [make(i) for i in range(n)]

    def sft_row(i):
        t = topics[i % len(topics)]
        return {"prompt": _post(rng, t) + "\nTL;DR:", "label": f" my {TOPICS[t].split()[0]} problem with the "
                                                                f"{rng.choice(TOPICS[t].split())}"}

    def comparison(i):
        t, other = topics[i % len(topics)], topics[(i + 1) % len(topics)]
        return {"prompt": _post(rng, t) + "\nTL;DR:", "chosen": f"TL;DR: my {TOPICS[t].split()[0]} trouble",
                "rejected": f"TL;DR: my {TOPICS[other].split()[0]} trouble"}

    def article(i):
        body = _post(rng, topics[i % len(topics)]).split("POST: ")[1]
        return {"article": "(CNN) " + body, "highlights": f"news about the {body.split()[0]}"}

    for name, n, make in (("sft_train", n_train, sft_row), ("sft_test", n_test, sft_row),
                          ("comparisons", n_train, comparison), ("ood", n_test, article)):
        files[name] = folder / f"tldr_{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows(n, make)))
    return files


def write_hh_files(folder: Path, n_train: int = 80, n_test: int = 30, seed: int = 0) -> dict[str, Path]:
    """Anthropic HH rows (chosen, rejected whole transcripts); every third one has two human turns."""
    rng = random.Random(seed)
    topics = sorted(TOPICS)

    def row(i):
        t, other = topics[i % len(topics)], topics[(i + 2) % len(topics)]
        ask = f"how do I fix my {rng.choice(TOPICS[t].split())} and {rng.choice(FILLER)}?"
        history = "\n\nHuman: hello there\n\nAssistant: hi, how can I help?" if i % 3 == 0 else ""
        start = f"{history}\n\nHuman: {ask}\n\nAssistant:"
        return {"chosen": f"{start} check the {TOPICS[t].split()[1]} first", "rejected": f"{start} ask about "
                                                                                        f"{TOPICS[other].split()[1]}"}

    files = {}
    for name, n in (("comparisons_train", n_train), ("comparisons_test", n_test)):
        files[name] = folder / f"hh_{name}.jsonl"
        files[name].write_text("".join(json.dumps(row(i)) + "\n" for i in range(n)))
    return files


def join_two_ranks(rank: int, port: int) -> None:
    """In a process spawned by `spawn_two_ranks`: the variables a launcher sets for rank `rank` of 2 on the CPU,
    one torch thread, and no process group left from an earlier spawn."""
    import torch

    from pipelines.infra import distributed

    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), ACCELERATE_USE_CPU="true")
    torch.set_num_threads(1)
    distributed._group = None


def spawn_two_ranks(worker, out: Path, outputs: list[str]) -> None:
    """Run worker(rank, port, str(out)) in two processes (gloo, a free port). A process killed by a signal at
    teardown after every file of `outputs` was written (gloo's threads at interpreter exit) is tolerated with a
    warning: the results are complete and the tests judge them; killed before that, it is a failure."""
    import torch.multiprocessing as mp

    from pipelines.infra.distributed import free_port

    try:
        mp.spawn(worker, args=(free_port(), str(out)), nprocs=2, join=True)
    except mp.ProcessExitedException as err:
        if not all((out / name).exists() for name in outputs):
            raise
        warnings.warn(f"a process ended abnormally after writing its results: {err}")
