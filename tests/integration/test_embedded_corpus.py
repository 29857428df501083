"""The real embedded corpus, fetched from Debian's archive (network: excluded from `make test`, run by
`make test-all` or `pytest -m network`)."""
from collections import Counter

import pytest

from pipelines.tasks.data import read_embedded


@pytest.mark.network
def test_embedded_corpus_has_the_documented_contents(tmp_path):
    docs = read_embedded(tmp_path / "cache", ["reviews", "sentences"])
    counts = Counter((d["corpus"], d["label"]) for d in docs)
    assert counts == {("reviews", 1): 750, ("reviews", 0): 750, ("sentences", 1): 2000, ("sentences", 0): 2000}
    assert not docs[0]["text"].startswith("\ufeff")
