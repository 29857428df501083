"""The paper-scale summarization (GPT-J) and dialogue (Pythia / GPT-NeoX) presets run offline on tiny models of the
same architectures saved locally, on local files in the TL;DR / CNN-DM / HH schemas, judged by a local LM judge
(a tiny GPT-2 saved the same way): every method of each preset, the paper's models and data ids in the configs."""
import json
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTJConfig, GPTJForCausalLM, GPTNeoXConfig, GPTNeoXForCausalLM

from pipelines.lm.models import train_tokenizer
from pipelines.run import run_pipeline
from tests.helpers import compose_cfg, write_hh_files, write_tldr_files


def test_paper_presets_name_the_papers_models_and_data():
    tldr = compose_cfg(["experiment=summarization_paper"])
    assert tldr.model.pretrained == "EleutherAI/gpt-j-6b" and tldr.task.data.source == "hf"
    assert tldr.task.data.hf.sft == "CarperAI/openai_summarize_tldr"
    assert tldr.task.data.hf.comparisons == "CarperAI/openai_summarize_comparisons"
    assert (tldr.task.data.hf.ood, tldr.task.data.hf.ood_config) == ("cnn_dailymail", "3.0.0")
    assert list(tldr.task.winrate.temperatures) == [0.0, 0.25, 0.5, 0.75, 1.0] and tldr.judge.backend == "openai"
    dpo = compose_cfg(["experiment=summarization_paper", "method=dpo"]).method
    assert dpo.beta == 0.5 and dpo.learning_rate == 1e-6 and dpo.optimizer == "rmsprop" and dpo.warmup_steps == 150
    assert dpo.batch_size * dpo.gradient_accumulation_steps == 64
    assert compose_cfg(["experiment=summarization_paper", "method=bon"]).method.n_grid[-1] == 128
    hh = compose_cfg(["experiment=dialogue_paper"])
    assert hh.model.pretrained == "EleutherAI/pythia-2.8b" and hh.task.data.hf.comparisons == "Anthropic/hh-rlhf"
    assert hh.task.data.test_single_turn
    assert compose_cfg(["experiment=dialogue_paper", "method=dpo"]).method.beta == 0.1
    assert compose_cfg(["experiment=dialogue_paper", "method=base"]).method.shots == 2


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    tldr, hh = write_tldr_files(root), write_hh_files(root)
    texts = [line for f in [*tldr.values(), *hh.values()] for line in Path(f).read_text().splitlines()]
    tok = train_tokenizer(texts, 400, 1)
    torch.manual_seed(0)
    ids = {"bos_token_id": tok.eos_token_id, "eos_token_id": tok.eos_token_id}
    models = {
        "gptj": GPTJForCausalLM(GPTJConfig(vocab_size=len(tok), n_positions=256, n_embd=32, n_layer=1, n_head=2,
                                           rotary_dim=8, **ids)),
        "neox": GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=64,
                                                 max_position_embeddings=256, rotary_pct=0.25, **ids)),
        # the judge reads the whole rendered comparison: a long context
        "judge": GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=2048, n_embd=32, n_layer=1, n_head=2,
                                            **ids)),
    }
    for name, model in models.items():
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return {"root": root, "tldr": tldr, "hh": hh}


def _cfg(stand_ins, tmp_path, experiment, model, files, *extra):
    return compose_cfg([
        f"experiment={experiment}", f"model.pretrained={stand_ins['root'] / model}",
        *(f"task.data.local.{k}={v}" for k, v in files.items()), "task.data.source=local",
        "judge=local_smollm2", f"judge.path={stand_ins['root'] / 'judge'}", "judge.gguf_file=null", "judge.fetch=null",
        "model.sft.batch_size=8", "reward_model.batch_size=8", "task.prompt.max_tokens=96",
        "task.generation.max_new_tokens=6", "task.generation.batch_size=8", "task.generation.backend=hf",
        "task.winrate.n_prompts=4", "wandb.mode=disabled", f"paths.root={tmp_path / 'runs'}", *extra])


SMALL = {"dpo": ["method.max_steps=2", "method.batch_size=4", "method.gradient_accumulation_steps=1"],
         "preferred_ft": ["method.max_steps=2", "method.batch_size=4", "method.gradient_accumulation_steps=1"],
         "ppo": ["method.total_steps=2", "method.batch_size=4", "method.minibatch_size=2", "method.micro_batch_size=2",
                 "method.n_prompts=8", "method.score_norm_samples=4"],
         "bon": ["method.n_grid=[1,2]", "method.chunk_prompts=2", "method.sample_batch_size=8"],
         "sft": [], "base": []}


def _rates(cfg):
    return json.loads(Path(cfg.paths.method, "winrate", cfg.judge.name, "winrates.json").read_text())


def test_summarization_paper_preset_on_a_tiny_gptj(stand_ins, tmp_path):
    for method in ("sft", "dpo", "preferred_ft", "ppo", "bon", "base"):
        cfg = _cfg(stand_ins, tmp_path, "summarization_paper", "gptj", stand_ins["tldr"], f"method={method}",
                   "task.winrate.ood_n_prompts=4", *SMALL[method])
        run_pipeline(cfg)
        rates = _rates(cfg)
        test = [r for r in rates if r["split"] == "test"]
        assert [r["temperature"] for r in test] == [0.0, 0.25, 0.5, 0.75, 1.0], method
        assert all(r["n"] + r["n_invalid"] == 4 and r["judge"] == "local_smollm2" for r in rates), method
        # the out-of-distribution CNN/DM prompts at T = 0, for every policy (Best-of-N samples the test prompts only)
        assert [r["temperature"] for r in rates if r["split"] == "ood"] == ([] if method == "bon" else [0.0])
    done = json.loads((Path(cfg.paths.sft) / "done.json").read_text())
    assert done["metrics"]["train_examples"] > 0
    config = json.loads((Path(cfg.paths.sft) / "policy" / "config.json").read_text())
    assert config["model_type"] == "gptj"


def test_dialogue_paper_preset_on_a_tiny_neox_with_a_two_shot_base(stand_ins, tmp_path):
    for method in ("sft", "dpo", "bon", "base"):
        cfg = _cfg(stand_ins, tmp_path, "dialogue_paper", "neox", stand_ins["hh"], f"method={method}",
                   "task.prompt.max_tokens=120", *SMALL[method])
        run_pipeline(cfg)
        assert [r["temperature"] for r in _rates(cfg)] == [0.25, 0.5, 0.7, 1.0], method
    samples = Path(cfg.paths.method, "winrate", cfg.judge.name, "samples_test_T0.25.jsonl").read_text()
    assert samples and cfg.method.tag == "base_2shot"
    config = json.loads((Path(cfg.paths.sft) / "policy" / "config.json").read_text())
    assert config["model_type"] == "gpt_neox"


def test_base_method_needs_a_pretrained_model():
    from pipelines.infra.io import UserError
    from pipelines.run import check as validate
    with pytest.raises(UserError, match="method=base prompts the pretrained base model"):
        validate(compose_cfg(["experiment=summarization_embedded", "method=base"]))
