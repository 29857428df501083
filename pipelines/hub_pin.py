"""make pin-hub: pin every Hugging Face Hub id of conf/hub_revisions.yaml to the commit its main branch (or the
revision already written there) points at now, on a machine that reaches the Hub.

  python -m pipelines.hub_pin [--file conf/hub_revisions.yaml] [--check]

A model is pinned only where that commit has safetensors weights (models load as safetensors only): one without them
is reported and left as it was, so the file never points a run at weights it would refuse. --check reports and
writes nothing. The file keeps its comments (each id's line is rewritten in place). Exit 0 when every id is pinned,
1 when some could not be, 2 when the Hub cannot be reached.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from omegaconf import OmegaConf

from pipelines.infra.hub import REVISIONS
from pipelines.infra.io import hub_unreachable


def resolve(api, name: str, kind: str, revision: str | None) -> tuple[str | None, str]:
    """(commit, note) of one id: the commit `revision` (main when None) points at, None with the reason when the
    id cannot be pinned."""
    info = (api.model_info if kind == "models" else api.dataset_info)(name, revision=revision, files_metadata=False)
    if kind == "models" and not any(s.rfilename.endswith(".safetensors") for s in (info.siblings or [])):
        return None, (f"no safetensors weights at {info.sha} ({revision or 'main'}): set a revision that has them "
                      "by hand, or load a local converted copy")
    return info.sha, "pinned"


def rewrite(text: str, pins: dict[str, str]) -> str:
    """`text` with the value of each `  <id>: ...` line replaced by its pin; the line's comment is kept, at its
    column where the new value leaves room."""
    out = []
    for line in text.splitlines(keepends=True):
        m = re.match(r"^(\s+)([^\s:#][^:#]*?):\s*[^\s#]*(\s*#.*)?$", line.rstrip("\n"))
        if m and m.group(2) in pins:
            head = f"{m.group(1)}{m.group(2)}: {pins[m.group(2)]}"
            comment = (m.group(3) or "").strip()
            if comment:
                column = line.index("#")
                head = head + " " * max(1, column - len(head)) + comment
            line = head + ("\n" if line.endswith("\n") else "")
        out.append(line)
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=REVISIONS)
    ap.add_argument("--check", action="store_true", help="report only, write nothing")
    a = ap.parse_args(argv)
    from huggingface_hub import HfApi

    raw = OmegaConf.to_container(OmegaConf.load(a.file))
    api, pins, failed = HfApi(), {}, []
    for kind in ("models", "datasets"):
        for name, current in (raw.get(kind) or {}).items():
            try:
                sha, note = resolve(api, name, kind, current)
            except Exception as err:  # noqa: BLE001 - any failure of the Hub call is reported on one line
                if hub_unreachable(err):
                    print(f"error: cannot reach the Hugging Face Hub ({name}): run make pin-hub where it is "
                          "reachable", file=sys.stderr)
                    return 2
                sha, note = None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            print(f"{kind[:-1]:<7} {name:<45} {sha or '-':<42} {note}")
            if sha:
                pins[name] = sha
            else:
                failed.append(name)
    if not a.check and pins:
        a.file.write_text(rewrite(a.file.read_text(), pins))
        print(f"wrote {len(pins)} pin(s) to {a.file}; commit it")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
