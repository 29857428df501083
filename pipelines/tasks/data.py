"""Sentiment data: labelled documents and their deterministic train / validation / test split (the data stage,
pipelines/stages/data.py, writes them; every later stage reads them with `load_split`).

Sources (task.data.source):
  embedded  Cornell movie reviews (1,500 reviews) and review sentences (4,000) from Debian's python3-pattern,
            downloaded from Debian's archive into a git-ignored cache (the package is never installed).
  hf        a Hugging Face dataset with text,label columns (paper: stanfordnlp/imdb, its own train/test splits).
  local     files with text,label columns: .jsonl/.json, .parquet or .csv.
Held-out documents are split again into validation (selection) and test (reporting): task.data.validation_fraction.
Writes train.jsonl, validation.jsonl and test.jsonl (text, label in {0, 1}, corpus) and stats.json.
"""
from __future__ import annotations

import csv
import io
import logging
import lzma
import random
import re
import tarfile
from pathlib import Path

from pipelines.infra.io import UserError, download, hub_hint, read_jsonl

log = logging.getLogger(__name__)

# Debian bookworm's python3-pattern; the checksum pins the exact file (Debian's Packages index lists it).
DEB_URL = ("http://deb.debian.org/debian/pool/main/p/python-pattern/"
           "python3-pattern_2.6%2bgit20180818-4_all.deb")
DEB_SHA256 = "9bdb8e36c780db9c701fa9519425c0217fbab2bc1af28eb127caaa6bde7fc4b1"
DEB_NAME = "python3-pattern.deb"
CORPORA_DIR = "usr/share/doc/python3-pattern/test/corpora/"
# The corpora README swaps these two descriptions; these are the real contents (checked in the packages).
EMBEDDED_FILES = {"reviews": "polarity-en-pang&lee1.csv", "sentences": "polarity-en-pang&lee2.csv"}

LABELS = {"0": 0, "-1": 0, "neg": 0, "negative": 0, "1": 1, "pos": 1, "positive": 1}
SUFFIX_FORMAT = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


