"""The OpenAI-compatible judge against a real HTTP server on loopback, scripted to misbehave.

The server speaks just enough of POST /v1/chat/completions for the `openai` SDK. As a judge it prefers the
displayed text that contains GOOD (the candidates here), so every valid verdict must map back to "candidate"
whatever the A/B order. Each test scripts its faults by request number and asserts what the server saw.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from pipelines.infra.io import UserError
from pipelines.judge import Comparison, JudgeStopped, OpenAIJudge, load_template, run_judgments, win_rate
from tests.helpers import ROOT

KEY_ENV = "RVD_TEST_JUDGE_KEY"
TEMPLATE = load_template("sentiment")
FAST = dict(backoff_base=0.001, backoff_max=0.01, progress=False)


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict | None = None  # None: a well-formed answer from the GOOD rule
    delay: float = 0.0
    text: str | None = None           # answer content for a 200 (None: the GOOD rule)


class ChatServer:
    """ThreadingHTTPServer on 127.0.0.1:<random port>; `script(n)` (n = 1, 2, ... per request) picks the reply."""

    def __init__(self, script: Callable[[int], Reply] = lambda n: Reply()):
        self.script, self.requests, self.lock = script, [], threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with server.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    server.requests.append({"path": self.path, "body": body, "headers": headers})
                    n = len(server.requests)
                reply = server.script(n)
                time.sleep(reply.delay)
                if reply.status == 200 and reply.body is None:
                    content = reply.text if reply.text is not None else good_rule(body["messages"][0]["content"])
                    payload = {"id": f"c{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": content}}],
                               "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}
                else:
                    payload = reply.body if reply.body is not None else {"error": {"message": "scripted error"}}
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def good_rule(message: str) -> str:
    """Prefer the continuation containing GOOD, in the template's answer format."""
    a = re.search(r"Continuation A:\n(.*?)\n\nContinuation B:", message, re.S).group(1)
    letter = "A" if "GOOD" in a else "B"
    return f"Comparison: {letter} is warmer.\nPreferred: {letter}"


@pytest.fixture
def server():
    servers = []

    def start(script=lambda n: Reply()):
        servers.append(ChatServer(script))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


@pytest.fixture
def api_key(monkeypatch) -> str:
    key = f"sk-test-{os.urandom(12).hex()}"
    monkeypatch.setenv(KEY_ENV, key)
    return key


def comparisons(n: int) -> list[Comparison]:
    return [Comparison(f"c{i}", f"The film {i}", f" was GOOD number {i}", f" was plain number {i}") for i in range(n)]


def judge_for(srv: ChatServer, timeout: float = 5.0) -> OpenAIJudge:
    return OpenAIJudge("judge-model", srv.url, KEY_ENV, max_tokens=64, timeout=timeout)


def test_good_answers_then_cached_rerun_makes_no_requests(server, api_key, tmp_path):
    srv = server()
    comps = comparisons(6)
    report = run_judgments(judge_for(srv), TEMPLATE, comps, cache_dir=tmp_path / "cache", seed=0, **FAST)
    assert len(srv.requests) == 6 and report.n_calls == 6 and report.n_retries == 0 and report.n_cached == 0
    assert win_rate(report.judgments) == (1.0, 0.0, 6, 0)
    assert {j.swapped for j in report.judgments} == {True, False}  # both orders occur under seed 0
    assert report.usage == {"prompt_tokens": 600, "completion_tokens": 120}
    sent = srv.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["model"] == "judge-model" and sent["body"]["temperature"] == 0
    assert sent["body"]["max_tokens"] == 64 and "max_completion_tokens" not in sent["body"]
    assert sent["headers"]["authorization"] == f"Bearer {api_key}"  # the key is sent, and only sent

    again = run_judgments(judge_for(srv), TEMPLATE, comps, cache_dir=tmp_path / "cache", seed=0, **FAST)
    assert len(srv.requests) == 6 and again.n_calls == 0 and again.n_cached == 6
    assert [j.raw for j in again.judgments] == [j.raw for j in report.judgments]
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 6


def test_slow_answer_times_out_and_is_retried(server, api_key, tmp_path):
    srv = server(lambda n: Reply(delay=1.5 if n == 1 else 0.0))
    report = run_judgments(judge_for(srv, timeout=0.3), TEMPLATE, comparisons(1), cache_dir=tmp_path, seed=0,
                           concurrency=1, **FAST)
    assert len(srv.requests) == 2 and report.n_retries == 1 and report.n_calls == 1 and report.n_invalid == 0


