"""The judge core: verdict parser, templates, A/B order, win-rate s.e., dry run, runner rules, the three backends
(the local one on a tiny GPT-2 built in-process, no download) and the judge configs."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel

from pipelines.infra.io import UserError
from pipelines.judge import (
    Answer,
    Comparison,
    Judge,
    JudgeRequest,
    JudgeStopped,
    Judgment,
    LocalLMJudge,
    OpenAIJudge,
    OracleJudge,
    TransientJudgeError,
    build_judge,
    builtin_templates,
    cache_key,
    cache_path,
    check_template,
    display_swapped,
    load_template,
    parse_verdict,
    render,
    run_judgments,
    run_options,
    verdict_line,
    win_rate,
)
from pipelines.lm.models import train_tokenizer

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template("sentiment")
QUIET = dict(progress=False, backoff_base=0.001, backoff_max=0.01)


# ------------------------------------------------------------------------------------------------------ parser
@pytest.mark.parametrize("answer,expected", [
    ("Comparison: A is kinder.\nPreferred: A", "A"),
    ("Comparison: B is kinder.\nPreferred: B\n", "B"),
    ("Preferred: B", "B"),
    ("  Comparison: same.  \r\n\r\n   Preferred: A   \n\n", "A"),
    ("Comparison: A is preferred: it is warmer.\nPreferred: A", "A"),  # 'preferred:' mid-sentence is no verdict
    ("Comparison: A mentions B's point.\nPreferred: B", "B"),
    (None, None),
    ("", None),
    ("   \n  ", None),
    ("Comparison: A is better.", None),                  # no verdict line
    ("Preferred: A\nComparison: it is.", None),          # verdict not last
    ("Preferred: A\nPreferred: A", None),                # two verdict lines, even agreeing
    ("Preferred: A\nPreferred: B", None),
    ("**Preferred:** B\nPreferred: B", None),            # a malformed earlier verdict line still counts as one
    ("Preferred: A or B", None),
    ("Preferred: A and B", None),
    ("Preferred: Neither", None),
    ("Preferred: Both", None),
    ("Preferred: AB", None),
    ("Preferred: a", None),
    ("preferred: A", None),
    ("Preferred: A.", None),
    ("Preferred:A", None),
    ("Preferred:  A", None),
    ("**Preferred: A**", None),
    ("Preferred: **A**", None),
    ("Preferred: Summary A", None),
    ("Preferred: C", None),
    ("A", None),
    ("The answer is A", None),
])
def test_parse_verdict(answer, expected):
    assert parse_verdict(answer) == expected


def test_verdict_line_round_trips_and_refuses_other_letters():
    assert [parse_verdict(verdict_line(x)) for x in "AB"] == ["A", "B"]
    with pytest.raises(ValueError):
        verdict_line("C")


# --------------------------------------------------------------------------------------------------- templates
def test_builtin_templates_ask_for_the_verdict_format():
    assert builtin_templates() == ["dialogue", "package_synopsis", "sentiment", "summarization_c",
                                   "summarization_news", "summarization_s"]
    for name in builtin_templates():
        text = load_template(name)
        assert "Preferred: <the letter A or the letter B" in text and "Comparison:" in text
        shown = render(text, "P{x}", "first {0}", "second }{")  # braces in the data are kept verbatim
        assert "P{x}" in shown and "first {0}" in shown and "second }{" in shown
        assert shown.index("first {0}") < shown.index("second }{")
    assert "concise" in load_template("summarization_c") and "concise" not in load_template("summarization_s")


def test_own_template_file_and_bad_templates(tmp_path, monkeypatch):
    mine = tmp_path / "mine.txt"
    mine.write_text("Q {prompt}\nA) {first}\nB) {second}\nJSON like {{\"k\": 1}}\nPreferred: A or B?")
    assert load_template(str(mine)).startswith("Q {prompt}")
    monkeypatch.chdir(tmp_path)
    assert render(load_template("mine.txt"), "p", "a", "b").startswith("Q p\nA) a\nB) b\nJSON like {\"k\": 1}")
    for bad in ["{prompt} {first}", "{prompt} {first} {second} {third}", "{prompt} {first} {second} {",
                "{prompt} {first!r} {second}", "{prompt} {first:>9} {second}", "{} {prompt} {first} {second}"]:
        with pytest.raises(UserError):
            check_template(bad)
    with pytest.raises(UserError, match="neither a built-in"):
        load_template("no_such_template")


# ---------------------------------------------------------------------------------------------- order, s.e., key
def test_display_order_is_seeded_per_comparison_and_stable():
    # Fixed values: a change in the seeding scheme changes every stored order, so it must be deliberate.
    assert [display_swapped(0, f"c{i}") for i in range(8)] == [True, True, True, False, False, True, False, False]
    assert [display_swapped(1, f"c{i}") for i in range(8)] == [True, True, True, True, False, False, False, True]
    assert 900 < sum(display_swapped(0, f"x{i}") for i in range(2000)) < 1100


def test_win_rate_standard_error_by_hand():
    def j(winner):
        return Judgment("i", False, True, ("candidate", "reference"), "", None if winner is None else "A", winner,
                        winner is not None, {}, False)
    judgments = [j("candidate")] * 7 + [j("reference")] * 3 + [j(None)] * 2
    rate, se, n, n_invalid = win_rate(judgments)
    # p = 7/10, s.e. = sqrt(0.7 * 0.3 / 10) = sqrt(0.021) = 0.144914
    assert (rate, n, n_invalid) == (0.7, 10, 2) and se == pytest.approx(0.144914, abs=1e-6)
    assert math.isnan(win_rate([j(None)])[0]) and win_rate([j(None)])[2:] == (0, 1)


def test_cache_key_covers_every_field_and_the_order(tmp_path):
    base = ("openai", "m", "T", "p", "x", "y")
    keys = {cache_key(*base)} | {cache_key(*base[:i], base[i] + "!", *base[i + 1:]) for i in range(6)}
    assert len(keys) == 7 and cache_key(*base) != cache_key("openai", "m", "T", "p", "y", "x")
    assert cache_key("a", "bc", "", "", "", "") != cache_key("ab", "c", "", "", "", "")  # no concatenation clash
    key = cache_key(*base)
    assert cache_path(tmp_path, key) == tmp_path / key[:2] / f"{key}.json"


# --------------------------------------------------------------------------------------------------- the runner
class FakeJudge:
    """In-process judge: `rule(request) -> text`; can fail transiently for the first `flaky` calls."""
    name, model, cacheable, max_tokens = "fake", "fake-1", True, 50

    def __init__(self, rule, flaky: int = 0):
        self.rule, self.flaky, self.calls = rule, flaky, []

    def complete(self, request):
        self.calls.append(request)
        if len(self.calls) <= self.flaky:
            raise TransientJudgeError("HTTP 503: busy")
        return Answer(self.rule(request), {"prompt_tokens": 1000, "completion_tokens": 10})


def prefers(word):
    return lambda r: verdict_line("A" if word in r.first else "B")


def comps(n):
    return [Comparison(f"c{i}", f"Opening {i}", f" CAND {i}", f" REF {i}") for i in range(n)]


def test_both_orders_map_back_to_candidate_and_reference(tmp_path):
    judge = FakeJudge(prefers("CAND"))
    report = run_judgments(judge, TEMPLATE, comps(8), cache_dir=tmp_path, seed=0, both_orders=True, **QUIET)
    assert len(report.judgments) == 16 and len(report.primary) == 8
    assert [j.swapped for j in report.primary] == [display_swapped(0, f"c{i}") for i in range(8)]
    for j in report.judgments:
        assert j.winner == "candidate" and j.order == (("reference", "candidate") if j.swapped else
                                                       ("candidate", "reference"))
        assert j.verdict == ("B" if j.swapped else "A")
    mirrors = {j.id: j for j in report.judgments if not j.primary}
    assert all(mirrors[j.id].swapped != j.swapped for j in report.primary)
    assert report.agreement_rate == 1.0 and report.n_agreement == 8 and report.position_bias == 0.5
    # what was displayed follows `swapped`
    shown = {(r.first, r.second) for r in judge.calls}
    assert (" REF 0", " CAND 0") in shown and (" CAND 0", " REF 0") in shown


def test_position_biased_judge_shows_up_in_agreement_and_bias(tmp_path):
    report = run_judgments(FakeJudge(lambda r: verdict_line("A")), TEMPLATE, comps(8), cache_dir=None, seed=0,
                           both_orders=True, **QUIET)
    assert report.position_bias == 1.0 and report.agreement_rate == 0.0
    assert win_rate(report.primary)[0] == pytest.approx(sum(not display_swapped(0, f"c{i}") for i in range(8)) / 8)


def test_transient_errors_are_retried_and_identical_requests_asked_once(tmp_path):
    judge = FakeJudge(prefers("CAND"), flaky=2)
    duplicate = [Comparison("a", "p", "x CAND", "y"), Comparison("b", "p", "x CAND", "y")]
    seed = next(s for s in range(100) if display_swapped(s, "a") == display_swapped(s, "b"))  # same display
    report = run_judgments(judge, TEMPLATE, duplicate, cache_dir=tmp_path, seed=seed, concurrency=1, **QUIET)
    assert len(judge.calls) == 3 and report.n_retries == 2 and report.n_calls == 1
    assert [j.cached for j in report.judgments] == [False, True] and report.usage["prompt_tokens"] == 1000


def test_retry_waits_follow_full_jitter_with_the_servers_retry_after_as_a_floor(tmp_path, monkeypatch):
    """The waits between attempts (tenacity with the runner's policy): never shorter than Retry-After, never longer
    than backoff_max, within [0, backoff_base * 2**attempt] otherwise."""
    import threading

    waits = []
    real_wait = threading.Event.wait

    def recorded(self, timeout=None):
        if timeout is not None:
            waits.append(timeout)
            timeout = 0  # record, do not sleep
        return real_wait(self, timeout)

    monkeypatch.setattr(threading.Event, "wait", recorded)

    class AfterJudge(FakeJudge):
        def complete(self, request):
            self.calls.append(request)
            if len(self.calls) <= 3:
                raise TransientJudgeError("HTTP 429: slow down", retry_after=[2.0, 50.0, None][len(self.calls) - 1])
            return Answer(self.rule(request), {})

    judge = AfterJudge(prefers("CAND"))
    report = run_judgments(judge, TEMPLATE, comps(1), cache_dir=None, seed=0, concurrency=1,
                           **{**QUIET, "max_retries": 6, "backoff_base": 0.01, "backoff_max": 10.0})
    assert report.n_calls == 1 and report.n_retries == 3 and len(waits) == 3
    assert waits[0] == 2.0 and waits[1] == 10.0 and 0 <= waits[2] <= 0.01 * 2 ** 2


def test_stop_after_consecutive_failures_carries_partial_report(tmp_path):
    judge = FakeJudge(prefers("CAND"), flaky=10 ** 6)
    with pytest.raises(JudgeStopped) as stop:
        run_judgments(judge, TEMPLATE, comps(20), cache_dir=tmp_path, seed=0, concurrency=1, max_retries=1,
                      max_consecutive_failures=3, **QUIET)
    assert stop.value.report.stopped and len(stop.value.report.failures) == 3 and len(judge.calls) == 6


def test_dry_run_counts_uncached_calls_and_estimates_cost(tmp_path):
    judge = FakeJudge(prefers("CAND"))
    run_judgments(judge, TEMPLATE, comps(3)[:1], cache_dir=tmp_path, seed=0, **QUIET)
    n_before = len(judge.calls)
    dry = run_judgments(judge, TEMPLATE, comps(3), cache_dir=tmp_path, seed=0, both_orders=True, dry_run=True,
                        price_in_per_m=2.0, price_out_per_m=10.0, **QUIET)
    assert len(judge.calls) == n_before  # nothing asked
    # 3 comparisons x 2 orders = 6 requests, 1 cached -> 5 calls; input ~ ceil(characters / 4), output = max_tokens
    needed = []
    for c in comps(3):
        for swap in (display_swapped(0, c.id), not display_swapped(0, c.id)):
            a, b = (c.reference, c.candidate) if swap else (c.candidate, c.reference)
            needed.append(math.ceil(len(render(TEMPLATE, c.prompt, a, b)) / 4))
    cached_len = math.ceil(len(render(TEMPLATE, "Opening 0", *((" REF 0", " CAND 0") if display_swapped(0, "c0")
                                                             else (" CAND 0", " REF 0")))) / 4)
    est_in = sum(needed) - cached_len
    assert dry.dry_run and dry.n_calls_needed == 5 and dry.n_cached == 1 and dry.n_calls == 0
    assert dry.usage == {"prompt_tokens": est_in, "completion_tokens": 5 * 50}
    assert dry.estimated_cost == pytest.approx(est_in * 2.0 / 1e6 + 250 * 10.0 / 1e6)
    assert "5 call(s) needed" in dry.describe(2.0, 10.0)


def test_real_run_cost_from_usage_and_unique_ids(tmp_path):
    report = run_judgments(FakeJudge(prefers("CAND")), TEMPLATE, comps(4), cache_dir=tmp_path, seed=0,
                           price_in_per_m=2.0, price_out_per_m=10.0, **QUIET)
    assert report.estimated_cost == pytest.approx(4 * (1000 * 2.0 + 10 * 10.0) / 1e6)
    with pytest.raises(ValueError, match="unique"):
        run_judgments(FakeJudge(prefers("CAND")), TEMPLATE, comps(2) * 2, cache_dir=tmp_path, seed=0, **QUIET)


# ------------------------------------------------------------------------------------------------------ oracle
def test_oracle_judge_follows_the_reward_and_calls_ties_invalid(tmp_path):
    seen = []

    def reward(texts):
        seen.extend(texts)
        return [t.count("good") for t in texts]
    judge = OracleJudge(reward, model="count_good")
    assert isinstance(judge, Judge)
    data = [Comparison("w", "so ", "good good", "good"), Comparison("l", "so ", "meh", "good"),
            Comparison("t", "good ", "x", "y")]
    report = run_judgments(judge, TEMPLATE, data, cache_dir=tmp_path, seed=0, **QUIET)
    assert [j.winner for j in report.judgments] == ["candidate", "reference", None]
    assert report.n_invalid == 1 and "so good good" in seen  # scored as prompt + completion
    assert not any(tmp_path.iterdir())  # never cached
    assert win_rate(report.judgments)[:3] == (0.5, math.sqrt(0.25 / 2), 2)


# --------------------------------------------------------------------------------------------------- local LM
def tiny_judge(merge_letters: bool, bias_a: float, bias_b: float, chat_template: str | None = None):
    """A GPT-2 from config whose next-token logits are a fixed bias (zero output weights): P(" A") vs P(" B")
    is set by hand. merge_letters=False: a tokenizer with no merges, so " A" is two tokens."""
    texts = ["Preferred: A", "Preferred: B", "a review of the film"] * 30
    tok = train_tokenizer(texts, 400 if merge_letters else 257, 1)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=16, n_layer=1, n_head=2))
    head = torch.nn.Linear(16, len(tok), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        for letter, bias in (("A", bias_a), ("B", bias_b)):
            head.bias[tok(" " + letter, add_special_tokens=False)["input_ids"][-1]] = bias
    model.lm_head = head
    if chat_template:
        tok.chat_template = chat_template
    return LocalLMJudge(model, tok, "tiny-gpt2", device="cpu")


@pytest.mark.parametrize("merge_letters", [True, False], ids=["one-token-letters", "two-token-letters"])
@pytest.mark.parametrize("bias_a,bias_b", [(2.0, 1.0), (1.0, 3.0)])
def test_local_judge_picks_the_likelier_verdict(merge_letters, bias_a, bias_b):
    judge = tiny_judge(merge_letters, bias_a, bias_b)
    assert isinstance(judge, Judge) and (len(judge._choices["A"]) == 1) == merge_letters
    rendered = render(TEMPLATE, "The film", " was lovely", " was dull")
    text, usage, p_first = judge.complete(JudgeRequest(rendered, "The film", " was lovely", " was dull"))
    assert parse_verdict(text) == ("A" if bias_a > bias_b else "B")
    assert p_first == pytest.approx(1 / (1 + math.exp(-(bias_a - bias_b))), abs=1e-5)
    assert usage["completion_tokens"] == 0 and usage["prompt_tokens"] > 50


def test_local_judge_uses_the_chat_template_and_runs_through_the_runner(tmp_path):
    template = ("{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    judge = tiny_judge(True, 0.0, 1.0, chat_template=template)
    text = judge.input_text("hello")
    assert text == "<|user|>hello<|end|><|assistant|>Preferred:"
    report = run_judgments(judge, TEMPLATE, comps(4), cache_dir=tmp_path, seed=0, both_orders=True, **QUIET)
    # always B: the winner depends only on the display order, and the two orders always disagree
    assert all(j.verdict == "B" for j in report.judgments) and report.agreement_rate == 0.0
    assert all(j.p_first == pytest.approx(1 / (1 + math.e)) for j in report.judgments)
    cached = run_judgments(judge, TEMPLATE, comps(4), cache_dir=tmp_path, seed=0, both_orders=True, **QUIET)
    assert cached.n_cached == 8 and [j.p_first for j in cached.judgments] == [j.p_first for j in report.judgments]


def test_local_judge_refuses_prompts_longer_than_its_context():
    judge = tiny_judge(True, 1.0, 0.0)
    report = run_judgments(judge, TEMPLATE, [Comparison("long", "film " * 2000, "a", "b")], cache_dir=None,
                           seed=0, **QUIET)
    assert not report.judgments and "exceeds the judge's context" in report.failures[0]["error"]


# ----------------------------------------------------------------------------------------------------- configs
def test_every_judge_config_loads_alone_and_builds(tmp_path):
    names = sorted(p.stem for p in (ROOT / "conf" / "judge").glob("*.yaml"))
    assert names == ["local_smollm2", "openai", "oracle", "vllm"]
    for name in names:
        cfg = OmegaConf.load(ROOT / "conf" / "judge" / f"{name}.yaml")
        assert cfg.name == name and cfg.template is None  # the task picks the template unless overridden
        opts = run_options(cfg)
        assert set(opts) == {"concurrency", "max_retries", "backoff_base", "backoff_max",
                             "max_consecutive_failures", "price_in_per_m", "price_out_per_m"}
        run_judgments(FakeJudge(prefers("CAND")), TEMPLATE, comps(1), cache_dir=None, seed=0, progress=False,
                      **opts)  # the keys are the runner's own
    openai_judge = build_judge(OmegaConf.load(ROOT / "conf" / "judge" / "openai.yaml"))
    assert isinstance(openai_judge, OpenAIJudge) and isinstance(openai_judge, Judge)
    assert openai_judge.api_key_env == "OPENAI_API_KEY"
    # base_url left to the SDK ($OPENAI_BASE_URL or OpenAI's), the cap sent as max_completion_tokens
    assert openai_judge.base_url is None and openai_judge.temperature == 0
    assert openai_judge.token_limit_param == "max_completion_tokens"
    assert pickle.loads(pickle.dumps(openai_judge)).model == "gpt-4o-mini"
    with pytest.raises(UserError, match="model"):
        build_judge(OmegaConf.load(ROOT / "conf" / "judge" / "vllm.yaml"))
    vllm = OmegaConf.load(ROOT / "conf" / "judge" / "vllm.yaml")
    vllm.model = "my-model"
    assert build_judge(vllm).base_url == "http://localhost:8000/v1" and not build_judge(vllm).require_key
    assert build_judge(vllm).token_limit_param == "max_tokens"
    vllm.token_limit_param = "max_new_tokens"
    with pytest.raises(UserError, match="token_limit_param"):
        build_judge(vllm)
    oracle_cfg = OmegaConf.load(ROOT / "conf" / "judge" / "oracle.yaml")
    with pytest.raises(UserError, match="reward"):
        build_judge(oracle_cfg)
    assert isinstance(build_judge(oracle_cfg, reward=lambda t: [0.0] * len(t)), OracleJudge)
    # the local preset loads from its cache folder (no download here: fetch is turned off)
    local = OmegaConf.load(ROOT / "conf" / "judge" / "local_smollm2.yaml")
    local.path, local.fetch = str(tmp_path / "nowhere"), None
    with pytest.raises(UserError, match="does not exist"):
        build_judge(local)


def test_local_judge_loads_a_safetensors_folder(tmp_path):
    judge = tiny_judge(True, 1.0, 0.0)
    judge.lm.save_pretrained(tmp_path / "m")
    judge.tokenizer.save_pretrained(tmp_path / "m")
    cfg = OmegaConf.create({"backend": "local", "model": "tiny", "path": str(tmp_path / "m"), "gguf_file": None,
                            "fetch": None, "device": "cpu", "dtype": "float32"})
    loaded = build_judge(cfg)
    assert loaded.model == "tiny" and loaded.name == "local"
