"""analysis/report.py states the commit through the pipelines' own git_sha helper: its lazy import must point at
where that helper lives (a stale target would silently write 'unknown' into every summary)."""
import shutil
from pathlib import Path

import pytest

from analysis import report

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_git_sha_comes_from_the_pipelines_helper():
    sha = report.git_sha()
    assert sha != "unknown"
    assert len(sha.removesuffix("-dirty")) == 40


def test_markdown_table_helpers():
    assert report.table_head(["KL", "DPO"]) == ["| KL | DPO |", "|---|---|"]
    assert report.table_row(["1", "", "x"]) == "| 1 |  | x |"
