"""Loaders of the paper's summarization and dialogue data, one code path for Hub ids and local files in the same
schema.

  TL;DR SFT          CarperAI/openai_summarize_tldr           prompt, label
  TL;DR comparisons  CarperAI/openai_summarize_comparisons    prompt, chosen, rejected
  CNN/DailyMail      cnn_dailymail (config 3.0.0)             article, highlights
  Anthropic HH       Anthropic/hh-rlhf                        chosen, rejected (whole transcripts)

Each loader returns the project's records: SFT {prompt, completion}, preference {prompt, chosen, rejected},
evaluation {prompt, reference}. A completion starts with a space where the prompt ends with a marker ("TL;DR:",
"Assistant:"), so prompt + completion is the text the policy reads and writes. A structurally malformed row (a
missing column value, no assistant turn) is a UserError naming its row numbers; rows that are well formed but
unusable (an empty answer, chosen == rejected, HH transcripts that part before their last turn) are dropped and
counted, as the raw datasets contain a few of them.
"""
from __future__ import annotations

from pathlib import Path

from pipelines.infra.io import UserError, hub_hint

TLDR = "TL;DR:"
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
# Out-of-distribution summarization prompt: the news article in the TL;DR format (the judge is told it is a news
# article rather than a forum post).
CNN_DM_TEMPLATE = "{article}\nTL;DR:"
COLUMNS = {"tldr_sft": ("prompt", "label"), "tldr_comparisons": ("prompt", "chosen", "rejected"),
           "cnn_dailymail": ("article", "highlights"), "hh": ("chosen", "rejected")}


def load_rows(kind: str, *, source: str, hf_id: str | None = None, hf_config: str | None = None,
              split: str = "train", local_files=None) -> list[dict]:
    """The rows of one split with the columns of `kind` (COLUMNS), from the Hub (source=hf) or local .jsonl/.json,
    .parquet or .csv files (source=local, one file or a list; their rows are concatenated)."""
    import datasets

    from pipelines.tasks.data import read_table

    columns = COLUMNS[kind]
    if source == "hf":
        from pipelines.infra.hub import loaded, revision_of

        revision = revision_of(hf_id)
        try:
            tables = [(hf_id, datasets.load_dataset(hf_id, hf_config, split=split, revision=revision))]
        except Exception as err:  # the Hub unreachable, an unknown id, revision or split
            raise hub_hint(hf_id, err, revision) from None
        loaded(hf_id, revision)
    elif source == "local":
        files = [local_files] if isinstance(local_files, str) else list(local_files or [])
        if not files:
            raise UserError(f"{kind}: source=local needs local_files (a path or a list of paths)")
        tables = [(str(name), read_table(Path(name))) for name in files]
    else:
        raise UserError(f"{kind}: unknown source '{source}' (hf or local)")
    rows = []
    for name, table in tables:
        missing = set(columns) - set(table.column_names)
        if missing:
            raise UserError(f"{name}: missing column(s) {sorted(missing)} for {kind} (expected {list(columns)}); "
                            f"found {table.column_names}")
        rows += [dict(r, _source=name) for r in table.select_columns(list(columns))]
    return rows


def _raise_bad(kind: str, bad: list[str]) -> None:
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise UserError(f"{kind}: {len(bad)} malformed row(s){more}:\n  " + "\n  ".join(bad[:5]))


def _text(row: dict, key: str) -> str | None:
    value = row.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _after_marker(text: str, marker: str) -> str:
    """' ' + the text without a leading marker (the comparisons repeat the prompt's "TL;DR:")."""
    text = text.strip()
    if text.startswith(marker):
        text = text[len(marker):].strip()
    return " " + text


def _tldr_prompt(prompt: str) -> str:
    prompt = prompt.rstrip()
    return prompt if prompt.endswith(TLDR) else prompt + "\n" + TLDR


def _from_two_fields(rows: list[dict], first: str, second: str, kind: str, make) -> list[dict]:
    """make(first, second) for every row with both texts; a UserError naming the rows that lack one."""
    out, bad = [], []
    for i, row in enumerate(rows):
        x, y = _text(row, first), _text(row, second)
        if x is None or y is None:
            bad.append(f"row {i} ({row['_source']}): empty or missing {first if x is None else second}")
            continue
        out.append(make(x, y))
    _raise_bad(kind, bad)
    return out


