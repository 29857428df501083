"""The prompt-response tasks' pieces: the embedded sources' parsers (Debian descriptions, chitchat), the split that
keeps families together, mismatched pairs, the relevance oracles, tokenisation of answers, the judge's view of a
prompt, and Best-of-N's per-temperature selections."""
import json
import lzma

import pytest
from omegaconf import OmegaConf

from pipelines.infra.io import UserError
from pipelines.lm.models import train_tokenizer
from pipelines.tasks import embedded_text as et
from pipelines.tasks import prompt_response, relevance

TRANSLATION = """Package: alpha-tool
Description-md5: 0123
Description-en: command-line tool to sort photos by date
 Alpha sorts photo folders by the date stored in each picture,
 renaming files as it goes.
 .
 It reads JPEG and PNG files.

Package: alpha-tool-doc
Description-md5: 4567
Description-en: command-line tool to sort photos by date (documentation)
 Alpha sorts photo folders by the date stored in each picture,
 renaming files as it goes.
 .
 This package contains the manual.

Package: old-thing
Description-md5: 89ab
Description-en: transitional package for new-thing
 This is a transitional package. It can safely be removed once nothing depends on it
 any more and the new package has replaced it everywhere.

Package: dup-a
Description-md5: cdef
Description-en: first copy
 The same long description shared word for word by two packages of one family here.

Package: dup-b
Description-md5: cdee
Description-en: second copy
 The same long description shared word for word by two packages of one family here.
"""


def test_parse_translation_reads_synopsis_and_paragraphs():
    records = et.parse_translation(TRANSLATION)
    assert [r["package"] for r in records] == ["alpha-tool", "alpha-tool-doc", "old-thing", "dup-a", "dup-b"]
    first = records[0]
    assert first["synopsis"] == "command-line tool to sort photos by date"
    assert first["paragraphs"] == ["Alpha sorts photo folders by the date stored in each picture, renaming files as "
                                   "it goes.", "It reads JPEG and PNG files."]


def test_debian_summaries_drop_boilerplate_and_duplicates_and_group_families():
    rows = et.debian_summaries(et.parse_translation(TRANSLATION), min_words=5, max_words=200)
    # the transitional package and the two word-for-word duplicates are gone
    assert [r["prompt"].split("\n")[0] for r in rows] == ["PACKAGE: alpha-tool", "PACKAGE: alpha-tool-doc"]
    assert rows[0]["prompt"].endswith("\nTL;DR:")
    assert rows[0]["completion"] == " command-line tool to sort photos by date"
    assert rows[0]["group"] == rows[1]["group"]  # same opening paragraph: one family, one side of the split
    assert et.debian_summaries(et.parse_translation(TRANSLATION), min_words=30, max_words=200) == []


def test_load_debian_summaries_from_the_cache(tmp_path, caplog):
    path = tmp_path / "debian" / "bookworm-Translation-en.xz"
    path.parent.mkdir(parents=True)
    path.write_bytes(lzma.compress(TRANSLATION.encode()))
    rows, stats = et.load_debian_summaries(tmp_path, 5, 200)  # cached: no download
    assert len(rows) == 2 and stats["n_packages"] == 5 and stats["source_sha256"] != et.DEBIAN_TRANSLATION_SHA256
    assert "changed upstream" in caplog.text


def test_chitchat_pairs_join_turns_and_skip_empty_messages():
    conv = {"c1": {"messages": [[{"text": "hi"}, {"text": "how are you?"}], [{"text": "good"}, {"text": " "}],
                                [{"text": "nice"}]]}}
    rows = et.chitchat_pairs(conv)
    assert [r["prompt"] for r in rows] == ["\n\nHuman: hi how are you?\n\nAssistant:", "\n\nHuman: good\n\nAssistant:"]
    assert [r["completion"] for r in rows] == [" good", " nice"] and {r["group"] for r in rows} == {"c1"}


def test_split_by_group_keeps_groups_apart_and_is_deterministic():
    rows = [{"prompt": f"p{i}", "completion": f" c{i}", "group": f"g{i % 10}"} for i in range(100)]
    train, test = et.split_by_group(rows, 0.2, seed=0)
    assert len(train) + len(test) == 100 and {r["group"] for r in train}.isdisjoint({r["group"] for r in test})
    assert len({r["group"] for r in test}) == 2
    assert et.split_by_group(rows, 0.2, seed=0) == (train, test)


def test_mismatched_pairs_reject_another_prompts_answer():
    rows = [{"prompt": f"p{i}", "completion": f" c{i % 7}"} for i in range(50)]
    pairs = et.mismatched_pairs(rows, seed=0)
    assert len(pairs) == 50
    for p, r in zip(pairs, rows):
        assert p["prompt"] == r["prompt"] and p["chosen"] == r["completion"] and p["rejected"] != p["chosen"]


