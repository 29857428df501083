"""Small real data for the offline summarization and dialogue smoke runs (the paper's TL;DR, CNN/DailyMail and HH
are not reachable here; see shared/offline-assets.md). Both go to the git-ignored cache at first use.

Summarization: Debian's package descriptions. Every package of the archive has a one-line synopsis written by its
maintainer as a summary of the long description beside it ("Description-en:" of dists/<release>/main/i18n/
Translation-en.xz, one 6 MB file, ~64k packages). A (description -> synopsis) pair is a real human-written
document and its summary, on the TL;DR scale of a short post and a one-line summary, and it is the only such set of
thousands of pairs that these registries hold (r-cran-tm's 80 Reuters headlines are too few). Boilerplate is
removed (transitional/dummy packages, descriptions repeated word for word). Families of packages share their
opening paragraph; the train/test split is by that paragraph, so no test description has a sibling in train.

Dialogue: PyPI chitchat-dataset 0.9.0 (MIT): 7,168 casual conversations. One (message -> reply) pair per adjacent
pair of turns, a turn being one speaker's consecutive messages; split by conversation.

Neither has human preference labels. The preference pairs of the smoke runs take the real answer as chosen and the
answer of another, randomly drawn prompt as rejected (a mismatched summary / reply; the response-selection
negatives of dialogue research): a real but easy preference, "answer this prompt, not another one". It checks the
pipeline; it is not the paper's human-preference science (docs/scaling.md).
"""
from __future__ import annotations

import hashlib
import json
import logging
import lzma
import random
import re
from pathlib import Path

from pipelines.infra.io import UserError, download

log = logging.getLogger(__name__)

# Debian 12's English descriptions. The file changes only at a point release; a changed file is used, with a
# warning and its checksum in the data stage's metrics (the numbers of results/ were measured on this one).
DEBIAN_TRANSLATION_URL = "http://deb.debian.org/debian/dists/bookworm/main/i18n/Translation-en.xz"
DEBIAN_TRANSLATION_SHA256 = "a3d4a0bfd8e9242810b0885eda7c1a6e05dac15b333ddbaab03ba56f2dfa4bf0"
CHITCHAT_REQUIREMENT = "chitchat-dataset==0.9.0"
CHITCHAT_FILE = "chitchat_dataset/dataset.json"
BOILERPLATE = re.compile(r"\b(transitional|dummy|metapackage|meta-package|debug(ging)? symbols)\b", re.I)


def parse_translation(text: str) -> list[dict]:
    """Debian Translation-en records -> {package, synopsis, paragraphs}. A long description is a block of lines
    starting with a space; a line " ." separates paragraphs."""
    out = []
    for block in text.split("\n\n"):
        package = re.search(r"^Package: (\S+)", block, re.M)
        desc = re.search(r"^Description-en: (.*)\n((?: .*(?:\n|$))*)", block, re.M)
        if not package or not desc:
            continue
        paragraphs = []
        for para in re.split(r"\n \.[ \t]*(?:\n|$)", desc.group(2)):
            words = " ".join(line.strip() for line in para.splitlines() if line.strip())
            if words:
                paragraphs.append(words)
        out.append({"package": package.group(1), "synopsis": desc.group(1).strip(), "paragraphs": paragraphs})
    return out


def debian_summaries(records: list[dict], min_words: int, max_words: int) -> list[dict]:
    """Usable (description, synopsis) records: no boilerplate, no description repeated word for word, a description
    of min_words..max_words words and a synopsis of at least two words. Adds `group` (the opening paragraph's
    hash: the split key)."""
    bodies: dict[str, int] = {}
    for r in records:
        body = " ".join(r["paragraphs"])
        bodies[body] = bodies.get(body, 0) + 1
    out = []
    for r in records:
        body = " ".join(r["paragraphs"])
        n = len(body.split())
        if bodies[body] > 1 or not (min_words <= n <= max_words) or len(r["synopsis"].split()) < 2 \
                or BOILERPLATE.search(r["synopsis"]) or BOILERPLATE.search(body):
            continue
        out.append({"prompt": f"PACKAGE: {r['package']}\nDESCRIPTION: {body}\nTL;DR:",
                    "completion": " " + r["synopsis"],
                    "group": hashlib.sha1(r["paragraphs"][0].encode()).hexdigest()})
    return out


def load_debian_summaries(cache_dir: Path, min_words: int, max_words: int) -> tuple[list[dict], dict]:
    path = Path(cache_dir) / "debian" / "bookworm-Translation-en.xz"
    download(DEBIAN_TRANSLATION_URL, path, "Debian's package descriptions",
             f"Fetch {DEBIAN_TRANSLATION_URL} by any means, save it as {path} and rerun, or use your own data: "
             "task.data.source=local (see conf/task/summarization.yaml).")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    if sha != DEBIAN_TRANSLATION_SHA256:
        log.warning("%s changed upstream (sha256 %s); the committed results were measured on %s",
                    DEBIAN_TRANSLATION_URL, sha, DEBIAN_TRANSLATION_SHA256)
    records = parse_translation(lzma.decompress(path.read_bytes()).decode("utf-8"))
    rows = debian_summaries(records, min_words, max_words)
    if not rows:
        raise UserError(f"{path}: no usable package descriptions (is the file a Debian Translation-en?)")
    return rows, {"source_sha256": sha, "n_packages": len(records), "n_usable": len(rows)}


def chitchat_pairs(conversations: dict) -> list[dict]:
    """(message -> reply) records of every adjacent pair of turns; `group` is the conversation id."""
    out = []
    for conv_id, conv in sorted(conversations.items()):
        turns = [" ".join(m["text"].strip() for m in turn if m.get("text", "").strip())
                 for turn in conv.get("messages", [])]
        turns = [re.sub(r"\s+", " ", t).strip() for t in turns]
        for message, reply in zip(turns, turns[1:]):
            if message and reply:
                out.append({"prompt": f"\n\nHuman: {message}\n\nAssistant:", "completion": " " + reply,
                            "group": conv_id})
    return out


def load_chitchat(cache_dir: Path) -> tuple[list[dict], dict]:
    from pipelines.judge.backends import fetch_wheel_model

    path = fetch_wheel_model(CHITCHAT_REQUIREMENT, Path(cache_dir) / "chitchat", CHITCHAT_FILE)
    try:
        conversations = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not the chitchat-dataset JSON ({err}); delete the folder and rerun") from None
    rows = chitchat_pairs(conversations)
    return rows, {"n_conversations": len(conversations), "n_usable": len(rows)}


def split_by_group(rows: list[dict], test_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic split that keeps every group (package family, conversation) on one side."""
    groups = sorted({r["group"] for r in rows})
    random.Random(f"{seed}-groups").shuffle(groups)
    test_groups = set(groups[:max(1, round(len(groups) * test_fraction))])
    train = [r for r in rows if r["group"] not in test_groups]
    test = [r for r in rows if r["group"] in test_groups]
    rng = random.Random(f"{seed}-order")
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def mismatched_pairs(rows: list[dict], seed: int) -> list[dict]:
    """Preference records: the real answer is chosen, the answer of another prompt (drawn at random, never an
    identical text) is rejected."""
    rng = random.Random(f"{seed}-mismatch")
    out = []
    for i, r in enumerate(rows):
        for _ in range(10):
            j = rng.randrange(len(rows))
            if j != i and rows[j]["completion"].strip() != r["completion"].strip():
                out.append({"prompt": r["prompt"], "chosen": r["completion"], "rejected": rows[j]["completion"]})
                break
    return out
