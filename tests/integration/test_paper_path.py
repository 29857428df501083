"""The paper-scale code path (pretrained causal LM, its own tokenizer, a pretrained sequence classifier as r*)
run offline on tiny same-architecture models saved locally and on local files in the IMDb schema."""
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, RobertaConfig, RobertaForSequenceClassification

from pipelines.infra.io import UserError
from pipelines.lm.models import train_tokenizer
from pipelines.run import run_pipeline
from pipelines.tasks.gold_reward import HFClassifierReward
from tests.helpers import compose_cfg, review_rows


@pytest.fixture(scope="module")
def local_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    tok = train_tokenizer([r["text"] for r in review_rows()], 300, 1)
    tok.model_max_length = 60
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                                    eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id))
    lm.save_pretrained(root / "gpt2-tiny")
    tok.save_pretrained(root / "gpt2-tiny")
    clf = RobertaForSequenceClassification(RobertaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=tok.pad_token_id, id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1}))
    clf.save_pretrained(root / "siebert-tiny")
    tok.save_pretrained(root / "siebert-tiny")
    return root


def paper_cfg(local_models, tmp_path, *extra):
    # IMDb's schema: text + label (0 = neg, 1 = pos)
    data = tmp_path / "imdb_like.parquet"
    pd.DataFrame(review_rows(80)).to_parquet(data)
    return compose_cfg(["experiment=sentiment_paper", f"model.pretrained={local_models / 'gpt2-tiny'}",
                        "model.sft.block_size=32", "model.sft.batch_size=8", "task.data.source=local",
                        f"task.data.local_files={data}", f"task.reward.hf_id={local_models / 'siebert-tiny'}",
                        "task.pairs.n_prompts=8", "task.eval.n_prompts=8", "task.winrate.n_prompts=4",
                        "task.eval.n_validation_prompts=4", "task.pairs.n_validation_prompts=2",
                        "task.pairs.n_test_prompts=2",
                        "task.generation.max_new_tokens=6",
                        "wandb.mode=disabled", f"paths.root={tmp_path / 'runs'}", *extra])


def test_paper_preset_runs_on_local_stand_ins(local_models, tmp_path):
    cfg = paper_cfg(local_models, tmp_path, "method.max_steps=2", "method.eval_every=1", "method.batch_size=4")
    run_pipeline(cfg)
    evals = sorted(Path(cfg.paths.method, "eval").glob("step*.json"))
    assert [p.name for p in evals] == ["step000001.json", "step000002.json"]
    import json
    reward_metrics = json.loads(Path(cfg.paths.reward, "done.json").read_text())["metrics"]
    assert reward_metrics["kind"] == "hf_classifier" and 0 <= reward_metrics["test_accuracy"] <= 1
    # win rates against SFT, judged by the oracle with the classifier's r*, at the paper's five temperatures
    rates = json.loads(Path(cfg.paths.method, "winrate", "oracle", "winrates.json").read_text())
    assert [r["temperature"] for r in rates] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(r["n"] + r["n_invalid"] == 4 for r in rates)


def test_paper_ppo_gt_with_a_classifier_that_has_its_own_tokenizer(local_models, tmp_path):
    """PPO-GT scores with r* = the (stand-in) siebert classifier: text decoded from the policy's ids and
    re-tokenised by the classifier's own tokenizer."""
    cfg = paper_cfg(local_models, tmp_path, "method=ppo_gt", "method.total_steps=2", "method.batch_size=4",
                    "method.minibatch_size=2", "method.micro_batch_size=2", "method.score_norm_samples=4",
                    "method.n_prompts=8", "method.eval_every=1", "method.save_steps=1")
    run_pipeline(cfg)
    import json
    metrics = [json.loads(x) for x in Path(cfg.paths.method, "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(0 <= m["objective/scores"] <= 1 for m in metrics)  # p(POSITIVE) of the classifier
    assert sorted(p.name for p in Path(cfg.paths.method, "eval").glob("step*.json")) == \
        ["step000001.json", "step000002.json"]


def test_classifier_reward_checks_its_label(local_models):
    r = HFClassifierReward(str(local_models / "siebert-tiny"), "positive", torch.device("cpu"))
    scores = r(["a great film", "a dull film " * 40])  # the second is truncated to the model's length
    assert len(scores) == 2 and all(0 < s < 1 for s in scores)
    with pytest.raises(UserError, match="not a label"):
        HFClassifierReward(str(local_models / "siebert-tiny"), "JOYFUL", torch.device("cpu"))


def test_unreachable_hub_model_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="cannot reach the Hugging Face Hub for 'siebert/sentiment-roberta-large"):
        HFClassifierReward("siebert/sentiment-roberta-large-english", "POSITIVE", torch.device("cpu"))
