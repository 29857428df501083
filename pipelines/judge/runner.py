"""Run many pairwise judgments robustly: seeded A/B order, an on-disk cache, retries, a clean stop, cost accounting.

Paid calls are the most expensive thing in the benchmark, so the rules are: nothing is paid for twice (every
answer is cached on disk the moment it arrives, and a re-run reads the cache first), nothing answered is lost
(a crash, a kill or a stop after repeated failures keeps every cached answer; the next run asks only for the
rest), and nothing is guessed (an answer the parser cannot read is `invalid` and counted).

Cache: one JSON file per answer at `<cache_dir>/<key[:2]>/<key>.json`, key = sha256 of the JSON list
[backend name, model, template text, prompt, first text, second text], first/second as displayed (A, B), so the
two orders of one comparison are two entries. Written atomically (temp file + os.replace). It holds the texts,
the raw answer and token usage; never a key or a header.

Stop rule: after `max_consecutive_failures` calls in a row that failed even after their retries, the run stops
and raises `JudgeStopped`, which carries the partial `JudgeReport` (stopped=True). An exception rather than a
flag, so a caller cannot mistake a partial report for a finished one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tenacity
from tqdm.auto import tqdm

from pipelines.infra.io import atomic_write_json
from pipelines.judge.backends import Answer, Judge, JudgeRequest, PermanentJudgeError, TransientJudgeError
from pipelines.judge.prompt import check_template, parse_verdict, render

log = logging.getLogger(__name__)
CACHE_SCHEMA = 1
# Dry-run token estimate: about 4 characters per token for English text (OpenAI's rule of thumb).
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Comparison:
    """One policy output against its reference, for one prompt. `id` must be unique within a run."""
    id: str
    prompt: str
    candidate: str
    reference: str


@dataclass
class Judgment:
    """One answered call. swapped=True: the reference was shown as A. primary=False: the mirrored order, judged
    only with both_orders. winner is the underlying text the verdict picks; None when the answer is invalid."""
    id: str
    swapped: bool
    primary: bool
    order: tuple[str, str]       # what was shown as (A, B): ("candidate", "reference") or the reverse
    raw: str                     # the judge's answer, verbatim
    verdict: str | None          # "A", "B" or None
    winner: str | None           # "candidate", "reference" or None
    valid: bool
    usage: dict[str, int]
    cached: bool                 # True: read from the cache, no call made now
    p_first: float | None = None  # P(A) for judges that have it (the local LM judge)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready row (for judgments.jsonl)."""
        d = asdict(self)
        d["order"] = list(self.order)
        return d


@dataclass
class JudgeReport:
    """Outcome of `run_judgments`. Costs and usage count only the calls made in this run; on a dry run `usage`
    and `estimated_cost` are the estimate for the calls still needed."""
    judgments: list[Judgment]
    failures: list[dict[str, Any]]   # {"id", "swapped", "primary", "error"}: calls that failed after retries
    n_calls: int                     # calls answered now
    n_cached: int                    # judgments read from the cache
    n_invalid: int                   # judgments whose answer did not parse
    n_retries: int                   # extra attempts after transient errors
    n_calls_needed: int              # calls not in the cache when the run started
    usage: dict[str, int]            # prompt_tokens, completion_tokens
    estimated_cost: float            # from the configured prices per 1M tokens
    agreement_rate: float | None     # both orders: fraction of comparisons with two valid, agreeing verdicts
    n_agreement: int                 # comparisons with both orders answered (the rate's denominator)
    position_bias: float | None      # fraction of valid verdicts that chose the text shown first (A)
    n_position: int                  # valid verdicts behind position_bias
    stopped: bool = False
    dry_run: bool = False

    @property
    def primary(self) -> list[Judgment]:
        """The judgments in each comparison's seeded order: one per comparison, what a win rate should count."""
        return [j for j in self.judgments if j.primary]

    def summary(self) -> dict[str, Any]:
        """Every field but the per-judgment lists, for results.json."""
        d = asdict(self)
        d.pop("judgments")
        d["failures"] = len(self.failures)
        return d

    def describe(self, price_in_per_m: float = 0.0, price_out_per_m: float = 0.0) -> str:
        """One human-readable line (the dry run prints this before anything is spent)."""
        tokens = f"{self.usage['prompt_tokens']:,} input + {self.usage['completion_tokens']:,} output tokens"
        prices = f"at {price_in_per_m:g}/{price_out_per_m:g} per 1M input/output tokens"
        if self.dry_run:
            return (f"dry run: {self.n_calls_needed} call(s) needed, {self.n_cached} cached; estimated "
                    f"{tokens} (input ~ characters/{CHARS_PER_TOKEN}, output = max_tokens), "
                    f"~{self.estimated_cost:.4f} {prices}")
        return (f"{self.n_calls} call(s) made, {self.n_cached} cached, {self.n_retries} retries, "
                f"{len(self.failures)} failed, {self.n_invalid} invalid; {tokens}, ~{self.estimated_cost:.4f} "
                f"{prices}" + ("; STOPPED" if self.stopped else ""))


