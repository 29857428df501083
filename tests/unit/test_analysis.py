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
    assert "best r* at KL ≤ 1: 0.5500" in text and "best r* at KL ≤ 5: 0.6000" in text
    assert "best r* at KL ≤ 10: 0.7000" in text