@pytest.mark.parametrize("first_reply", [
    Reply(status=429, body={"error": {"message": "slow down", "type": "rate_limit"}}),
    Reply(status=500),
    Reply(status=503),
    Reply(status=200, body=b'{"choices": [{"message": '),  # malformed JSON in a 200
], ids=["429", "500", "503", "malformed-json"])
def test_transient_fault_then_success_is_retried_once(server, api_key, tmp_path, first_reply):
    srv = server(lambda n: first_reply if n == 1 else Reply())
    report = run_judgments(judge_for(srv), TEMPLATE, comparisons(1), cache_dir=tmp_path, seed=0, concurrency=1,
                           **FAST)
    assert len(srv.requests) == 2 and report.n_retries == 1
    assert report.n_calls == 1 and report.judgments[0].winner == "candidate" and not report.failures


def test_unparseable_answers_are_invalid_counted_and_not_retried(server, api_key, tmp_path):
    bad = {2: "Both are fine.", 4: "Comparison: A is nicer.\nPreferred: A or B", 5: "Preferred: A\nPreferred: B"}
    srv = server(lambda n: Reply(text=bad.get(n)))
    report = run_judgments(judge_for(srv), TEMPLATE, comparisons(6), cache_dir=tmp_path, seed=0, concurrency=1,
                           **FAST)
    assert len(srv.requests) == 6 and report.n_retries == 0 and report.n_invalid == 3
    assert sorted(j.raw for j in report.judgments if not j.valid) == sorted(bad.values())
    assert all(j.winner is None and j.verdict is None for j in report.judgments if not j.valid)
    assert win_rate(report.judgments) == (1.0, 0.0, 3, 3)
    # invalid answers are answers: cached, never asked again
    again = run_judgments(judge_for(srv), TEMPLATE, comparisons(6), cache_dir=tmp_path, seed=0, **FAST)
    assert len(srv.requests) == 6 and again.n_invalid == 3


def test_client_error_is_not_retried(server, api_key, tmp_path):
    srv = server(lambda n: Reply(status=400, body={"error": {"message": "context too long"}}))
    report = run_judgments(judge_for(srv), TEMPLATE, comparisons(3), cache_dir=tmp_path, seed=0, concurrency=1,
                           max_consecutive_failures=10, **FAST)
    assert len(srv.requests) == 3 and report.n_retries == 0 and not report.judgments
    assert len(report.failures) == 3 and "HTTP 400" in report.failures[0]["error"] and not report.stopped
    assert not list(tmp_path.rglob("*.json"))  # a failure is not an answer: nothing cached


def test_persistent_500s_stop_the_run_and_keep_what_was_answered(server, api_key, tmp_path):
    k, n = 3, 8
    srv = server(lambda i: Reply() if i <= k else Reply(status=500))
    with pytest.raises(JudgeStopped) as stop:
        run_judgments(judge_for(srv), TEMPLATE, comparisons(n), cache_dir=tmp_path, seed=0, concurrency=1,
                      max_retries=2, max_consecutive_failures=2, **FAST)
    partial = stop.value.report
    assert partial.stopped and len(partial.judgments) == k and len(partial.failures) == 2
    assert len(srv.requests) == k + 2 * (1 + 2)  # two failed calls, each tried 1 + max_retries times
    assert partial.n_retries == 4 and len(list(tmp_path.rglob("*.json"))) == k

    healthy = server()  # the endpoint recovers: only the missing answers are asked for
    report = run_judgments(judge_for(healthy), TEMPLATE, comparisons(n), cache_dir=tmp_path, seed=0, **FAST)
    assert len(healthy.requests) == n - k and report.n_cached == k and report.n_calls == n - k
    assert win_rate(report.judgments)[2] == n


