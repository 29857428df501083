"""Judge validation against human labels: agreement, self-consistency across A/B orders, position bias, and the CLI."""
import json

import pytest
import torch
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel

from pipelines.judge import Comparison, OracleJudge, load_template, run_judgments
from pipelines.judge.agreement import agreement_summary, main
from pipelines.lm.models import train_tokenizer


def great_count(texts):
    return [float(t.count("great")) for t in texts]


def test_agreement_with_humans_and_consistency(tmp_path):
    # The human label (chosen) has more "great" in 3 of 4 comparisons; the oracle follows "great", so it agrees
    # with the humans on 3 of 4, names the same text in both orders every time (self-agreement 1.0), and picks
    # the first-shown text exactly when that text is the greater one: 4 of the 8 verdicts (position bias 0.5).
    rows = [("p1", "great great", "fine"), ("p2", "great", "ok"), ("p3", "great film", "meh"),
            ("p4", "fine", "great great great")]
    comparisons = [Comparison(f"h{i}", p, c, r) for i, (p, c, r) in enumerate(rows)]
    report = run_judgments(OracleJudge(great_count, with_prompt=False), load_template("sentiment"), comparisons,
                           cache_dir=tmp_path / "cache", seed=0, both_orders=True, progress=False)
    s = agreement_summary(report)
    assert s["n_comparisons"] == 4 and s["n_valid"] == 4 and s["human_agreement"] == 0.75
    assert s["self_agreement_across_orders"] == 1.0 and s["position_bias_first_shown"] == 0.5


@pytest.fixture
def tiny_judge_config(tmp_path):
    tok = train_tokenizer(["Preferred: A", "Preferred: B", "a review that is great or dull"] * 30, 300, 1)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=16, n_layer=1, n_head=2))
    model.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    tok.save_pretrained(tmp_path / "tiny")
    cfg = OmegaConf.load("conf/judge/local_smollm2.yaml")
    cfg.merge_with({"path": str(tmp_path / "tiny"), "gguf_file": None, "fetch": None, "model": "tiny", "device": "cpu"})
    OmegaConf.save(cfg, tmp_path / "judge.yaml")
    return tmp_path / "judge.yaml"


def test_cli_reports_agreement_and_counts_calls_in_a_dry_run(tmp_path, tiny_judge_config, capsys):
    data = tmp_path / "comparisons.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"review {i}", "chosen": "a great review",
                                        "rejected": "a dull review"}) + "\n" for i in range(5)))
    common = ["--judge", str(tiny_judge_config), "--data", str(data), "--cache", str(tmp_path / "cache"),
              "--template", "sentiment"]
    assert main([*common, "--dry-run"]) == 0
    assert "dry run: 10 call(s) needed" in capsys.readouterr().out  # 5 comparisons x 2 orders
    assert main([*common, "--out", str(tmp_path / "agreement.json")]) == 0
    result = json.loads((tmp_path / "agreement.json").read_text())
    assert result["n_comparisons"] == 5 and result["calls"] == 10 and result["judge"] == "local_smollm2"
    assert result["n_valid"] + result["n_invalid"] == 5 and result["n_position"] <= 10
    assert main([*common, "--dry-run"]) == 0
    assert "dry run: 0 call(s) needed, 10 cached" in capsys.readouterr().out  # nothing is asked twice


def test_cli_rejects_bad_data_and_the_oracle(tmp_path, tiny_judge_config, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "answer": "y"}) + "\n")
    assert main(["--judge", str(tiny_judge_config), "--data", str(bad)]) == 2
    assert "needs columns ('prompt', 'chosen', 'rejected')" in capsys.readouterr().err
    assert main(["--judge", "conf/judge/oracle.yaml", "--data", str(bad)]) == 2
    assert "oracle judge has no opinion" in capsys.readouterr().err
