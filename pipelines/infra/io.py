"""Files and errors: the user-facing error, atomic writes, JSON lines, checked downloads, the Hub hint."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable


class UserError(Exception):
    """A problem the user can fix (bad config, bad data, missing download). Printed without a traceback."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file + rename, so readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def download(url: str, dest: Path, what: str, hint: str, sha256: str | None = None) -> None:
    """Fetch `url` into `dest` unless it is there (atomically: an interrupted download leaves nothing). A failed
    download is a UserError naming `what` and the way round it (`hint`); with `sha256`, so is a different file."""
    import hashlib
    import logging
    import urllib.request

    dest = Path(dest)
    if dest.exists():
        return
    logging.getLogger(__name__).info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=120) as resp:
            blob = resp.read()
    except OSError as err:
        raise UserError(f"could not download {what} ({err}).\n  {hint}") from err
    if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256:
        raise UserError(f"the download of {url} has an unexpected checksum; try again later")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(dest)


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def hub_hint(name: str, err: Exception) -> UserError:
    """The error to raise when a model or dataset named by a Hub id cannot be loaded."""
    return UserError(
        f"could not load '{name}' ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}).\n"
        "Paper-scale presets read models and datasets from the Hugging Face Hub, which this machine cannot reach. "
        "Run on a machine with Hub access, or point the config at a local copy (a folder made with "
        "save_pretrained / local data files), or use the embedded default (make reproduce-sentiment).")
