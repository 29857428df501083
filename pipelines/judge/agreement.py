"""Validate a judge before trusting it: its agreement with human preference labels and its position bias.

gpt-4-0314, the paper's judge, is retired; whatever replaces it should be checked on comparisons that carry a human
label (e.g. the TL;DR comparisons of Stiennon et al., `CarperAI/openai_summarize_comparisons`, whose `chosen` is the
human-preferred summary). Every comparison is judged in both A/B orders, so the report separates the judge's taste
(agreement with humans, on the first order) from its position bias (how often it picks whatever is shown first)
and its self-consistency (both orders name the same text).

  python -m pipelines.judge.agreement --judge conf/judge/openai.yaml --data comparisons.jsonl --n 200 --dry-run
  python -m pipelines.judge.agreement --judge conf/judge/openai.yaml --data CarperAI/openai_summarize_comparisons \
      --split test --template summarization_c --n 200

Data: columns prompt, chosen, rejected (chosen = the human-preferred text); local .jsonl/.json/.csv/.parquet files
or a Hugging Face dataset id. Answers go to the same on-disk cache as the win-rate stage, so nothing is paid twice.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from pipelines.infra.io import UserError, atomic_write_json, hub_hint
from pipelines.judge.backends import build_judge, run_options
from pipelines.judge.prompt import load_template
from pipelines.judge.runner import Comparison, JudgeReport, run_judgments

log = logging.getLogger(__name__)
COLUMNS = ("prompt", "chosen", "rejected")
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_comparisons(data: str, split: str, n: int | None) -> list[Comparison]:
    """The first n labelled comparisons of a local file or a Hub dataset; the human-preferred text is the candidate."""
    from datasets import load_dataset

    path = Path(data)
    try:
        if path.suffix in LOCAL_FORMATS:
            if not path.is_file():
                raise UserError(f"--data {data}: no such file")
            ds = load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
        else:
            from pipelines.infra.hub import revision_of

            ds = load_dataset(data, split=split, revision=revision_of(data))
    except UserError:
        raise
    except Exception as err:  # a Hub id offline, a broken file: one clear message
        raise (hub_hint(data, err) if not path.suffix else UserError(f"--data {data}: cannot read it ({err})")) from err
    missing = [c for c in COLUMNS if c not in ds.column_names]
    if missing:
        raise UserError(f"--data {data}: needs columns {COLUMNS}, missing {missing} (has {ds.column_names})")
    rows = ds.select(range(min(n, len(ds)))) if n else ds
    out = []
    for i, r in enumerate(rows):
        if not all(isinstance(r[c], str) and r[c].strip() for c in COLUMNS):
            raise UserError(f"--data {data}: row {i} has an empty or non-text prompt/chosen/rejected")
        out.append(Comparison(id=f"human/{i}", prompt=r["prompt"], candidate=r["chosen"], reference=r["rejected"]))
    return out


def agreement_summary(report: JudgeReport) -> dict:
    """Agreement with the human label on the first-shown order of each comparison, and the judge's consistency."""
    first = report.primary
    valid = [j for j in first if j.valid]
    agree = sum(j.winner == "candidate" for j in valid)
    return {"n_comparisons": len(first), "n_valid": len(valid), "n_invalid": len(first) - len(valid),
            "human_agreement": agree / len(valid) if valid else None,
            "self_agreement_across_orders": report.agreement_rate, "n_both_orders_valid": report.n_agreement,
            "position_bias_first_shown": report.position_bias, "n_position": report.n_position,
            "calls": report.n_calls, "cached": report.n_cached, "estimated_cost": report.estimated_cost}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", required=True, help="a conf/judge/*.yaml file (openai, vllm, local_smollm2)")
    ap.add_argument("--data", required=True, help="local file or Hugging Face dataset id with prompt/chosen/rejected")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=200, help="comparisons to judge (each in both orders)")
    ap.add_argument("--template", default="summarization_c", help="built-in template name or a path")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="runs/judge_cache", help="the on-disk answer cache")
    ap.add_argument("--out", default=None, help="write the report as JSON here")
    ap.add_argument("--dry-run", action="store_true", help="count the calls and the cost; call nothing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = OmegaConf.load(args.judge)
        if cfg.backend == "oracle":
            raise UserError("the oracle judge has no opinion to validate; use an LLM judge config")
        template = load_template(cfg.get("template") or args.template)
        comparisons = load_comparisons(args.data, args.split, args.n)
        report = run_judgments(build_judge(cfg), template, comparisons, cache_dir=Path(args.cache), seed=args.seed,
                               both_orders=True, dry_run=args.dry_run, **run_options(cfg))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(report.describe(cfg.get("price_in_per_m", 0.0), cfg.get("price_out_per_m", 0.0)))
        return 0
    result = {"judge": str(cfg.get("name", cfg.backend)), "model": str(cfg.model), "data": args.data,
              "template": args.template, **agreement_summary(report)}
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(Path(args.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
