"""Pareto front, interpolation at matched KL, aggregation across seeds, the verdict and the computed reading, on small
hand-made tables whose numbers are worked out in the comments."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.frontier import interpolate_front, main, pareto_front, plot_frontier, plot_runs, reading, seed_table, \
    verdict

COLS = ["method", "param", "seed", "step", "kl", "reward", "reward_se"]


def table():
    rows = [("sft", None, 0, 0, 0.0, 0.50, 0.01),
            ("dpo", 0.1, 0, 10, 2.0, 0.60, 0.01), ("dpo", 0.1, 0, 20, 4.0, 0.58, 0.01),  # dominated by (2, .60)
            ("dpo", 1.0, 0, 10, 1.0, 0.55, 0.01), ("dpo", 1.0, 0, 20, 1.5, 0.51, 0.01),  # ends within 2 s.e.
            ("dpo", 0.05, 0, 10, 6.0, 0.70, 0.01)]
    return pd.DataFrame(rows, columns=COLS)


def seeds_table():
    """DPO at three seeds and PPO at one, sharing the SFT point (0, .50).
    seed 0: (2, .60), (3, .58) dominated, so its front ends at KL 2;  seed 1: (2, .70);  seed 2: (2, .80), (4, .90)."""
    rows = [("sft", None, 0, 0, 0.0, 0.50, 0.01),
            ("dpo", 0.1, 0, 10, 2.0, 0.60, 0.01), ("dpo", 0.1, 0, 20, 3.0, 0.58, 0.01),
            ("dpo", 0.1, 1, 10, 2.0, 0.70, 0.01),
            ("dpo", 0.1, 2, 10, 2.0, 0.80, 0.01), ("dpo", 0.1, 2, 20, 4.0, 0.90, 0.01),
            ("ppo", 4.0, 0, 10, 1.0, 0.52, 0.01)]
    return pd.DataFrame(rows, columns=COLS)


def test_pareto_front_keeps_only_undominated_points():
    front = pareto_front(table())
    assert list(zip(front.kl, front.reward)) == [(0.0, 0.50), (1.0, 0.55), (2.0, 0.60), (6.0, 0.70)]


def test_interpolation_is_linear_between_front_points_and_never_extrapolates():
    # Front: (0, .50) SFT, (1, .60), (3, .70). (2, .55) and (4, .65) are dominated: were they kept, KL 2 would read
    # .55 instead of .65 and 3.5 would read .675. The seed did reach KL 4, so the best reward within 3.5 and 4 is
    # the last front point's .70 (flat); beyond KL 4 nothing is known (NaN).
    pts = pd.DataFrame([("sft", 0.0, 0.50), ("dpo", 1.0, 0.60), ("dpo", 2.0, 0.55), ("dpo", 3.0, 0.70),
                        ("dpo", 4.0, 0.65)], columns=["method", "kl", "reward"])
    r = interpolate_front(pts, [0.0, 0.5, 1.0, 2.0, 3.0, 3.5, 4.0, 4.5])
    # 0.5: halfway from .50 to .60; 1 and 3: the front points themselves; 2: halfway from .60 to .70
    np.testing.assert_allclose(r[:7], [0.50, 0.55, 0.60, 0.65, 0.70, 0.70, 0.70])
    assert math.isnan(r[7])


def test_seed_table_averages_seeds_with_a_t_interval():
    t = seed_table(seeds_table(), budgets=(1, 2, 3)).set_index(["method", "kl"])
    # KL 2: .60, .70, .80 -> mean .70, sd .10, half-width 4.303 * .10 / sqrt(3) = .2484
    row = t.loc[("dpo", 2)]
    assert row.n_seeds == 3 and row["mean"] == pytest.approx(0.70) and row.sd == pytest.approx(0.10)
    assert row.half_width == pytest.approx(4.303 * 0.10 / math.sqrt(3))
    # KL 1: chords from SFT, .55, .60, .65 -> mean .60, sd .05, half-width 4.303 * .05 / sqrt(3) = .1242
    row = t.loc[("dpo", 1)]
    assert row["mean"] == pytest.approx(0.60) and row.half_width == pytest.approx(0.1242, abs=1e-4)


def test_n_seeds_counts_only_seeds_that_reached_the_kl():
    t = seed_table(seeds_table(), budgets=(1, 2, 3)).set_index(["method", "kl"])
    # KL 3: seed 0 reached KL 3 with a dominated point, so its best within 3 is .60 (flat after its front ends
    # at 2); seed 1 never got past KL 2; seed 2 reads .80 + (.90 - .80) / 2 = .85.
    # Two seeds: mean .725, sd .17678, half-width 12.706 * .17678 / sqrt(2) = 1.5883
    row = t.loc[("dpo", 3)]
    assert row.n_seeds == 2 and row["mean"] == pytest.approx(0.725)
    assert row.sd == pytest.approx(0.176777, abs=1e-6) and row.half_width == pytest.approx(1.5883, abs=1e-3)
    # KL 4: only seed 2 (.90). One seed: no sd, no interval.
    row = seed_table(seeds_table(), budgets=(4,)).set_index(["method", "kl"]).loc[("dpo", 4)]
    assert row.n_seeds == 1 and row["mean"] == pytest.approx(0.90)
    assert math.isnan(row.sd) and math.isnan(row.half_width)
    # PPO's one seed ends at KL 1 (.52): no data at 2 or 3, still a row
    assert t.loc[("ppo", 1)].n_seeds == 1 and t.loc[("ppo", 1)]["mean"] == pytest.approx(0.52)
    assert t.loc[("ppo", 2)].n_seeds == 0 and t.loc[("ppo", 3)].n_seeds == 0 and math.isnan(t.loc[("ppo", 3)]["mean"])
    # the smallest KL of a method's own front point, for the verdict's "no points below" note
    assert t.loc[("dpo", 1)].first_kl == 2.0 and t.loc[("ppo", 1)].first_kl == 1.0


def vtable(rows, first_kl=None):
    """A seed_table by hand: (method, kl, n_seeds, mean, sd)."""
    t = pd.DataFrame(rows, columns=["method", "kl", "n_seeds", "mean", "sd"])
    t["first_kl"] = t.method.map(first_kl or {}).astype(float)
    return t


# With sd .01 and 3 seeds each, a difference counts beyond t_{.975, 2} sqrt(2 * .01² / 3) = 4.303 * .00816 = .0351.
def test_verdict_dominates_one_rival_and_is_dominated_by_the_other():
    t = vtable([("dpo", 2, 3, 0.70, 0.01), ("dpo", 5, 3, 0.75, 0.01),
                ("ppo", 2, 3, 0.60, 0.01), ("ppo", 5, 3, 0.74, 0.01),         # +.10 higher, +.01 within noise
                ("ppo_gt", 2, 3, 0.80, 0.01), ("ppo_gt", 5, 3, 0.85, 0.01)])  # -.10, -.10: lower at both
    assert verdict(t) == (
        "At this scale DPO's frontier dominates PPO's (higher at KL 2, within noise at KL 5) and is dominated by "
        "PPO-GT's (lower at KL 2 and 5), so the paper's claim that DPO dominates both does not hold here (two-sided "
        "95 % t-test on the difference of per-seed mean r* at each KL budget).")


def test_verdict_says_the_claim_holds_only_when_both_rivals_are_dominated():
    t = vtable([("dpo", 2, 3, 0.70, 0.01), ("dpo", 5, 3, 0.90, 0.01),
                ("ppo", 2, 3, 0.60, 0.01), ("ppo", 5, 3, 0.70, 0.01),
                ("ppo_gt", 2, 3, 0.69, 0.01), ("ppo_gt", 5, 3, 0.80, 0.01)])  # +.01 within noise, +.10 higher
    v = verdict(t)
    assert "dominates PPO's (higher at KL 2 and 5)" in v
    assert "dominates PPO-GT's (higher at KL 5, within noise at KL 2)" in v
    assert "the paper's claim that DPO dominates both holds here" in v


def test_verdict_mixed_when_higher_at_one_budget_and_lower_at_another():
    t = vtable([("dpo", 2, 3, 0.70, 0.01), ("dpo", 5, 3, 0.75, 0.01), ("dpo", 10, 3, 0.80, 0.01),
                ("ppo", 2, 3, 0.60, 0.01), ("ppo", 5, 3, 0.85, 0.01), ("ppo", 10, 1, 0.90, float("nan"))])
    v = verdict(t)
    assert ("DPO's frontier neither dominates nor is dominated by PPO's (mixed: higher at KL 2, lower at KL 5; "
            "fewer than 2 seeds of PPO reach KL 10)") in v
    assert "the paper's claim that DPO dominates PPO does not hold here" in v


def test_verdict_uses_the_t_quantile_not_two_standard_errors():
    # +.03 at both: beyond 2 * .00816 = .0163 but inside the t bound .0351 -> within noise, not "higher"
    t = vtable([("dpo", 2, 3, 0.63, 0.01), ("dpo", 5, 3, 0.73, 0.01),
                ("ppo", 2, 3, 0.60, 0.01), ("ppo", 5, 3, 0.70, 0.01)])
    v = verdict(t)
    assert "DPO's frontier is indistinguishable from PPO's (within noise at KL 2 and 5)" in v
    assert "does not hold here" in v


def test_verdict_cannot_be_settled_when_one_rival_has_one_seed():
    t = vtable([("dpo", 2, 3, 0.70, 0.01), ("ppo", 2, 3, 0.60, 0.01), ("ppo_gt", 2, 1, 0.65, float("nan"))])
    v = verdict(t)
    assert "dominates PPO's (higher at KL 2)" in v
    assert "cannot be tested against PPO-GT's with one seed (by mean: higher at KL 2)" in v
    assert "the paper's claim that DPO dominates both cannot be settled here" in v


def test_verdict_with_one_seed_gives_no_verdict_but_the_comparison_of_means():
    t = vtable([("dpo", 1, 1, 0.55, np.nan), ("dpo", 2, 1, 0.66, np.nan), ("dpo", 5, 1, 0.75, np.nan),
                ("dpo", 10, 1, 0.78, np.nan),
                ("ppo", 1, 1, 0.52, np.nan), ("ppo", 2, 1, 0.57, np.nan), ("ppo", 5, 1, 0.70, np.nan),
                ("ppo", 10, 0, np.nan, np.nan),
                ("ppo_gt", 1, 1, 0.51, np.nan), ("ppo_gt", 2, 1, 0.54, np.nan), ("ppo_gt", 5, 1, 0.82, np.nan),
                ("ppo_gt", 10, 1, 0.86, np.nan)], first_kl={"dpo": 1.1, "ppo": 2.2, "ppo_gt": 0.5})
    assert verdict(t) == (
        "No verdict can be given with one seed: taken at face value, the single-seed means would have DPO's frontier "
        "dominate PPO's (higher at KL 1, 2 and 5; PPO does not reach KL 10; PPO has no points below KL 2.2) and "
        "cross PPO-GT's (higher at KL 1 and 2, lower at KL 5 and 10).")


def test_reading_counts_runs_above_sft_and_reads_the_front_at_matched_kl():
    text = "\n".join(reading(table()))
    # final checkpoints: beta 0.1 -> 0.58 (above), beta 1 -> 0.51 (not: 0.01 < 2 * 0.0141), beta 0.05 -> 0.70
    assert "2 of 3 runs end with r* above SFT's" in text
    # front (0, .50) (1, .55) (2, .60) (6, .70): KL 5 reads .60 + .10 * 3/4 = .675; KL 10 is beyond the front
    assert "| KL | dpo |" in text
    assert "| 1 | 0.550 (1) |" in text and "| 5 | 0.675 (1) |" in text and "| 10 | — |" in text


def test_reading_flags_completions_that_collapsed_in_length():
    df = table()
    df["mean_length"], df["eos_rate"] = 40.0, 0.1
    short = pd.DataFrame([("ppo", 4.0, 0, 20, 5.0, 0.52, 0.01, 8.0, 1.0)],
                         columns=["method", "param", "seed", "step", "kl", "reward", "reward_se", "mean_length",
                                  "eos_rate"])
    text = "\n".join(reading(pd.concat([df, short])))
    assert "final mean completion length 8.0-8.0 tokens (SFT 40.0), EOS rate 1.00-1.00 — **completions collapsed" in text
    assert text.count("collapsed") == 1  # DPO's 40-token completions are not flagged


def write_runs(root):
    """seeds_table as the pipelines write it, plus Best-of-N (analytic KL, two seeds), parameter-free Preferred-FT,
    and samples for the SFT and the DPO runs of seeds 0 and 1."""
    def put(d, where):
        full = {"kl_se": 0.05, "n": 100, "mean_length": 40.0, "eos_rate": 0.2, **d}
        path = root / where / "eval" / f"step{d['step']:06d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(full))
        (path.parent / "done.json").write_text("{}")  # a finished evaluation (the analysis reads only those)
        return path

    for method, param, seed, step, kl, reward, se in seeds_table().itertuples(index=False):
        where = "shared/sft" if method == "sft" else f"seed{seed}/{method}_{param}"
        path = put(dict(method=method, param=None if pd.isna(param) else float(param), seed=int(seed), step=int(step),
                        kl=float(kl), reward=float(reward), reward_se=float(se), tag=where.split("/")[1]), where)
        if method == "sft" or (method == "dpo" and seed in (0, 1)):
            path.with_suffix(".samples.jsonl").write_text(
                json.dumps({"prompt": "a film", "completion": f"{method} seed {seed}", "reward": reward}) + "\n")
    for seed in (0, 1):
        for n_best in (2, 4):
            put(dict(method="bon", param=n_best, seed=seed, step=0, kl=math.log(n_best) - (n_best - 1) / n_best,
                     kl_se=0.0, kl_kind="analytic", reward=0.55 + 0.05 * n_best + 0.01 * seed, reward_se=0.01,
                     tag=f"bon_n{n_best}"), f"seed{seed}/bon_n{n_best}")
    put(dict(method="preferred_ft", param=None, seed=0, step=10, kl=1.5, reward=0.56, reward_se=0.01,
             tag="preferred_ft"), "seed0/preferred_ft")


def test_main_writes_csv_plots_and_summary_for_several_seeds_and_methods(tmp_path):
    write_runs(tmp_path / "runs" / "sentiment" / "t")
    main(["--runs", str(tmp_path / "runs"), "--preset", "t", "--out", str(tmp_path / "out"), "--command", "pytest"])
    out = tmp_path / "out" / "sentiment" / "t"
    df = pd.read_csv(out / "frontier.csv")
    assert list(df.columns) == ["method", "param", "seed", "step", "kl", "kl_se", "reward", "reward_se", "n", "tag",
                                "mean_length", "eos_rate", "kl_kind"]
    assert list(dict.fromkeys(df.method)) == ["sft", "dpo", "ppo", "bon", "preferred_ft"]
    assert set(df[df.method == "bon"].kl_kind) == {"analytic"} and set(df[df.method != "bon"].kl_kind) == {"estimated"}
    for png in ("frontier.png", "frontier_runs.png"):
        assert (out / png).stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    # the verdict opens the reading; one seed of PPO cannot be tested
    assert "## Reading\n\nNo verdict can be given with one seed" in summary
    assert "## Reward at matched KL (interpolated, mean across seeds, 95 % interval)" in summary
    assert "| KL | dpo | ppo | bon | preferred_ft |" in summary
    # KL 1: DPO .600 ± .124 (3 seeds), PPO .520, Best-of-N's fronts end at log 4 - 3/4 = .636, Preferred-FT's
    # chord from SFT to (1.5, .56) gives .54;  KL 2: DPO .700 ± .248, every other front has ended
    assert "| 1 | 0.600 ± 0.124 (3) | 0.520 (1) | — | 0.540 (1) |" in summary
    assert "| 2 | 0.700 ± 0.248 (3) | — | — | — |" in summary
    # finals: (3, .58), (2, .70), (4, .90) -> KL 3, r* .7267, sd .1617
    assert "## Final checkpoint of each run, mean across seeds" in summary
    assert "| dpo | 0.1 | 3 | 3.000 | 0.7267 | 0.1617 | 40.0 | 0.20 |" in summary
    assert "| preferred_ft |  | 1 | 1.500 | 0.5600 |  |" in summary
    # examples: one run per (method, param), its smallest seed
    assert "| dpo β=0.1 (step 20, seed 0) | 0.580 | dpo seed 0 |" in summary and "dpo seed 1" not in summary


def test_plots_are_written_with_best_of_n_and_several_seeds(tmp_path):
    df = seeds_table()
    df["kl_se"], df["kl_kind"] = 0.05, "estimated"
    bon = pd.DataFrame([("bon", n, s, 0, math.log(n) - (n - 1) / n, 0.55 + 0.05 * n + 0.01 * s, 0.01)
                        for n in (2, 4, 16) for s in (0, 1, 2)], columns=COLS).assign(kl_se=0.0, kl_kind="analytic")
    df = pd.concat([df, bon], ignore_index=True)
    plot_frontier(df, tmp_path / "front.png", "test")
    plot_runs(df, tmp_path / "runs.png", "test")
    assert (tmp_path / "front.png").stat().st_size > 10_000 and (tmp_path / "runs.png").stat().st_size > 10_000


def test_a_seed_missing_settings_is_left_out_of_the_seed_statistics():
    # seed 1 has only beta 0.1 of DPO's two settings (still training): its front would be a different frontier
    rows = [("sft", None, 0, 0, 0.0, 0.50, 0.01),
            ("dpo", 0.1, 0, 10, 2.0, 0.60, 0.01), ("dpo", 1.0, 0, 10, 1.0, 0.58, 0.01),
            ("dpo", 0.1, 1, 10, 2.0, 0.90, 0.01)]
    df = pd.DataFrame(rows, columns=COLS)
    t = seed_table(df, budgets=(1, 2)).set_index(["method", "kl"])
    assert t.loc[("dpo", 2)].n_seeds == 1 and t.loc[("dpo", 2)]["mean"] == pytest.approx(0.60)
    text = "\n".join(reading(df))
    assert "Left out of the seed statistics (not every setting evaluated yet): DPO seed 1." in text


def test_preset_changes_compare_matched_kl_reward_before_and_after(tmp_path):
    from analysis.frontier import preset_changes

    before = tmp_path / "before"
    assert preset_changes(before, table()) == []  # nothing to compare with
    before.mkdir()
    old = table()
    old.loc[old.method == "sft", "reward"] = 0.45
    # before: DPO's front (0, .45) (2, .50): KL 1 reads .475, KL 2 .50, nothing beyond KL 2
    old = old[(old.method == "sft") | ((old.param == 0.1) & (old.step == 10))].assign(
        reward=lambda d: d.reward.where(d.method == "sft", 0.50))
    old.to_csv(before / "frontier.csv", index=False)
    (before / "changes.md").write_text("- completions 48 -> 32 tokens\n")
    text = "\n".join(preset_changes(before, table()))
    assert "- completions 48 -> 32 tokens" in text
    assert "| SFT | 0 | 0.450 | 0.500 | +0.050 |" in text
    # after (table()): front (0, .50) (1, .55) (2, .60) (6, .70)
    assert "| DPO | 1 | 0.475 | 0.550 | +0.075 |" in text and "| DPO | 2 | 0.500 | 0.600 | +0.100 |" in text
    assert "| DPO | 5 | — | 0.675 | — |" in text


def test_preset_changes_compare_on_the_seeds_both_runs_have(tmp_path):
    """A one-seed before against a three-seed run: the difference is taken on seed 0 alone, the all-seed mean beside."""
    from analysis.frontier import preset_changes

    before = tmp_path / "before"
    before.mkdir()
    old = seeds_table()
    old = old[(old.method == "sft") | ((old.method == "dpo") & (old.seed == 0))].assign(
        reward=lambda d: d.reward.where(d.method == "sft", 0.55))  # DPO seed 0 before: (2, .55), (3, .55)
    old.to_csv(before / "frontier.csv", index=False)
    (before / "changes.md").write_text("- smaller policy\n")
    text = "\n".join(preset_changes(before, seeds_table()))
    assert "on the seeds both runs have (seed 0)" in text and "| after, all seeds |" in text
    # seed 0 after: front (0, .50) (2, .60): KL 2 reads .60 (before .55); all seeds at KL 2: .60, .70, .80
    half = 4.302653 * 0.1 / 3 ** 0.5  # t_{0.975, 2} * sd / sqrt(3)
    assert f"| DPO | 2 | 0.550 | 0.600 | +0.050 | 0.700 ± {half:.3f} (3) |" in text
    assert "| SFT | 0 | 0.500 | 0.500 | +0.000 | 0.500 |" in text
    # PPO has no before rows: its seed-0 value still shows, with no difference
    assert "| PPO | 1 | — | 0.520 | — | 0.520 (1) |" in text
