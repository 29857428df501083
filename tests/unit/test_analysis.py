"""Pareto front and the computed reading, on a small hand-made table."""
import pandas as pd

from analysis.frontier import pareto_front, reading


def table():
    rows = [("sft", None, 0, 0, 0.0, 0.50, 0.01),
            ("dpo", 0.1, 0, 10, 2.0, 0.60, 0.01), ("dpo", 0.1, 0, 20, 4.0, 0.58, 0.01),  # dominated by (2, .60)
            ("dpo", 1.0, 0, 10, 1.0, 0.55, 0.01), ("dpo", 1.0, 0, 20, 1.5, 0.51, 0.01),  # ends within 2 s.e.
            ("dpo", 0.05, 0, 10, 6.0, 0.70, 0.01)]
    return pd.DataFrame(rows, columns=["method", "param", "seed", "step", "kl", "reward", "reward_se"])


def test_pareto_front_keeps_only_undominated_points():
    front = pareto_front(table())
    assert list(zip(front.kl, front.reward)) == [(0.0, 0.50), (1.0, 0.55), (2.0, 0.60), (6.0, 0.70)]


def test_reading_counts_runs_above_sft_and_best_within_budget():
    text = "\n".join(reading(table()))
    # final checkpoints: beta 0.1 -> 0.58 (above), beta 1 -> 0.51 (not: 0.01 < 2 * 0.0141), beta 0.05 -> 0.70
    assert "2 of 3 runs end with r* above SFT's" in text
    # best within a KL budget = the Pareto front read as a step function
    assert "| 1 | 0.550 ± 0.010 [1.0] |" in text and "| 5 | 0.600 ± 0.010 [2.0] |" in text
    assert "| 10 | 0.700 ± 0.010 [6.0] |" in text


def test_matched_kl_names_a_leader_only_beyond_two_standard_errors():
    ppo = pd.DataFrame([("ppo", 4.0, 0, 10, 1.0, 0.52, 0.01), ("ppo", 4.0, 0, 20, 5.0, 0.65, 0.01),
                        ("ppo", 8.0, 0, 20, 9.0, 0.71, 0.01)],
                       columns=["method", "param", "seed", "step", "kl", "reward", "reward_se"])
    text = "\n".join(reading(pd.concat([table(), ppo])))
    assert "| KL ≤ | dpo | ppo | leader (> 2 s.e.) |" in text
    # KL <= 1: dpo 0.55 vs ppo 0.52, difference 0.03 > 2 * 0.0141 -> dpo
    assert "| 1 | 0.550 ± 0.010 [1.0] | 0.520 ± 0.010 [1.0] | dpo |" in text
    # KL <= 5: dpo 0.60 vs ppo 0.65 -> ppo;  KL <= 10: 0.70 vs 0.71 -> within 2 s.e.
    assert "| 5 | 0.600 ± 0.010 [2.0] | 0.650 ± 0.010 [5.0] | ppo |" in text
    assert "| 10 | 0.700 ± 0.010 [6.0] | 0.710 ± 0.010 [9.0] | tie (within 2 s.e.) |" in text


def test_reading_flags_completions_that_collapsed_in_length():
    df = table()
    df["mean_length"], df["eos_rate"] = 40.0, 0.1
    short = pd.DataFrame([("ppo", 4.0, 0, 20, 5.0, 0.52, 0.01, 8.0, 1.0)],
                         columns=["method", "param", "seed", "step", "kl", "reward", "reward_se", "mean_length",
                                  "eos_rate"])
    text = "\n".join(reading(pd.concat([df, short])))
    assert "final mean completion length 8.0-8.0 tokens (SFT 40.0), EOS rate 1.00-1.00 — **completions collapsed" in text
    assert text.count("collapsed") == 1  # DPO's 40-token completions are not flagged