# ---------------------------------------------------------------------------------------------- embedded source
def _ar_members(blob: bytes) -> dict[str, bytes]:
    """Members of a Unix ar archive (the container format of a .deb)."""
    if not blob.startswith(b"!<arch>\n"):
        raise UserError("the cached python3-pattern.deb is not a Debian package (no ar header); delete it and rerun")
    members, pos = {}, 8
    while pos + 60 <= len(blob):
        header = blob[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = blob[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def fetch_embedded(cache_dir: Path) -> dict[str, Path]:
    """Download (once) python3-pattern's .deb and extract the two English polarity corpora. Returns their paths."""
    cache_dir = Path(cache_dir) / "python3-pattern"
    out = {name: cache_dir / fname for name, fname in EMBEDDED_FILES.items()}
    if all(p.exists() for p in out.values()):
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    deb = cache_dir / DEB_NAME
    download(DEB_URL, deb, "the embedded review corpus",
             f"Fetch {DEB_URL} by any means (on Debian/Ubuntu: `apt-get download python3-pattern`) and save it as "
             f"{deb}, then rerun;\n  or run on your own data: task.data.source=local "
             "task.data.local_files=[reviews.jsonl] (text,label columns).", sha256=DEB_SHA256)
    members = _ar_members(deb.read_bytes())
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise UserError(f"{deb} holds no data.tar member; delete it and rerun")
    payload = members[data_name]
    if data_name.endswith(".xz"):
        payload = lzma.decompress(payload)
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        for name, path in out.items():
            member = tar.getmember("./" + CORPORA_DIR + EMBEDDED_FILES[name])
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(tar.extractfile(member).read())
            tmp.replace(path)
    return out


def read_embedded(cache_dir: Path, corpora: list[str]) -> list[dict]:
    paths = fetch_embedded(cache_dir)
    docs = []
    for corpus in corpora:
        if corpus not in paths:
            raise UserError(f"task.data.embedded_corpora: unknown corpus '{corpus}' (choose from {sorted(paths)})")
        # utf-8-sig: the first row starts with a byte-order mark.
        with open(paths[corpus], encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
        docs += _validate_rows(({"label": r[0], "text": r[1] if len(r) > 1 else ""} for r in rows),
                               str(paths[corpus]), corpus)
    return docs


# ---------------------------------------------------------------------------------------- validation, cleaning
def clean_text(text: str) -> str:
    text = text.replace("<br />", " ").replace("<br/>", " ")
    return re.sub(r"\s+", " ", text).strip()


def _validate_rows(rows, source: str, corpus: str) -> list[dict]:
    """Keep rows with a non-empty text and a known label; any bad row stops the stage with row numbers."""
    docs, bad = [], []
    for i, row in enumerate(rows, start=1):
        text, label = row.get("text"), row.get("label")
        key = str(label).strip().lower() if label is not None else None
        if key is not None and re.fullmatch(r"-?\d+\.0", key):
            key = key[:-2]
        if not isinstance(text, str) or not clean_text(text):
            bad.append(f"row {i}: empty or missing text")
        elif key not in LABELS:
            bad.append(f"row {i}: unknown label {label!r} (expected one of 0/1, -1/1, neg/pos, negative/positive)")
        else:
            docs.append({"text": clean_text(text), "label": LABELS[key], "corpus": corpus})
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise UserError(f"{source}: {len(bad)} bad row(s){more}:\n  " + "\n  ".join(bad[:5]))
    if not docs:
        raise UserError(f"{source}: no rows")
    return docs


def _check_utf8(path: Path) -> None:
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{path}: line {lineno} is not valid UTF-8 ({err.reason} at byte {err.start}); "
                                "re-encode the file as UTF-8") from None


def read_table(path: Path):
    """One local .jsonl/.json, .parquet or .csv file as a `datasets` table, with a clear error for a missing,
    unsupported, non-UTF-8 or unparsable file."""
    import datasets

    fmt = SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: unsupported file type '{path.suffix}' (use .jsonl, .json, .parquet or .csv)")
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    if fmt != "parquet":
        _check_utf8(path)
    try:
        return datasets.load_dataset(fmt, data_files=str(path), split="train")
    except Exception as err:  # datasets raises many kinds; all mean the file cannot be parsed
        raise UserError(f"{path}: cannot be read as {fmt} ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''})") from None


def read_local(files) -> list[dict]:
    files = [files] if isinstance(files, str) else list(files or [])
    if not files:
        raise UserError("task.data.source=local needs task.data.local_files (a path or a list of paths)")
    docs = []
    for name in files:
        path = Path(name)
        ds = read_table(path)
        missing = {"text", "label"} - set(ds.column_names)
        if missing:
            raise UserError(f"{path}: missing column(s) {sorted(missing)}; found {ds.column_names}")
        docs += _validate_rows(ds.select_columns(["text", "label"]), str(path), path.stem)
    return docs


def read_hf(hf_id: str) -> dict[str, list[dict]]:
    import datasets

    from pipelines.infra.hub import loaded, revision_of

    revision = revision_of(hf_id)
    try:
        dd = datasets.load_dataset(hf_id, revision=revision)
    except Exception as err:
        raise hub_hint(hf_id, err, revision) from None
    loaded(hf_id, revision)
    out = {}
    for split in ("train", "test"):
        if split in dd:
            out[split] = _validate_rows(dd[split], f"{hf_id}[{split}]", hf_id.split("/")[-1])
    return out


# ------------------------------------------------------------------------------------------------------- split
def split_docs(docs: list[dict], test_fraction: float, seed: int, max_docs: int | None) -> tuple[list, list]:
    """Deterministic split, stratified by corpus: the same docs and seed always give the same split."""
    train, test = [], []
    for corpus in sorted({d["corpus"] for d in docs}):
        group = [d for d in docs if d["corpus"] == corpus]
        random.Random(f"{seed}-{corpus}").shuffle(group)
        if max_docs:
            group = group[:max_docs]
        n_test = max(1, round(len(group) * test_fraction))
        test += group[:n_test]
        train += group[n_test:]
    return train, test


def split_validation(held_out: list[dict], fraction: float, seed: int) -> tuple[list, list]:
    """Held-out documents -> (validation, test), stratified by corpus and deterministic. Validation prefixes pick
    checkpoints, fronts and settings; test prefixes, which no selection sees, give every reported number."""
    if not 0 <= fraction < 1:
        raise UserError(f"task.data.validation_fraction must be in [0, 1), got {fraction}")
    validation, test = [], []
    for corpus in sorted({d["corpus"] for d in held_out}):
        group = [d for d in held_out if d["corpus"] == corpus]
        random.Random(f"{seed}-{corpus}-validation").shuffle(group)
        n_val = round(len(group) * fraction)
        validation += group[:n_val]
        test += group[n_val:]
    return validation, test


def load_split(data_dir: Path, split: str) -> list[dict]:
    return read_jsonl(Path(data_dir) / f"{split}.jsonl")