def tldr_sft(rows: list[dict]) -> list[dict]:
    """SFT records from TL;DR posts and their reference summaries: the prompt ends with 'TL;DR:'."""
    return _from_two_fields(rows, "prompt", "label", "TL;DR SFT data",
                            lambda prompt, label: {"prompt": _tldr_prompt(prompt),
                                                   "completion": _after_marker(label, TLDR)})


def tldr_comparisons(rows: list[dict]) -> tuple[list[dict], dict]:
    """Preference records from TL;DR comparisons; pairs whose two summaries are the same are dropped (counted)."""
    out, bad, ties = [], [], 0
    for i, row in enumerate(rows):
        fields = {k: _text(row, k) for k in ("prompt", "chosen", "rejected")}
        empty = [k for k, v in fields.items() if v is None]
        if empty:
            bad.append(f"row {i} ({row['_source']}): empty or missing {', '.join(empty)}")
            continue
        chosen, rejected = _after_marker(fields["chosen"], TLDR), _after_marker(fields["rejected"], TLDR)
        if chosen == rejected:
            ties += 1
            continue
        out.append({"prompt": _tldr_prompt(fields["prompt"]), "chosen": chosen, "rejected": rejected})
    _raise_bad("TL;DR comparisons", bad)
    return out, {"n_pairs": len(out), "n_identical_dropped": ties}


def cnn_dailymail(rows: list[dict], template: str = CNN_DM_TEMPLATE) -> list[dict]:
    """Evaluation records from CNN/DailyMail: the article in the TL;DR prompt format, the highlights as reference."""
    return _from_two_fields(rows, "article", "highlights", "CNN/DailyMail",
                            lambda article, highlights: {"prompt": template.format(article=article.strip()),
                                                         "reference": " " + highlights.strip()})


def split_transcript(text: str) -> tuple[str, str]:
    """(dialogue up to and including the last 'Assistant:', the last answer); ValueError without an answer turn.
    A transcript may start with 'Human:' or, as in the dataset, with a blank line before it."""
    if text.lstrip("\n").startswith("Human:"):
        text = "\n\n" + text.lstrip("\n")
    cut = text.rfind(ASSISTANT)
    if cut < 0 or text.find(HUMAN) < 0 or text.find(HUMAN) > cut:
        raise ValueError("no 'Human:' turn followed by an 'Assistant:' turn")
    end = cut + len(ASSISTANT)
    return text[:end], text[end:]


def hh(rows: list[dict], single_turn: bool = False) -> tuple[list[dict], dict]:
    """Preference records from Anthropic HH transcripts: the shared dialogue up to the last 'Assistant:' is the
    prompt, the two last answers are chosen and rejected. single_turn keeps only dialogues with one human turn (the
    paper's evaluation subset)."""
    out, bad = [], []
    counts = {"n_multi_turn_dropped": 0, "n_empty_answer_dropped": 0, "n_identical_dropped": 0,
              "n_prompt_mismatch_dropped": 0}
    for i, row in enumerate(rows):
        chosen, rejected = row.get("chosen"), row.get("rejected")
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            bad.append(f"row {i} ({row['_source']}): chosen and rejected must both be text")
            continue
        try:
            (prompt, answer_c), (prompt_r, answer_r) = split_transcript(chosen), split_transcript(rejected)
        except ValueError as err:
            bad.append(f"row {i} ({row['_source']}): {err}")
            continue
        if prompt.strip() != prompt_r.strip():
            # Anthropic/hh-rlhf has a few of these (the two transcripts part before their last turn): well formed, but
            # not a comparison of two answers to one prompt. Dropped and counted.
            counts["n_prompt_mismatch_dropped"] += 1
            continue
        if single_turn and prompt.count(HUMAN) != 1:
            counts["n_multi_turn_dropped"] += 1
            continue
        if not answer_c.strip() or not answer_r.strip():
            counts["n_empty_answer_dropped"] += 1
            continue
        if answer_c.strip() == answer_r.strip():
            counts["n_identical_dropped"] += 1
            continue
        out.append({"prompt": prompt.lstrip("\n"), "chosen": " " + answer_c.strip(),
                    "rejected": " " + answer_r.strip()})
    _raise_bad("Anthropic HH", bad)
    return out, {"n_pairs": len(out), **counts}
