"""Cost accounting: the meter's token and FLOP counts against hand-worked numbers, and the pipeline comparison of
analysis/cost.py on a hand-made runs tree."""
import json

import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from analysis import cost as cost_analysis
from pipelines.infra import cost_meter
from pipelines.lm.sampling import sample_completions


def tiny_model():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_positions=32, n_embd=8, n_layer=1, n_head=2, eos_token_id=0,
                        bos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


def test_flop_params_count_tied_embeddings_once_and_skip_positions():
    model = tiny_model()
    total_unique = sum(p.numel() for p in model.parameters())  # parameters() already yields tied tensors once
    assert cost_meter.flop_params(model) == total_unique - 32 * 8  # without the position table (n_positions x n_embd)


def test_meter_counts_training_and_forward_passes():
    model = cost_meter.meter(tiny_model())
    assert cost_meter.meter(model) is model  # idempotent: one hook, not two
    n = cost_meter.flop_params(model)
    ids = torch.randint(1, 50, (3, 7))
    with cost_meter.track() as c:
        model(input_ids=ids).logits.sum().backward()  # a training pass: 21 token positions
        with torch.no_grad():
            model(input_ids=ids[:2])  # a forward pass: 14
    assert (c.train_tokens, c.forward_tokens) == (21, 14)
    assert c.flops == pytest.approx(6 * n * 21 + 2 * n * 14)
    # Outside a track nothing is counted and nothing breaks.
    model(input_ids=ids)
    assert c.train_tokens == 21


def test_frozen_model_counts_as_forward_even_with_grad_enabled():
    model = cost_meter.meter(tiny_model()).requires_grad_(False)
    with cost_meter.track() as c:
        model(input_ids=torch.randint(1, 50, (2, 5)))
    assert (c.train_tokens, c.forward_tokens) == (0, 10)


def test_sampling_counts_generated_tokens_and_every_decoding_step():
    model = cost_meter.meter(tiny_model())
    with cost_meter.track() as c:
        out = sample_completions(model, [[1, 2, 3], [4, 5, 6]], max_new_tokens=4, eos_id=0, pad_id=0, batch_size=2,
                                 seed=0)
    assert c.generated_tokens == sum(len(o) for o in out) > 0
    # KV-cached decoding: the 2 x 3 prompt positions once, then one position per row for each further step (a row
    # that has ended stays in the batch until the longest one ends).
    assert c.forward_tokens == 2 * 3 + 2 * (max(len(o) for o in out) - 1)
    summary = c.summary()
    assert summary["peak_host_mem_mb"] > 10 and summary["wall_s"] >= 0 and summary["flops_est"] > 0


def _stage(root, rel, cost_block, method=None):
    d = root / rel
    d.mkdir(parents=True)
    (d / "done.json").write_text(json.dumps({"cost": cost_block}))
    if method:
        (d / "stage_config.json").write_text(json.dumps({"config": {"method": {"name": method}}}))


def block(wall, flops, mem, gen=0):
    return {"wall_s": wall, "train_tokens": 10, "forward_tokens": 5, "generated_tokens": gen, "flops_est": flops,
            "peak_host_mem_mb": mem, "peak_gpu_mem_mb": None}


def test_pipeline_table_sums_components_and_takes_the_largest_peak(tmp_path):
    _stage(tmp_path, "shared/sft", block(500, 9e12, 1500))
    _stage(tmp_path, "shared/pairs", block(60, 1e12, 1200, gen=100))
    _stage(tmp_path, "shared/reward_model", block(120, 3e12, 1400))
    _stage(tmp_path, "seed0/dpo_beta0.1", block(200, 4e12, 1300), "dpo")
    _stage(tmp_path, "seed0/dpo_beta1.0", block(100, 2e12, 1100), "dpo")
    _stage(tmp_path, "seed0/ppo_kl6", block(600, 12e12, 1600, gen=500), "ppo")
    stages = cost_analysis.stage_costs(tmp_path)
    table = cost_analysis.pipeline_table(stages).set_index(["pipeline", "component"])
    # DPO: pairs + the mean of its two runs (150 s, 3e12); RLHF: pairs + reward model + PPO.
    assert table.loc[("DPO", "train dpo"), "runs"] == 2
    assert table.loc[("DPO", "total"), "wall_s"] == 60 + 150
    assert table.loc[("DPO", "total"), "flops_est"] == pytest.approx(1e12 + 3e12)
    assert table.loc[("RLHF (PPO)", "total"), "wall_s"] == 60 + 120 + 600
    assert table.loc[("RLHF (PPO)", "total"), "peak_host_mem_mb"] == 1600
    assert table.loc[("DPO", "total"), "peak_host_mem_mb"] == 1300
    assert ("DPO", "sft") not in table.index  # common to both pipelines: outside the ratio
    r = cost_analysis.ratios(table.reset_index())
    assert r["wall_s"] == pytest.approx(780 / 210) and r["flops_est"] == pytest.approx(16 / 4)
    assert "peak_gpu_mem_mb" not in r  # no GPU figures: no GPU ratio


def test_write_makes_csv_plot_and_summary_lines(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    out.mkdir()
    _stage(runs, "shared/pairs", block(60, 1e12, 1200))
    _stage(runs, "shared/reward_model", block(120, 3e12, 1400))
    _stage(runs, "seed0/dpo_beta0.1", block(200, 4e12, 1300), "dpo")
    _stage(runs, "seed0/ppo_kl6", block(600, 12e12, 1600), "ppo")
    lines = cost_analysis.write(runs, out, "sentiment", "test")
    text = "\n".join(lines)
    assert "3.00x the wall time" in text and "3.20x the estimated FLOPs" in text and "5-8x" in text
    df = pd.read_csv(out / "cost.csv")
    assert set(df.pipeline) == {"DPO", "RLHF (PPO)"} and (df.component == "total").sum() == 2
    assert (out / "cost.png").stat().st_size > 10_000


def test_a_pipeline_with_missing_stages_is_left_out(tmp_path):
    _stage(tmp_path, "shared/pairs", block(60, 1e12, 1200))
    _stage(tmp_path, "seed0/dpo_beta0.1", block(200, 4e12, 1300), "dpo")
    assert cost_analysis.pipeline_table(cost_analysis.stage_costs(tmp_path)).pipeline.tolist().count("DPO") == 3
    assert cost_analysis.ratios(cost_analysis.pipeline_table(cost_analysis.stage_costs(tmp_path))) == {}
