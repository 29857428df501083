"""Mixed precision: where bf16 is used, and that PPO's old and new log-probs share one precision."""
import pytest
import torch
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel

from baselines.ppo import PPO, ValueModel
from pipelines.infra import device
from pipelines.infra.device import trainer_precision, use_bf16
from pipelines.infra.io import UserError
from tests.helpers import ROOT


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_cpu_only_where_the_cpu_has_it(no_cuda, monkeypatch, native):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    assert use_bf16("bf16") is native
    assert use_bf16("fp32") is False
    # transformers refuses bf16 without a GPU unless told it trains on the CPU
    assert trainer_precision("bf16") == ({"bf16": True, "use_cpu": True} if native else {"bf16": False})
    assert trainer_precision("fp32") == {"bf16": False}


def test_unknown_precision_is_a_user_error():
    with pytest.raises(UserError, match="fp32 or bf16"):
        use_bf16("fp16")


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    import pathlib

    real = pathlib.Path.read_text
    for flags, expected in (("fpu avx512f avx512_bf16 sse", True), ("fpu amx_bf16", True), ("fpu avx512f", False)):
        monkeypatch.setattr(pathlib.Path, "read_text",
                            lambda self, *a, f=flags, **k: f"flags\t: {f}\n" if str(self) == "/proc/cpuinfo"
                            else real(self, *a, **k))
        assert device.cpu_has_native_bf16() is expected


def _ppo(bf16: bool, lr: float) -> PPO:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, eos_token_id=0,
                        bos_token_id=0, pad_token_id=0, attn_implementation="eager")
    policy, ref = GPT2LMHeadModel(config), GPT2LMHeadModel(config)
    ref.load_state_dict(policy.state_dict())
    value = ValueModel(GPT2LMHeadModel(config).transformer)
    args = OmegaConf.load(ROOT / "conf" / "method" / "ppo.yaml")
    args.merge_with({"batch_size": 8, "minibatch_size": 4, "micro_batch_size": 4, "ppo_epochs": 2,
                     "learning_rate": lr, "value_learning_rate": lr})
    return PPO(policy, ref, value, lambda p, c: [len(x) / 10 for x in c], args, eos_id=0, pad_id=0,
               max_new_tokens=10, seed=0, generation_batch_size=8, bf16=bf16)


def test_ppo_under_bf16_recomputes_old_logprobs_in_the_update_precision():
    prompts = [[i + 1, i + 2] for i in range(8)]
    # With a zero learning rate the policy never moves: every ratio is exactly 1 only if the rollout's log-probs
    # come from the same (bf16) forward as the update's, not from the fp32 sampling pass.
    stats = _ppo(bf16=True, lr=0.0).step(0, prompts)
    assert stats["policy/approxkl"] < 1e-8 and stats["policy/clipfrac"] == 0.0
    # ...and bf16 is really on: the same rollout forward in fp32 gives different (close) log-probs.
    from baselines.ppo import pack, token_logprobs

    lp = {}
    for bf16 in (True, False):
        ppo = _ppo(bf16=bf16, lr=0.0)
        b = pack(prompts, ppo.sample(prompts, "t"), 0, "cpu")
        with torch.no_grad(), ppo.autocast():
            lp[bf16] = token_logprobs(ppo.policy, b)[b.mask]
    assert lp[True].dtype == torch.float32
    assert not torch.equal(lp[True], lp[False]) and torch.allclose(lp[True], lp[False], atol=0.1)
    # the value head stays fp32 under autocast
    with ppo.autocast():
        values = ppo.value_model(b.ids, b.attn)
    assert values.dtype == torch.float32


def test_inference_precision_is_bf16_only_on_a_bf16_gpu(monkeypatch):
    from pipelines.infra import device

    monkeypatch.setitem(device._INFERENCE, "bf16", False)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        device.configure_inference("bf16", "cpu")  # the CPU default: fp32 whatever the preset says
        assert not device.inference_bf16()
        assert not torch.backends.cuda.matmul.allow_tf32
        with device.inference_autocast(torch.device("cpu")):
            assert not torch.is_autocast_enabled("cpu")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        device.configure_inference("fp32", "auto")  # a GPU, an fp32 preset: fp32 inference, TF32 matmuls
        assert not device.inference_bf16() and torch.backends.cuda.matmul.allow_tf32
        device.configure_inference("bf16", "auto")
        assert device.inference_bf16()
        with device.inference_autocast(torch.device("cpu")):  # never on a CPU tensor's device
            assert not torch.is_autocast_enabled("cpu")
        # ... and never switches off an autocast the caller opened (the reference log-probs' training precision)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with device.inference_autocast(torch.device("cpu")):
                assert torch.is_autocast_enabled("cpu")
                assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def test_gradient_checkpointing_only_where_the_preset_asks():
    from tests.helpers import compose_cfg

    assert device.gradient_checkpointing(compose_cfg(["model=gptj_6b"]).model)
    for model in ("tiny", "gpt2_large", "pythia_2_8b"):
        assert not device.gradient_checkpointing(compose_cfg([f"model={model}"]).model), model
