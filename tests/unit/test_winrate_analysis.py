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
    assert row.half_width == pytest.approx(4.302653 * 0.10 / math.sqrt(3))
    assert agg.loc[("dpo", 0.1, 1.0)].n_invalid == 3  # one invalid answer per seed, summed
    # one seed: 1.96 x its binomial s.e.
    assert agg.loc[("ppo", 4.0, 0.0)].half_width == pytest.approx(1.96 * 0.049)


def test_the_plotted_setting_is_the_best_mean_over_temperatures():
    best = best_settings(aggregate(table()))
    # DPO: beta 0.1 averages (.70 + .60) / 2 = .65 > beta 1's (.55 + .52) / 2
    assert set(best[best.method == "dpo"].param) == {0.1}
    assert set(best.method) == {"dpo", "ppo", "bon"}


def test_summary_table_cells():
    text = "\n".join(summary_lines(aggregate(table()), "SFT completion"))
    assert "## Win rates against SFT completion" in text and "**Judge: oracle** (7 invalid answers in all)" in text
    assert "| DPO | 0.1 | 3 | 0.700 ± 0.248 | 0.600 ± 0.248 |" in text
    assert "| Best-of-N | 128 | 1 |  | 0.660 ± 0.092 |" in text


def test_write_reads_stage_outputs_and_plots(tmp_path):
    run_root = tmp_path / "runs"
    for (method, param, seed), g in table().groupby(["method", "param", "seed"]):
        folder = run_root / f"seed{seed}" / f"{method}_{param}" / "winrate" / "oracle"
        folder.mkdir(parents=True)
        (folder / "winrates.json").write_text(json.dumps(g.assign(tag=f"{method}_{param}").to_dict("records")))
    out = tmp_path / "out"
    out.mkdir()
    lines = write(run_root, out, "sentiment", "smoke", "SFT completion")
    assert pd.read_csv(out / "winrates.csv").shape[0] == len(table())
    assert (out / "winrate_vs_temperature.png").stat().st_size > 10_000
    assert any(line.startswith("| PPO | 4 | 1 |") for line in lines)
    assert write(tmp_path / "empty", out, "sentiment", "smoke", "x") == []
