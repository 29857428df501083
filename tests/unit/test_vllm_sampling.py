"""The optional vLLM path, against a stand-in `vllm` package (vLLM itself needs a GPU): backend resolution and its
errors (single-process jobs only), what the engine is asked for (full distribution, a seed per prompt, EOS as a
stop token, the precision of the log-probs, a free rendezvous port, sleep mode), weight pushes before every call
with the engine asleep in between, a Hub-id base model, and the EOS convention of the completions it returns."""
import os
import sys
import types
from dataclasses import dataclass

import pytest
import torch
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel

from pipelines.infra.io import UserError
from pipelines.lm import vllm_engine
from pipelines.lm.sampling import batch_seed, sample_completions


@dataclass
class Out:
    token_ids: list
    finish_reason: str


class FakeLLM:
    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs, self.pushed, self.calls, self.events = kwargs, [], [], []
        runner = types.SimpleNamespace(load_weights=self._load)
        worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(model=runner))
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=worker))
        FakeLLM.instances.append(self)

    def _load(self, weights):
        self.pushed.append([n for n, _ in weights])
        self.events.append("push")

    def reset_prefix_cache(self):
        pass

    def sleep(self, level):
        self.events.append(f"sleep{level}")

    def wake_up(self, tags=None):
        self.events.append("wake:" + ",".join(tags))

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        # prompt [a, b] -> completion: stops on EOS for even a (EOS left out, as vLLM may), else runs to the limit
        outs = []
        for p, sp in zip(prompts, params):
            ids = p["prompt_token_ids"]
            if ids[0] % 2 == 0:
                outs.append(types.SimpleNamespace(outputs=[Out([5, 6], "stop")]))
            else:
                outs.append(types.SimpleNamespace(outputs=[Out([7] * sp.max_tokens, "length")]))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    module.__spec__ = types.SimpleNamespace(name="vllm")
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    monkeypatch.setattr(vllm_engine.importlib.util, "find_spec",
                        lambda name, *a: module.__spec__ if name == "vllm" else None)
    monkeypatch.setattr(vllm_engine, "_STATE", {"backend": "hf", "gpu_memory_utilization": 0.3, "engine": None})
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # restored after the test
        monkeypatch.setenv(key, "0")
        monkeypatch.delenv(key)
    FakeLLM.instances.clear()
    return module


def test_hf_everywhere_and_auto_is_hf_without_vllm():
    assert vllm_engine.resolve_backend("hf") == "hf"
    if not vllm_engine.vllm_available():
        assert vllm_engine.resolve_backend("auto") == "hf"
    with pytest.raises(UserError, match="backend must be one of"):
        vllm_engine.resolve_backend("sglang")


def test_vllm_without_the_package_or_a_gpu_is_a_clear_error(monkeypatch, fake_vllm):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        vllm_engine.resolve_backend("vllm")
    assert vllm_engine.resolve_backend("auto") == "hf"
    monkeypatch.setattr(vllm_engine.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match="pip install vllm"):
        vllm_engine.resolve_backend("vllm")


def test_auto_is_resolved_into_the_config_before_stage_hashes(monkeypatch, fake_vllm):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = OmegaConf.create({"task": {"generation": {"backend": "auto"}}, "vllm_gpu_memory_utilization": 0.25})
    OmegaConf.set_struct(cfg, True)
    assert vllm_engine.configure(cfg) == "vllm"
    assert cfg.task.generation.backend == "vllm" and vllm_engine.active()
    assert vllm_engine.gpu_memory_utilization() == 0.25


def test_sampling_through_vllm_pushes_weights_and_keeps_the_project_conventions(tmp_path, monkeypatch, fake_vllm):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    vllm_engine.configure(OmegaConf.create({"task": {"generation": {"backend": "vllm"}}}))
    config = GPT2Config(vocab_size=32, n_positions=24, n_embd=16, n_layer=1, n_head=2, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    from pipelines.lm.models import load_policy

    policy = load_policy(tmp_path)
    prompts = [[2, 3], [3, 4], [4, 5]]
    out = sample_completions(policy, prompts, max_new_tokens=4, eos_id=0, pad_id=0, batch_size=2, seed=7, tag="t",
                             temperature=1.0)
    # stopped on EOS -> EOS appended; cut at the limit -> no EOS
    assert out == [[5, 6, 0], [7, 7, 7, 7], [5, 6, 0]]
    (llm,) = FakeLLM.instances
    assert llm.kwargs["model"] == str(tmp_path) and llm.kwargs["max_model_len"] == 24
    assert llm.kwargs["trust_remote_code"] is False and llm.kwargs["gpu_memory_utilization"] == 0.3
    # fp32 log-probs here (no bf16 inference on a CPU): the engine samples in fp32 too, never a silent half
    assert llm.kwargs["dtype"] == "float32" and llm.kwargs["enable_sleep_mode"] is True
    assert llm.kwargs["load_format"] == "dummy"  # the weights come from the pushes, never from its files
    assert os.environ["MASTER_PORT"] != "29533" and int(os.environ["MASTER_PORT"]) > 0
    prompts_sent, params = llm.calls[0]
    assert [p["prompt_token_ids"] for p in prompts_sent] == prompts
    for sp in params:  # the full distribution, the KL's sampling distribution
        assert (sp.temperature, sp.top_k, sp.top_p, sp.min_p, sp.max_tokens, sp.stop_token_ids) == \
            (1.0, 0, 1.0, 0.0, 4, [0])
    assert [sp.seed for sp in params] == [batch_seed(7, "t", i) for i in range(3)]
    # the policy's current weights were pushed, under transformers' names; again before the next call
    assert llm.pushed[0] == list(policy.state_dict())
    with torch.no_grad():
        policy.lm_head.weight.add_(1.0)
    sample_completions(policy, prompts[:1], max_new_tokens=2, eos_id=0, pad_id=0, batch_size=2, seed=7, tag="t")
    assert len(llm.pushed) == 2 and len(FakeLLM.instances) == 1  # one engine per process
    # asleep between calls (training has the GPU), woken for the push: weights first, then the KV cache
    assert llm.events == ["push", "sleep1", "wake:weights", "push", "wake:kv_cache", "sleep1"]


def test_a_policy_built_in_memory_cannot_seed_an_engine(monkeypatch, fake_vllm):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    vllm_engine.configure(OmegaConf.create({"task": {"generation": {"backend": "vllm"}}}))
    policy = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=24, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(UserError, match="loaded from a folder or the Hub"):
        sample_completions(policy, [[1]], max_new_tokens=2, eos_id=0, pad_id=0, batch_size=1, seed=0)


def test_a_hub_id_base_model_seeds_the_engine_at_its_resolved_revision(monkeypatch, fake_vllm):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    vllm_engine.configure(OmegaConf.create({"task": {"generation": {"backend": "vllm"}}}))
    policy = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=24, n_embd=16, n_layer=1, n_head=2))
    policy.config._name_or_path = "EleutherAI/gpt-j-6b"  # as from_pretrained(<Hub id>) leaves it
    policy.config._commit_hash = "a" * 40
    sample_completions(policy, [[2]], max_new_tokens=2, eos_id=0, pad_id=0, batch_size=1, seed=0)
    (llm,) = FakeLLM.instances
    assert llm.kwargs["model"] == "EleutherAI/gpt-j-6b" and llm.kwargs["revision"] == "a" * 40


def test_vllm_is_single_process_only(monkeypatch, fake_vllm):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert vllm_engine.resolve_backend("auto") == "hf"
    with pytest.raises(UserError, match="runs in single-process jobs, and this launch has 4 processes"):
        vllm_engine.resolve_backend("vllm")
