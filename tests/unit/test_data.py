"""Data sources, validation of bad input, the deterministic split and where prompts come from."""
import csv
import io
import lzma
import tarfile

import pandas as pd
import pytest

from pipelines.infra.io import UserError
from pipelines.lm.models import train_tokenizer
from pipelines.tasks import data
from pipelines.tasks.prefixes import make_prefixes
from tests.helpers import review_rows, write_reviews


def test_local_formats_and_label_spellings(tmp_path):
    rows = review_rows(20)
    jl = write_reviews(tmp_path / "a.jsonl", rows)
    pd.DataFrame([{"text": r["text"], "label": ["neg", "pos"][r["label"]]} for r in rows]).to_csv(tmp_path / "b.csv",
                                                                                                   index=False)
    pd.DataFrame([{"text": r["text"], "label": [-1, 1][r["label"]]} for r in rows]).to_parquet(tmp_path / "c.parquet")
    docs = data.read_local([str(jl), str(tmp_path / "b.csv"), str(tmp_path / "c.parquet")])
    assert len(docs) == 60
    assert [d["label"] for d in docs] == [r["label"] for r in rows] * 3


@pytest.mark.parametrize("content,message", [
    ('{"text": "fine", "label": 1}\n{"text": "", "label": 0}\n', "row 2: empty or missing text"),
    ('{"text": "fine", "label": 1}\n{"text": "ok", "label": "maybe"}\n', "row 2: unknown label 'maybe'"),
    ('{"text": "fine", "label": 1}\n{"text": "ok", "lab', "cannot be read as json"),
    ('{"words": "fine", "label": 1}\n', "missing column"),
])
def test_bad_rows_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        data.read_local(str(path))


def test_non_utf8_and_missing_files(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"text": "caf\u00e9", "label": 1}\n'.encode("latin-1"))
    with pytest.raises(UserError, match="line 1 is not valid UTF-8"):
        data.read_local(str(path))
    with pytest.raises(UserError, match="file not found"):
        data.read_local(str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="unsupported file type"):
        data.read_local(str(tmp_path / "x.txt"))


def test_split_is_deterministic_stratified_and_disjoint():
    docs = [{"text": f"doc {i}", "label": i % 2, "corpus": "a" if i < 70 else "b"} for i in range(100)]
    train, test = data.split_docs(docs, 0.1, seed=0, max_docs=None)
    again = data.split_docs(docs, 0.1, seed=0, max_docs=None)
    assert (train, test) == again
    assert {d["text"] for d in train}.isdisjoint({d["text"] for d in test})
    assert sum(d["corpus"] == "a" for d in test) == 7 and sum(d["corpus"] == "b" for d in test) == 3
    assert data.split_docs(docs, 0.1, seed=1, max_docs=None)[1] != test


def test_prefixes_are_2_to_8_tokens_of_the_given_split():
    tok = train_tokenizer([r["text"] for r in review_rows()], 300, 1)
    test_docs = [{"text": r["text"], "label": r["label"]} for r in review_rows(30, seed=5)]
    prefixes = make_prefixes(test_docs, tok, 20, 2, 8, seed=0, split="test")
    assert len(prefixes) == 20
    for p in prefixes:
        assert 2 <= len(p["prompt_ids"]) <= 8
        assert tok(test_docs[p["doc"]]["text"])["input_ids"][:len(p["prompt_ids"])] == p["prompt_ids"]
    assert prefixes == make_prefixes(test_docs, tok, 20, 2, 8, seed=0, split="test")
    with pytest.raises(UserError, match="only 30"):
        make_prefixes(test_docs, tok, 31, 2, 8, seed=0, split="test")


def _fake_deb(path, files: dict[str, bytes]):
    """A minimal .deb (ar archive with data.tar.xz) holding `files` under the corpora folder."""
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo("./" + data.CORPORA_DIR + name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    members = {"debian-binary": b"2.0\n", "control.tar.xz": lzma.compress(b""),
               "data.tar.xz": lzma.compress(tar_buf.getvalue())}
    out = b"!<arch>\n"
    for name, blob in members.items():
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(blob):<10}`\n".encode() + blob
        out += b"\n" if len(blob) % 2 else b""
    path.write_bytes(out)


def test_embedded_corpus_extraction_handles_bom_and_multiline_rows(tmp_path):
    def csv_bytes(rows):
        buf = io.StringIO()
        csv.writer(buf, quoting=csv.QUOTE_ALL).writerows(rows)
        return "\ufeff".encode() + buf.getvalue().encode()

    cache = tmp_path / "cache" / "python3-pattern"
    cache.mkdir(parents=True)
    _fake_deb(cache / data.DEB_NAME, {
        data.EMBEDDED_FILES["reviews"]: csv_bytes([["1", "a long review\nover two lines ."], ["-1", "bad ."]]),
        data.EMBEDDED_FILES["sentences"]: csv_bytes([["-1", "dull ."], ["1", "fun ."], ["1", "great ."]])})
    docs = data.read_embedded(tmp_path / "cache", ["reviews", "sentences"])
    assert [(d["corpus"], d["label"]) for d in docs] == [("reviews", 1), ("reviews", 0), ("sentences", 0),
                                                         ("sentences", 1), ("sentences", 1)]
    assert docs[0]["text"] == "a long review over two lines ."
    with pytest.raises(UserError, match="unknown corpus"):
        data.read_embedded(tmp_path / "cache", ["poems"])


def test_hub_unreachable_gives_a_clear_message(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach the Hugging Face Hub")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match="cannot reach the Hugging Face Hub for 'stanfordnlp/imdb'"):
        data.read_hf("stanfordnlp/imdb")