class JudgeStopped(RuntimeError):
    """Raised after `max_consecutive_failures` failed calls in a row; `.report` holds what was answered."""

    def __init__(self, report: JudgeReport, last_error: str):
        super().__init__(f"judging stopped after {len(report.failures)} failed call(s), the last {last_error!r}; "
                         f"{len(report.judgments)} answer(s) kept (all cached). Fix the cause and rerun: only "
                         "the missing calls will be made.")
        self.report = report


# --------------------------------------------------------------------------------------------------- helpers
def display_swapped(seed: int, comparison_id: str) -> bool:
    """Whether the reference is shown as A. Seeded per comparison (not by position in the list), so the order of
    a comparison does not change when others are added or removed. Random(str) hashes with sha512: stable
    across processes and PYTHONHASHSEED."""
    return random.Random(f"judge-order/{seed}/{comparison_id}").random() < 0.5


def cache_key(backend: str, model: str, template: str, prompt: str, first: str, second: str) -> str:
    """sha256 over an unambiguous encoding (a JSON list) of what determines the answer, order included."""
    blob = json.dumps([backend, model, template, prompt, first, second], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / key[:2] / f"{key}.json"


def _read_cache(cache_dir: Path | None, key: str) -> dict | None:
    if cache_dir is None:
        return None
    path = cache_path(cache_dir, key)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:  # cannot happen with atomic writes, unless edited by hand
        log.warning("ignoring unreadable judge cache entry %s (%s)", path, err)
        return None
    return entry if entry.get("key") == key and isinstance(entry.get("raw"), str) else None


def win_rate(judgments: list[Judgment]) -> tuple[float, float, int, int]:
    """(rate, s.e., n_valid, n_invalid): rate = share of valid judgments that prefer the candidate,
    s.e. = sqrt(p (1 - p) / n_valid). Invalid answers are left out of n and reported beside it; ties cannot occur
    (every valid verdict names one text). Pass `report.primary` so each comparison counts once."""
    valid = [j for j in judgments if j.valid]
    n, n_invalid = len(valid), len(judgments) - len(valid)
    if n == 0:
        return math.nan, math.nan, 0, n_invalid
    p = sum(j.winner == "candidate" for j in valid) / n
    return p, math.sqrt(p * (1 - p) / n), n, n_invalid


@dataclass
class _Task:
    comparison: Comparison
    swapped: bool
    primary: bool
    request: JudgeRequest
    key: str

    @property
    def order(self) -> tuple[str, str]:
        return ("reference", "candidate") if self.swapped else ("candidate", "reference")


def _judgment(task: _Task, raw: str, usage: dict, cached: bool, p_first: float | None) -> Judgment:
    verdict = parse_verdict(raw)
    winner = None if verdict is None else task.order[0 if verdict == "A" else 1]
    return Judgment(id=task.comparison.id, swapped=task.swapped, primary=task.primary, order=task.order, raw=raw,
                    verdict=verdict, winner=winner, valid=verdict is not None, usage=dict(usage), cached=cached,
                    p_first=p_first)


class _Skipped(Exception):
    """A call given up because the run stopped (no answer, no failure counted)."""


@dataclass
class _Counters:
    """Shared between worker threads, guarded by `lock`."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    retries: int = 0
    consecutive_failures: int = 0
    last_error: str = ""
    stopped: bool = False


# ---------------------------------------------------------------------------------------------------- runner
def run_judgments(judge: Judge, template_text: str, comparisons: list[Comparison], *, cache_dir: str | Path | None,
                  seed: int, both_orders: bool = False, concurrency: int = 4, max_retries: int = 6,
                  backoff_base: float = 0.5, backoff_max: float = 30.0, max_consecutive_failures: int = 8,
                  dry_run: bool = False, price_in_per_m: float = 0.0, price_out_per_m: float = 0.0,
                  progress: bool = True) -> JudgeReport:
    """Judge every comparison (candidate vs reference) with `judge`; see the module docstring for the rules.

    Retries: transient errors (429, 5xx, timeouts, connection errors) are retried up to `max_retries` times after
    a delay drawn uniformly from [0, min(backoff_max, backoff_base * 2**attempt)] ("full jitter"; never shorter
    than a server's Retry-After, capped at backoff_max). Permanent errors (other 4xx) fail at once. Any other
    exception is a bug or a user error: the run stops and re-raises it (answers so far stay cached).
    `cache_dir=None` (or a judge with cacheable=False) disables the cache.
    Raises JudgeStopped (carrying the partial report) after `max_consecutive_failures` failed calls in a row.
    """
    check_template(template_text)
    ids = [c.id for c in comparisons]
    if len(set(ids)) != len(ids):
        raise ValueError("comparison ids must be unique within a run")
    cache_dir = Path(cache_dir) if (cache_dir is not None and judge.cacheable) else None

    # 1. display orders and requests, in a fixed order (primary then mirror, per comparison)
    tasks: list[_Task] = []
    for c in comparisons:
        swapped = display_swapped(seed, c.id)
        for primary, swap in [(True, swapped)] + ([(False, not swapped)] if both_orders else []):
            first, second = (c.reference, c.candidate) if swap else (c.candidate, c.reference)
            request = JudgeRequest(render(template_text, c.prompt, first, second), c.prompt, first, second)
            key = cache_key(judge.name, judge.model, template_text, c.prompt, first, second)
            tasks.append(_Task(c, swap, primary, request, key))

    # 2. what the cache already holds; identical requests (same key) are asked once
    results: dict[int, Judgment] = {}
    pending: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        entry = _read_cache(cache_dir, task.key)
        if entry is not None:
            results[i] = _judgment(task, entry["raw"], entry.get("usage", {}), True, entry.get("p_first"))
        else:
            pending.setdefault(task.key, []).append(i)
    n_cached = len(results)

    if dry_run:
        est_in = sum(math.ceil(len(tasks[idx[0]].request.rendered) / CHARS_PER_TOKEN) for idx in pending.values())
        est_out = len(pending) * judge.max_tokens
        return _report(tasks, results, [], 0, n_cached, 0, len(pending),
                       {"prompt_tokens": est_in, "completion_tokens": est_out}, price_in_per_m, price_out_per_m,
                       stopped=False, dry_run=True)

    # 3. ask for the rest
    counters = _Counters()
    stop = threading.Event()
    jitter = random.Random()  # delays only; they do not affect any result

    def wait_for(state: tenacity.RetryCallState) -> float:
        """Full jitter, never shorter than the server's Retry-After, capped at backoff_max."""
        ceiling = min(backoff_max, backoff_base * 2 ** (state.attempt_number - 1))
        retry_after = getattr(state.outcome.exception(), "retry_after", None) or 0.0
        return min(backoff_max, max(jitter.uniform(0, ceiling), retry_after))

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):  # the run stopped (too many failures, a bug elsewhere, Ctrl-C): give up this call
            raise _Skipped

    def counted(state: tenacity.RetryCallState) -> None:
        with counters.lock:
            counters.retries += 1
        log.debug("judge call: %s; retry %d", state.outcome.exception(), state.attempt_number)

    def ask(request: JudgeRequest) -> Answer:
        if stop.is_set():
            raise _Skipped
        return judge.complete(request)

    # Transient errors (429, 5xx, timeouts, connection errors) are retried; permanent ones (other 4xx) and
    # anything else end the call at once (reraise: the call's own exception, not tenacity's RetryError).
    retrying = tenacity.Retrying(retry=tenacity.retry_if_exception_type(TransientJudgeError),
                                 stop=tenacity.stop_after_attempt(max_retries + 1), wait=wait_for, sleep=sleep,
                                 before_sleep=counted, reraise=True)

    def call(task: _Task) -> Answer | str | None:
        """The answer (cached before returning), an error message when the call failed, or None when skipped."""
        try:
            answer = retrying(ask, task.request)
        except _Skipped:
            return None
        except (TransientJudgeError, PermanentJudgeError) as err:
            error = str(err)
        else:
            if cache_dir is not None:
                atomic_write_json(cache_path(cache_dir, task.key), {
                    "schema": CACHE_SCHEMA, "key": task.key, "backend": judge.name, "model": judge.model,
                    "template_sha256": hashlib.sha256(template_text.encode("utf-8")).hexdigest(),
                    "prompt": task.request.prompt, "first": task.request.first, "second": task.request.second,
                    "raw": answer.text, "usage": answer.usage, "p_first": answer.p_first,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            with counters.lock:
                counters.consecutive_failures = 0
            return answer
        with counters.lock:
            counters.consecutive_failures += 1
            counters.last_error = error
            if counters.consecutive_failures >= max_consecutive_failures:
                counters.stopped = True
                stop.set()
        log.warning("judge call for %s failed: %s", task.comparison.id, error)
        return error

    failures: list[dict[str, Any]] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    n_calls = 0
    bar = tqdm(total=len(pending), desc=f"judge {judge.name}:{judge.model}", disable=not progress or not pending)
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="judge")
    try:
        futures: dict[Future, str] = {pool.submit(call, tasks[idx[0]]): key for key, idx in pending.items()}
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for fut in done:
                out = fut.result()  # re-raises a worker's unexpected exception (the finally stops the others)
                idx = pending[futures[fut]]
                bar.update(1)
                if isinstance(out, Answer):
                    n_calls += 1
                    for k in usage:
                        usage[k] += int(out.usage.get(k, 0))
                    for n, i in enumerate(idx):  # duplicates of a request share its one call
                        results[i] = _judgment(tasks[i], out.text, out.usage, n > 0, out.p_first)
                elif isinstance(out, str):
                    failures += [{"id": tasks[i].comparison.id, "swapped": tasks[i].swapped,
                                  "primary": tasks[i].primary, "error": out} for i in idx]
    finally:
        stop.set()  # on any exit (a bug in a worker, Ctrl-C): queued calls are dropped, running ones end soon
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()

    report = _report(tasks, results, failures, n_calls, n_cached, counters.retries, len(pending), usage,
                     price_in_per_m, price_out_per_m, stopped=counters.stopped, dry_run=False)
    log.info("judge %s:%s: %s", judge.name, judge.model, report.describe(price_in_per_m, price_out_per_m))
    if counters.stopped:
        raise JudgeStopped(report, counters.last_error)
    return report


def _report(tasks: list[_Task], results: dict[int, Judgment], failures: list[dict], n_calls: int, n_cached: int,
            n_retries: int, n_needed: int, usage: dict[str, int], price_in: float, price_out: float, *,
            stopped: bool, dry_run: bool) -> JudgeReport:
    judgments = [results[i] for i in range(len(tasks)) if i in results]
    valid = [j for j in judgments if j.valid]
    # Agreement: comparisons judged in both orders; they agree when both verdicts are valid and pick the same text.
    by_id: dict[str, dict[bool, Judgment]] = {}
    for j in judgments:
        by_id.setdefault(j.id, {})[j.primary] = j
    pairs = [(d[True], d[False]) for d in by_id.values() if len(d) == 2]
    agree = sum(a.valid and b.valid and a.winner == b.winner for a, b in pairs)
    cost = usage["prompt_tokens"] * price_in / 1e6 + usage["completion_tokens"] * price_out / 1e6
    return JudgeReport(
        judgments=judgments, failures=failures, n_calls=n_calls, n_cached=n_cached,
        n_invalid=len(judgments) - len(valid), n_retries=n_retries, n_calls_needed=n_needed, usage=dict(usage),
        estimated_cost=cost, agreement_rate=agree / len(pairs) if pairs else None, n_agreement=len(pairs),
        position_bias=sum(j.verdict == "A" for j in valid) / len(valid) if valid else None, n_position=len(valid),
        stopped=stopped, dry_run=dry_run)