class CrashingJudge(OpenAIJudge):
    """Stands for a process killed mid-run: after `ok` answers, the next call raises an unexpected error."""

    def __init__(self, *args, ok: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.ok, self.count, self.count_lock = ok, 0, threading.Lock()

    def complete(self, request):
        with self.count_lock:
            self.count += 1
            crash = self.count > self.ok
        if crash:
            raise KeyboardInterrupt("killed")
        return super().complete(request)


def test_crash_mid_run_loses_nothing_answered(server, api_key, tmp_path):
    srv = server()
    with pytest.raises(KeyboardInterrupt):
        run_judgments(CrashingJudge("judge-model", srv.url, KEY_ENV, ok=4), TEMPLATE, comparisons(10),
                      cache_dir=tmp_path, seed=0, concurrency=1, **FAST)
    assert len(srv.requests) == 4 and len(list(tmp_path.rglob("*.json"))) == 4
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no half-written entry
    dry = run_judgments(judge_for(srv), TEMPLATE, comparisons(10), cache_dir=tmp_path, seed=0, dry_run=True, **FAST)
    assert dry.n_calls_needed == 6 and dry.n_cached == 4 and len(srv.requests) == 4  # a dry run asks nothing
    report = run_judgments(judge_for(srv), TEMPLATE, comparisons(10), cache_dir=tmp_path, seed=0, **FAST)
    assert len(srv.requests) == 10 and report.n_cached == 4 and report.n_calls == 6


def test_missing_key_stops_before_any_request(server, monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    srv = server()
    with pytest.raises(UserError, match=KEY_ENV):
        run_judgments(judge_for(srv), TEMPLATE, comparisons(2), cache_dir=tmp_path, seed=0, **FAST)
    assert srv.requests == []


def test_keyless_server_gets_a_placeholder_key(server, monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    srv = server()
    judge = OpenAIJudge("judge-model", srv.url, KEY_ENV, require_key=False)
    run_judgments(judge, TEMPLATE, comparisons(1), cache_dir=tmp_path, seed=0, **FAST)
    assert srv.requests[0]["headers"]["authorization"] == "Bearer EMPTY"


def test_the_shipped_openai_config_follows_openai_base_url_and_sends_max_completion_tokens(server, api_key,
                                                                                          monkeypatch, tmp_path):
    from omegaconf import OmegaConf

    from pipelines.judge import build_judge

    srv = server()
    monkeypatch.setenv("OPENAI_BASE_URL", srv.url)  # a gateway set in the environment, as the SDK documents
    cfg = OmegaConf.load(ROOT / "conf" / "judge" / "openai.yaml")
    cfg.api_key_env = KEY_ENV
    run_judgments(build_judge(cfg), TEMPLATE, comparisons(1), cache_dir=tmp_path, seed=0, **FAST)
    body = srv.requests[0]["body"]
    assert body["max_completion_tokens"] == 128 and "max_tokens" not in body and body["model"] == "gpt-4o-mini"


def test_api_key_never_reaches_files_logs_or_the_judge(server, api_key, tmp_path, caplog, capsys):
    """Every path that writes: answers (cached), invalid answers, retries, a 4xx whose body echoes the key."""
    caplog.set_level(logging.DEBUG)  # the SDK's and httpx's debug logging included
    script = {1: Reply(status=429), 2: Reply(text="no verdict"),
              3: Reply(status=401, body={"error": {"message": f"Incorrect API key provided: {api_key}"}})}
    srv = server(lambda n: script.get(n, Reply()))
    judge = judge_for(srv)
    report = run_judgments(judge, TEMPLATE, comparisons(5), cache_dir=tmp_path / "cache", seed=0, concurrency=1,
                           both_orders=True, max_consecutive_failures=5, **{**FAST, "progress": True})
    assert srv.requests[2]["headers"]["authorization"] == f"Bearer {api_key}"
    assert len(report.failures) == 1 and "***" in report.failures[0]["error"]  # echoed key scrubbed
    (tmp_path / "results.json").write_text(json.dumps({"summary": report.summary(), "failures": report.failures,
                                                       "judgments": [j.to_dict() for j in report.judgments]}))
    (tmp_path / "judge.pkl").write_bytes(pickle.dumps(judge))

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 10
    for path in written:
        assert api_key.encode() not in path.read_bytes(), path
    assert api_key not in caplog.text and api_key not in repr(judge) and api_key not in str(vars(judge))
    out = capsys.readouterr()
    assert api_key not in out.out and api_key not in out.err
    assert pickle.loads(pickle.dumps(judge))._client is None  # the client (it holds the key) is never pickled


def test_one_sdk_client_serves_every_call_and_thread(server, api_key, tmp_path, monkeypatch):
    import openai

    made = []
    real = openai.OpenAI

    def counting(*args, **kwargs):
        made.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(openai, "OpenAI", counting)
    srv = server(lambda n: Reply())
    report = run_judgments(judge_for(srv), TEMPLATE, comparisons(12), cache_dir=tmp_path, seed=0, concurrency=4,
                           **FAST)
    assert len(srv.requests) == 12 and report.n_calls == 12
    assert len(made) == 1 and made[0]["max_retries"] == 0  # one client; the runner's retry policy, not the SDK's


def test_connection_refused_is_retried_then_stops(api_key, tmp_path):
    from pipelines.infra.distributed import free_port

    port = free_port()  # nothing listens on it
    judge = OpenAIJudge("judge-model", f"http://127.0.0.1:{port}/v1", KEY_ENV, timeout=2.0)
    with pytest.raises(JudgeStopped) as stop:
        run_judgments(judge, TEMPLATE, comparisons(5), cache_dir=tmp_path, seed=0, concurrency=1, max_retries=2,
                      max_consecutive_failures=2, **FAST)
    report = stop.value.report
    assert report.n_retries == 4 and len(report.failures) == 2 and "APIConnectionError" in report.failures[0]["error"]
