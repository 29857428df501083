"""The stage hashes of the embedded presets are pinned: a refactor that moves one would make every finished run and
the committed ledger look stale. Re-pin (python -m tests.config.stage_hashes --write) only when a stage's
computation changes on purpose."""
import json

from tests.config.stage_hashes import PINNED, stage_hashes


def test_stage_hashes_are_the_pinned_ones():
    pinned = json.loads(PINNED.read_text())
    now = stage_hashes()
    assert sorted(now) == sorted(pinned), "the set of pinned configurations changed"
    moved = {f"{job}: {stage}" for job in pinned for stage in pinned[job] if now[job].get(stage) != pinned[job][stage]}
    assert not moved, f"{len(moved)} stage hash(es) moved, e.g. {sorted(moved)[:5]}"
