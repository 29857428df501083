"""Loaders of the summarization and dialogue data on local fixtures in each Hugging Face schema: the TL;DR prompt
format, the single-turn HH filter, CNN/DailyMail's prompt, and errors that name the malformed rows."""
import csv
import json

import pytest

from pipelines.infra.io import UserError
from pipelines.tasks import preference_data as pd_


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


POST = "SUBREDDIT: r/cooking\nTITLE: Burnt rice again\nPOST: Every time I make rice the bottom burns.\nTL;DR:"


def test_tldr_sft_keeps_the_prompt_format_and_spaces_the_summary(tmp_path):
    f = jsonl(tmp_path / "tldr.jsonl", [{"prompt": POST, "label": "rice keeps burning, help"},
                                        {"prompt": POST[:-len("\nTL;DR:")], "label": " TL;DR: lower the heat"}])
    rows = pd_.tldr_sft(pd_.load_rows("tldr_sft", source="local", local_files=str(f)))
    assert rows[0] == {"prompt": POST, "completion": " rice keeps burning, help"}
    # a prompt without the marker gets it; a summary that repeats it loses it
    assert rows[1] == {"prompt": POST, "completion": " lower the heat"}


def test_tldr_errors_name_the_rows(tmp_path):
    f = jsonl(tmp_path / "tldr.jsonl", [{"prompt": POST, "label": "ok"}, {"prompt": POST, "label": ""},
                                        {"prompt": None, "label": "x"}])
    with pytest.raises(UserError, match=r"2 malformed row\(s\)") as err:
        pd_.tldr_sft(pd_.load_rows("tldr_sft", source="local", local_files=str(f)))
    assert "row 1" in str(err.value) and "empty or missing label" in str(err.value)
    assert "row 2" in str(err.value) and "empty or missing prompt" in str(err.value)


def test_missing_columns_and_files_are_clear(tmp_path):
    f = jsonl(tmp_path / "c.jsonl", [{"prompt": POST, "chosen": "a"}])
    with pytest.raises(UserError, match=r"missing column\(s\) \['rejected'\]"):
        pd_.load_rows("tldr_comparisons", source="local", local_files=str(f))
    with pytest.raises(UserError, match="file not found"):
        pd_.load_rows("hh", source="local", local_files=str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="needs local_files"):
        pd_.load_rows("hh", source="local")


def test_tldr_comparisons_strip_the_repeated_marker_and_drop_identical_pairs(tmp_path):
    with open(tmp_path / "cmp.csv", "w", newline="") as f:  # csv works as well as jsonl
        w = csv.DictWriter(f, fieldnames=["prompt", "chosen", "rejected"])
        w.writeheader()
        w.writerow({"prompt": POST, "chosen": "TL;DR: lower the heat", "rejected": "TL;DR: buy a new pot"})
        w.writerow({"prompt": POST, "chosen": "TL;DR: same", "rejected": "same"})
    pairs, stats = pd_.tldr_comparisons(pd_.load_rows("tldr_comparisons", source="local",
                                                      local_files=str(tmp_path / "cmp.csv")))
    assert pairs == [{"prompt": POST, "chosen": " lower the heat", "rejected": " buy a new pot"}]
    assert stats == {"n_pairs": 1, "n_identical_dropped": 1}


def test_cnn_dailymail_puts_the_article_in_the_tldr_format(tmp_path):
    f = jsonl(tmp_path / "cnn.jsonl", [{"article": "  The council met on Monday.  ", "highlights": "Council met.",
                                        "id": "x1"}])
    (row,) = pd_.cnn_dailymail(pd_.load_rows("cnn_dailymail", source="local", local_files=str(f)))
    assert row == {"prompt": "The council met on Monday.\nTL;DR:", "reference": " Council met."}


ONE = "\n\nHuman: How do I boil an egg?\n\nAssistant:"
TWO = "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: How do I boil an egg?\n\nAssistant:"


def test_hh_splits_at_the_last_answer_and_filters_single_turn(tmp_path):
    rows = [{"chosen": ONE + " Boil it for nine minutes.", "rejected": ONE + " No idea."},
            {"chosen": TWO + " Nine minutes in boiling water.", "rejected": TWO + " Why?"},
            {"chosen": ONE + " Same.", "rejected": ONE + " Same."},
            {"chosen": ONE + " Nine minutes.", "rejected": ONE},  # empty rejected answer
            # no leading blank line (a hand-made file): still one human turn
            {"chosen": ONE.lstrip("\n") + " Eight minutes.", "rejected": ONE.lstrip("\n") + " Raw."}]
    f = jsonl(tmp_path / "hh.jsonl", rows)
    loaded = pd_.load_rows("hh", source="local", local_files=[str(f)])
    pairs, stats = pd_.hh(loaded)
    assert stats == {"n_pairs": 3, "n_multi_turn_dropped": 0, "n_empty_answer_dropped": 1, "n_identical_dropped": 1,
                     "n_prompt_mismatch_dropped": 0}
    assert pairs[0] == {"prompt": ONE.lstrip("\n"), "chosen": " Boil it for nine minutes.", "rejected": " No idea."}
    assert pairs[1]["prompt"] == TWO.lstrip("\n") and pairs[1]["chosen"] == " Nine minutes in boiling water."
    single, stats = pd_.hh(loaded, single_turn=True)
    assert [p["chosen"] for p in single] == [" Boil it for nine minutes.", " Eight minutes."]
    assert stats["n_multi_turn_dropped"] == 1
    assert all(p["prompt"].endswith("Assistant:") for p in pairs)


def test_hh_malformed_rows_are_named(tmp_path):
    rows = [{"chosen": ONE + " fine", "rejected": ONE + " ok"},
            {"chosen": "just text", "rejected": "more text"},
            {"chosen": ONE + " a", "rejected": TWO + " b"},
            {"chosen": 3, "rejected": ONE + " b"}]
    with pytest.raises(UserError, match=r"2 malformed row\(s\)") as err:
        pd_.hh(pd_.load_rows("hh", source="local", local_files=str(jsonl(tmp_path / "hh.jsonl", rows[:3]))) +
               [dict(rows[3], _source="memory")])
    text = str(err.value)
    assert "row 1" in text and "no 'Human:' turn" in text
    assert "row 3 (memory): chosen and rejected must both be text" in text and "row 2" not in text
    # transcripts that part before their last turn (real HH has a few) are dropped and counted, not an error
    pairs, stats = pd_.hh(pd_.load_rows("hh", source="local", local_files=str(jsonl(tmp_path / "ok.jsonl",
                                                                                      [rows[0], rows[2]]))))
    assert len(pairs) == 1 and stats["n_prompt_mismatch_dropped"] == 1


def test_hub_ids_fail_with_the_offline_hint(monkeypatch):
    import datasets

    calls = []

    def offline(*args, **kwargs):
        calls.append((args, kwargs))
        raise ConnectionError("Couldn't reach 'Anthropic/hh-rlhf' on the Hub")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match="(?s)cannot reach the Hugging Face Hub for 'Anthropic/hh-rlhf'.*local copy"):
        pd_.load_rows("hh", source="hf", hf_id="Anthropic/hh-rlhf", split="test")
    assert calls == [(("Anthropic/hh-rlhf", None), {"split": "test", "revision": None})]
    with pytest.raises(UserError):
        pd_.load_rows("cnn_dailymail", source="hf", hf_id="cnn_dailymail", hf_config="3.0.0", split="test")
    assert calls[-1] == (("cnn_dailymail", "3.0.0"), {"split": "test", "revision": None})
