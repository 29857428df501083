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


def _causes(err: BaseException) -> list[BaseException]:
    """`err` and the exceptions it was raised from (cause or context), outermost first."""
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


# Exception class names that mean "the Hub could not be reached" (and the files are not in the local cache).
_OFFLINE = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError", "ConnectionError", "ConnectTimeout",
            "gaierror", "ReadTimeout", "TimeoutException"}
_MISSING = {"RepositoryNotFoundError", "RevisionNotFoundError", "RemoteEntryNotFoundError", "GatedRepoError",
            "DisabledRepoError"}
LOCAL_COPY = ("point the config at a local copy (a folder written by save_pretrained(safe_serialization=True), or "
              "local data files), or use the embedded default (make reproduce-sentiment)")


def hub_unreachable(err: BaseException) -> bool:
    """Whether `err` (or what it was raised from) says the Hub could not be reached."""
    return bool({type(e).__name__ for e in _causes(err)} & _OFFLINE)


def hub_hint(name: str, err: Exception, revision: str | None = None) -> UserError:
    """The one-line error for a model or dataset (a Hub id or a local folder) that cannot be loaded, telling apart a
    missing folder, a folder without safetensors weights, a Hub that cannot be reached, a repository or revision
    the Hub does not have, and a repository without safetensors weights at that revision."""
    causes = _causes(err)
    kinds = {type(e).__name__ for e in causes}
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    at = f" at revision {revision}" if revision else ""
    from pipelines.infra.hub import is_hub_id

    path = Path(os.path.expanduser(name))
    if not is_hub_id(name):
        if not path.exists():
            return UserError(f"'{name}' does not exist (a model folder was expected here)")
        if not any(path.glob("*.safetensors")) and any(path.glob("*.bin")):
            return UserError(f"'{name}' holds pickled PyTorch weights (*.bin) and no safetensors: models load as "
                             "safetensors only; convert the folder once with save_pretrained(safe_serialization=True)")
        return UserError(f"could not load '{name}': {first}")
    if hub_unreachable(err):
        return UserError(f"cannot reach the Hugging Face Hub for '{name}'{at}, and it is not in the local cache: run "
                         f"where the Hub is reachable (once; later runs read the cache), or {LOCAL_COPY}")
    if kinds & _MISSING:
        return UserError(f"the Hugging Face Hub has no '{name}'{at} (or it is gated: log in with `hf auth login`): "
                         f"check the id and revision ({type(causes[-1]).__name__}: {first})")
    if "safetensors" in " ".join(str(e) for e in causes).lower() or "EntryNotFoundError" in kinds:
        return UserError(f"'{name}'{at or ' on its main branch'} has no safetensors weights, and models load as "
                         "safetensors only (no pickle): pin a revision that has them (conf/hub_revisions.yaml), or "
                         f"convert a local copy with save_pretrained(safe_serialization=True) ({first})")
    return UserError(f"could not load '{name}'{at} ({type(err).__name__}: {first}); {LOCAL_COPY}")
