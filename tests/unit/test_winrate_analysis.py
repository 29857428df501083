"""Win-rate aggregation across seeds, the plotted setting per method, and the summary table, on a hand-made table."""
import json
import math

import pandas as pd
import pytest

from analysis.winrate import aggregate, best_settings, summary_lines, write


def table():
    rows = []
    # DPO beta 0.1 at three seeds, T = 0 and 1; beta 1.0 one seed. PPO one seed. Best-of-N at T = 1 only.
    for seed, (w0, w1) in enumerate([(0.60, 0.50), (0.70, 0.60), (0.80, 0.70)]):
        rows += [("oracle", "dpo", 0.1, seed, 0.0, w0, 0.05, 100, 0),
                 ("oracle", "dpo", 0.1, seed, 1.0, w1, 0.05, 100, 1)]
    rows += [("oracle", "dpo", 1.0, 0, 0.0, 0.55, 0.05, 100, 0), ("oracle", "dpo", 1.0, 0, 1.0, 0.52, 0.05, 100, 0),
             ("oracle", "ppo", 4.0, 0, 0.0, 0.40, 0.049, 100, 2), ("oracle", "ppo", 4.0, 0, 1.0, 0.45, 0.05, 98, 2),
             ("oracle", "bon", 128.0, 0, 1.0, 0.66, 0.047, 100, 0)]
    return pd.DataFrame(rows, columns=["judge", "method", "param", "seed", "temperature", "win_rate", "win_rate_se",
                                       "n", "n_invalid"])


def test_seeds_are_averaged_with_a_t_interval():
    agg = aggregate(table()).set_index(["method", "param", "temperature"])
    row = agg.loc[("dpo", 0.1, 0.0)]
    # .60, .70, .80: mean .70, sd .10, half-width 4.303 * .10 / sqrt(3) = .24843
    assert row.seeds == 3 and row.win_rate == pytest.approx(0.70)
    half = 4.302653 * 0.10 / math.sqrt(3)
    assert row.ci_low == pytest.approx(0.70 - half) and row.ci_high == pytest.approx(0.70 + half)
    assert agg.loc[("dpo", 0.1, 1.0)].n_invalid == 3  # one invalid answer per seed, summed
    # one seed: the Wilson interval of its 100 comparisons (40 wins), scipy's; not the Wald interval .40 ± .096
    ppo = agg.loc[("ppo", 4.0, 0.0)]
    z, p, n = 1.959964, 0.40, 100  # Wilson by hand: centre (p + z²/2n) / (1 + z²/n), half-width below
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (ppo.ci_low, ppo.ci_high) == pytest.approx((centre - half, centre + half), abs=1e-5)  # .3094, .4980


def test_a_win_rate_of_zero_or_one_keeps_an_interval():
    rows = [("oracle", "ppo_gt", 8.0, s, 1.0, 1.0, 0.0, 50, 0) for s in range(3)]  # three seeds, 50 of 50 each
    rows += [("oracle", "dpo", 0.1, 0, 1.0, 0.0, 0.0, 40, 0)]  # one seed, 0 of 40
    df = pd.DataFrame(rows, columns=["judge", "method", "param", "seed", "temperature", "win_rate", "win_rate_se",
                                     "n", "n_invalid"])
    agg = aggregate(df).set_index("method")
    # identical seeds carry no across-seed spread: the pooled 150 comparisons give the Wilson interval
    assert agg.loc["ppo_gt"].ci_high == 1.0 and 0.97 < agg.loc["ppo_gt"].ci_low < 0.98
    assert agg.loc["dpo"].ci_low == 0.0 and 0.08 < agg.loc["dpo"].ci_high < 0.09
    text = "\n".join(summary_lines(agg.reset_index(), "SFT completion"))
    assert "± 0.000" not in text and "1.000 [0.975, 1.000]" in text


def test_the_plotted_setting_is_the_best_mean_over_temperatures():
    best = best_settings(aggregate(table()))
    # DPO: beta 0.1 averages (.70 + .60) / 2 = .65 > beta 1's (.55 + .52) / 2
    assert set(best[best.method == "dpo"].param) == {0.1}
    assert set(best.method) == {"dpo", "ppo", "bon"}


def test_summary_table_cells():
    text = "\n".join(summary_lines(aggregate(table()), "SFT completion"))
    assert "## Win rates against SFT completion" in text and "**Judge: oracle** (7 invalid answers in all)" in text
    assert "| DPO | 0.1 | 3 | 0.700 [0.452, 0.948] | 0.600 [0.352, 0.848] |" in text
    assert "| Best-of-N | 128 | 1 |  | 0.660 [0.563, 0.745] |" in text


def write_stage_outputs(run_root):
    """table() as the win-rate stage writes it: one winrates.json per run."""
    for (method, param, seed), g in table().groupby(["method", "param", "seed"]):
        folder = run_root / f"seed{seed}" / f"{method}_{param}" / "winrate" / "oracle"
        folder.mkdir(parents=True)
        (folder / "winrates.json").write_text(json.dumps(g.assign(tag=f"{method}_{param}").to_dict("records")))


def test_write_reads_stage_outputs_and_plots(tmp_path):
    run_root = tmp_path / "runs"
    write_stage_outputs(run_root)
    out = tmp_path / "out"
    out.mkdir()
    lines = write(run_root, out, "sentiment", "smoke", "SFT completion")
    assert pd.read_csv(out / "winrates.csv").shape[0] == len(table())
    assert (out / "winrate_vs_temperature.png").stat().st_size > 10_000
    assert any(line.startswith("| PPO | 4 | 1 |") for line in lines)
    assert write(tmp_path / "empty", out, "sentiment", "smoke", "x") == []


def test_figure2_puts_the_frontier_and_the_win_rates_side_by_side(tmp_path):
    from analysis.frontier import plot_figure2

    run_root = tmp_path / "runs"
    write_stage_outputs(run_root)
    rows = [("sft", None, s, s, 0, 0.0, 0.47) for s in (0, 1)]
    rows += [("dpo", 0.1, s, s, step, kl, r) for s in (0, 1) for step, kl, r in [(10, 1.0 + s / 10, 0.55),
                                                                                 (20, 2.0, 0.6 + s / 100)]]
    df = pd.DataFrame(rows, columns=["method", "param", "seed", "shared_seed", "step", "kl", "reward"]).assign(
        reward_se=0.01, val_kl=lambda d: d.kl, val_reward=lambda d: d.reward)
    path = tmp_path / "figure2.png"
    assert plot_figure2(df, run_root, path, "sentiment (smoke)", "SFT completion")
    assert path.stat().st_size > 20_000 and path.with_suffix(".pdf").exists()
    assert not plot_figure2(df, tmp_path / "none", tmp_path / "f.png", "x", "y") and not (tmp_path / "f.png").exists()