def test_tfidf_cosine_prefers_the_relevant_answer_and_ignores_repetition(tmp_path):
    docs = ["the cat sat on the mat", "stock prices fell sharply", "a cat and a dog", "prices of cats"]
    model = relevance.TfidfCosine.fit(docs)
    prompt = "my cat will not leave the mat"
    assert model.score(prompt, "a cat on a mat") > model.score(prompt, "stock prices fell") == 0.0
    assert model.score(prompt, "cat mat") == pytest.approx(model.score(prompt, "cat cat cat mat mat"))
    model.save(tmp_path)
    assert relevance.TfidfCosine.load(tmp_path)([(prompt, "cat")]) == model([(prompt, "cat")])


def test_word_pair_logreg_learns_message_reply_links(tmp_path):
    links = {"hungry": "eat", "tired": "sleep", "bored": "play", "cold": "coat", "sad": "hug"}
    train = [{"prompt": f"i am {a} today {i}", "completion": f" you should {b}"} for i in range(40)
             for a, b in links.items()]
    pairs = et.mismatched_pairs(train, seed=0)
    model = relevance.WordPairLogReg.fit(pairs, buckets=4096, epochs=3, lr=0.1, seed=0)
    test = [{"prompt": f"so {a} now", "chosen": f" go {b}", "rejected": f" go {links[c]}"}
            for a, b in links.items() for c in links if c != a]
    assert relevance.pair_accuracy(model, test) == 1.0
    model.save(tmp_path)
    loaded = relevance.WordPairLogReg.load(tmp_path)
    assert loaded([("so hungry", " eat")]) == pytest.approx(model([("so hungry", " eat")]))


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["a short text about cats and dogs and their food"] * 20, 300, 1)


def test_answers_end_in_eos_unless_cut(tokenizer):
    ids = prompt_response.encode_completion(tokenizer, " cats and dogs", max_tokens=100)
    assert ids[-1] == tokenizer.eos_token_id and tokenizer.decode(ids[:-1]) == " cats and dogs"
    cut = prompt_response.encode_completion(tokenizer, " cats and dogs", max_tokens=2)
    assert len(cut) == 2 and cut[-1] != tokenizer.eos_token_id


def test_judge_prompt_drops_the_trailing_marker():
    assert prompt_response.judge_prompt("POST: my rice burns\nTL;DR:") == "POST: my rice burns"
    assert prompt_response.judge_prompt("\n\nHuman: hi\n\nAssistant:") == "Human: hi"
    assert prompt_response.judge_prompt("plain") == "plain"


def _cfg(tmp_path, **task):
    return OmegaConf.create({"paths": {"data": str(tmp_path), "method": str(tmp_path / "run")},
                             "task": {"format": "prompt_response", "prompt": {"max_tokens": 8}, **task},
                             "method": {"n_prompts": None}})


def test_eval_rows_skip_long_prompts_and_refuse_too_few(tmp_path, tokenizer):
    rows = [{"prompt": "cats " * k, "reference": f" r{k}"} for k in (2, 30, 3, 4)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cfg(tmp_path)
    got = prompt_response.eval_rows(cfg, tokenizer, 3)
    assert [r["reference"] for r in got] == [" r2", " r3", " r4"] and all(len(r["prompt_ids"]) <= 8 for r in got)
    with pytest.raises(UserError, match="asked for 4 test prompts but only 3"):
        prompt_response.eval_rows(cfg, tokenizer, 4)
    with pytest.raises(UserError, match="no ood split"):
        prompt_response.eval_rows(cfg, tokenizer, 1, "ood")


def test_best_of_n_selects_per_temperature(tmp_path):
    from baselines import best_of_n
    cfg = _cfg(tmp_path, winrate={"temperatures": [0.0, 0.5, 1.0]}, generation={"temperature": 1.0})
    assert best_of_n.sampling_temperatures(cfg) == [0.5, 1.0]
    for t, best in ((0.5, 2), (1.0, 0)):
        folder = best_of_n.samples_dir(cfg, t)
        folder.mkdir(parents=True)
        scores = [0.1, 0.2, 0.3] if best == 2 else [0.9, 0.2, 0.3]
        (folder / "chunk0000.jsonl").write_text(json.dumps({"prompt_ids": [1], "completions": [[5], [6], [7]],
                                                            "scores": scores}) + "\n")
    assert best_of_n.selections(cfg, 0.5, 3) == [[7]] and best_of_n.selections(cfg, 1.0, 3) == [[5]]
    assert best_of_n.selections(cfg, 0.5, 2) == [[6]]  # the best of the first two
    with pytest.raises(UserError, match="no samples at T=0.75"):
        best_of_n.selections(cfg, 0.75, 3)
