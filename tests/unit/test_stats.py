"""analysis/stats.py: validation-chosen fronts, their test curves, paired tests, Holm, method comparison, bootstrap
stability and the verdict sentence."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from analysis.stats import (
    RELATIONS,
    _resample_relations,
    bootstrap_stability,
    compare_methods,
    first_own_kl,
    front_curve,
    holm,
    last_kl,
    paired_comparison,
    reach,
    validation_front,
    verdict_sentence,
)

BUDGETS = (0.5, 1, 2, 4, 8)


def _points(rows):
    """rows: (method, val_kl, val_reward, kl, reward)."""
    return pd.DataFrame(rows, columns=["method", "val_kl", "val_reward", "kl", "reward"])


# --------------------------------------------------------------------------------------------------- fronts

def test_validation_front_is_chosen_on_validation_not_test():
    pts = _points([
        ("sft", 0.0, 0.50, 0.0, 0.50),
        ("dpo", 1.0, 0.70, 1.0, 0.60),   # A: on the validation front
        ("dpo", 2.0, 0.65, 2.0, 0.95),   # B: dominated by A on validation, although best on test
        ("dpo", 3.0, 0.80, 0.8, 0.40),   # C: on the validation front, although dominated by A and SFT on test
        ("dpo", 4.0, 0.80, 5.0, 0.99),   # D: same validation reward as C at more KL: weakly dominated
    ])
    front = validation_front(pts)
    assert list(front.index) == [0, 1, 3]
    assert front.val_kl.is_monotonic_increasing
    # Scrambling the test columns leaves the selection unchanged: they are never read.
    rng = np.random.default_rng(0)
    for _ in range(5):
        scrambled = pts.copy()
        scrambled["kl"] = rng.permutation(pts.kl.to_numpy())
        scrambled["reward"] = rng.normal(size=len(pts))
        assert list(validation_front(scrambled).index) == [0, 1, 3]


def test_validation_front_keeps_sft_and_drops_checkpoints_below_it():
    pts = _points([("dpo", 0.5, 0.40, 0.5, 0.9), ("sft", 0.0, 0.50, 0.0, 0.5), ("dpo", 1.0, 0.60, 1.0, 0.6)])
    front = validation_front(pts)
    assert list(front.method) == ["sft", "dpo"]
    assert list(front.val_kl) == [0.0, 1.0]


def test_front_curve_interpolates_and_never_extends_past_the_last_point():
    front = _points([("sft", 0, 0.5, 0.0, 0.5), ("dpo", 1, 0.7, 1.0, 0.7), ("dpo", 3, 0.9, 3.0, 0.9)])
    got = front_curve(front, [0.5, 1, 2, 3, 4])
    # 0.5: below the first own checkpoint (only the chord from SFT) -> NaN; 2: midway 0.7..0.9; 4: beyond the last.
    np.testing.assert_allclose(got, [np.nan, 0.7, 0.8, 0.9, np.nan])
    assert first_own_kl(front) == 1.0 and last_kl(front) == 3.0


def test_front_curve_running_max_on_test():
    # Taken in order of test KL the validation front's test rewards are 0.5, 0.8, 0.6, 1.0: the point at KL 2 is
    # dominated on test by the one at KL 1, so its reward is lifted to 0.8 (running max).
    front = _points([("sft", 0, 0.5, 0.0, 0.5), ("dpo", 1, 0.6, 2.0, 0.6), ("dpo", 2, 0.7, 1.0, 0.8),
                     ("dpo", 3, 0.8, 4.0, 1.0)])
    got = front_curve(front, [1, 1.5, 2, 3, 4])
    np.testing.assert_allclose(got, [0.8, 0.8, 0.8, 0.9, 1.0])  # without the running max 1.5 would read 0.7


def test_front_curve_sft_reward_carries_over_a_worse_first_checkpoint():
    front = _points([("sft", 0, 0.5, 0.0, 0.5), ("dpo", 1, 0.6, 1.0, 0.3), ("dpo", 2, 0.7, 2.0, 0.7)])
    np.testing.assert_allclose(front_curve(front, [0.9, 1, 1.5, 2]), [np.nan, 0.5, 0.6, 0.7])


def test_front_curve_sft_only_front_is_all_nan():
    front = _points([("sft", 0, 0.5, 0.0, 0.5)])
    assert np.isnan(front_curve(front, BUDGETS)).all()
    assert math.isnan(first_own_kl(front)) and math.isnan(last_kl(front))


def test_front_curve_of_validation_front_end_to_end():
    # The seed's furthest checkpoint (KL 9) is off the validation front: without the reach, budget 8 is not measured.
    pts = _points([("sft", 0, 0.5, 0.0, 0.5), ("dpo", 1, 0.7, 0.9, 0.72), ("dpo", 4, 0.9, 4.2, 0.95),
                   ("dpo", 9, 0.85, 9.0, 1.2)])
    got = front_curve(validation_front(pts), BUDGETS)
    assert np.isnan(got[0]) and np.isnan(got[4])
    np.testing.assert_allclose(got[1:4], np.interp([1, 2, 4], [0.9, 4.2], [0.72, 0.95]))
    # With it: the seed went to KL 9, and its best policy within KL <= 8 is the last front point (KL 4.2, .95).
    assert reach(pts) == 9.0
    with_reach = front_curve(validation_front(pts), BUDGETS, reach(pts))
    np.testing.assert_allclose(with_reach[1:], [*np.interp([1, 2, 4], [0.9, 4.2], [0.72, 0.95]), 0.95])


def test_front_curve_is_flat_up_to_the_reach_and_nan_beyond_it():
    # A run that hacked its reward: its checkpoints at KL 3 and 6 score below its KL-1 point, so the front ends at
    # KL 1; within budgets up to its reach (6) its best policy is still the KL-1 one; beyond 6 nothing was measured.
    pts = _points([("sft", 0, 0.5, 0.0, 0.5), ("ppo", 1, 0.7, 1.0, 0.7), ("ppo", 3, 0.4, 3.0, 0.4),
                   ("ppo", 6, 0.3, 6.0, 0.3)])
    front = validation_front(pts)
    assert last_kl(front) == 1.0
    np.testing.assert_allclose(front_curve(front, [1, 2, 4, 6, 8], reach(pts)), [0.7, 0.7, 0.7, 0.7, np.nan])
    np.testing.assert_allclose(front_curve(front, [1, 2]), [0.7, np.nan])  # the front alone ends at its last point


# ----------------------------------------------------------------------------------------------- paired tests

def test_paired_comparison_hand_worked():
    # diffs a - b = [0.1, 0.2, 0.3]: mean 0.2, sd sqrt((0.01 + 0 + 0.01) / 2) = 0.1, se = 0.1 / sqrt(3) = 0.057735,
    # t = 0.2 / 0.057735 = 3.4641. With 2 dof the two-sided p is 1 - |t| / sqrt(t² + 2) = 1 - 3.4641 / 3.7417
    # = 0.074180. 95 % CI: 0.2 ± t_{0.975,2} se = 0.2 ± 4.302653 * 0.057735 = 0.2 ± 0.248414.
    # mdd = (t_{0.975,2} + t_{0.8,2}) se = (4.302653 + 1.060660) * 0.057735 = 0.309651.
    r = paired_comparison([1.1, 1.2, 1.3], [1.0, 1.0, 1.0])
    assert r["n"] == 3
    assert r["mean_a"] == pytest.approx(1.2) and r["mean_b"] == pytest.approx(1.0)
    assert r["mean_diff"] == pytest.approx(0.2) and r["sd_diff"] == pytest.approx(0.1)
    assert r["t"] == pytest.approx(3.464102, rel=1e-6)
    assert r["p"] == pytest.approx(0.074180, abs=1e-6)
    assert r["ci_low"] == pytest.approx(0.2 - 0.248414, abs=1e-6)
    assert r["ci_high"] == pytest.approx(0.2 + 0.248414, abs=1e-6)
    assert r["mdd"] == pytest.approx(0.309651, abs=1e-6)


def test_paired_comparison_matches_scipy_ttest_rel():
    rng = np.random.default_rng(3)
    for n in (2, 5, 12):
        a, b = rng.normal(size=n), rng.normal(size=n)
        ref = st.ttest_rel(a, b)
        r = paired_comparison(a, b)
        assert r["t"] == pytest.approx(ref.statistic, rel=1e-10)
        assert r["p"] == pytest.approx(ref.pvalue, rel=1e-10)


def test_paired_is_more_powerful_than_unpaired_on_correlated_data():
    # Seeds differ a lot (shared SFT model), the method effect is small but consistent within each seed.
    seed_level = np.array([0.1, 0.9, 0.4, 1.5, 0.7, 1.1])
    b = seed_level
    a = seed_level + 0.1 + np.array([0.01, -0.02, 0.015, -0.01, 0.0, 0.005])
    assert paired_comparison(a, b)["p"] < 0.001
    assert st.ttest_ind(a, b).pvalue > 0.5


def test_paired_comparison_zero_sd_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = paired_comparison([0.3, 0.5, 0.7], [0.2, 0.4, 0.6])  # float diffs all 0.1 (to rounding)
        none = paired_comparison([0.3, 0.5], [0.3, 0.5])
    assert same["sd_diff"] == 0 and same["p"] == 0.0 and same["t"] == math.inf and same["mdd"] == 0
    assert none["p"] == 1.0 and none["t"] == 0.0


def test_paired_comparison_rejects_nan_and_single_seed():
    with pytest.raises(ValueError):
        paired_comparison([1.0, np.nan], [0.0, 0.0])
    with pytest.raises(ValueError):
        paired_comparison([1.0], [0.0])


def test_mdd_shrinks_like_one_over_sqrt_n():
    rng = np.random.default_rng(5)
    scaled = {}
    for n in (8, 32, 128, 512):
        d = rng.normal(size=n)
        d = (d - d.mean()) / d.std(ddof=1) + 0.3  # sd of the differences exactly 1
        r = paired_comparison(d, np.zeros(n))
        assert r["sd_diff"] == pytest.approx(1.0)
        scaled[n] = r["mdd"] * math.sqrt(n)
        assert scaled[n] == pytest.approx(st.t.ppf(0.975, n - 1) + st.t.ppf(0.8, n - 1))
    # mdd * sqrt(n) falls only through the t quantiles, towards z_{0.975} + z_{0.8} = 2.8016.
    assert scaled[8] > scaled[32] > scaled[128] > scaled[512]
    assert scaled[512] == pytest.approx(st.norm.ppf(0.975) + st.norm.ppf(0.8), rel=0.01)


def test_holm_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # 0.6 * 2 = 1.2 capped at 1; 0.7 * 1 = 0.7 lifted to 1 by the running max
    np.testing.assert_allclose(holm([0.7, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(holm([0.02]), [0.02])
    assert holm([]).size == 0


# ------------------------------------------------------------------------------------------- compare_methods

def _method_pair(effects, n=6, noise=0.02, seed=0):
    """(a, b): b varies a lot across seeds; a = b + effect per budget + small noise."""
    rng = np.random.default_rng(seed)
    b = rng.normal(scale=1.0, size=(n, 1)) + np.linspace(0, 1, len(effects))
    a = b + np.asarray(effects, dtype=float) + rng.normal(scale=noise, size=b.shape)
    return a, b


@pytest.mark.parametrize("effects, relation, signs", [
    ([0.2, 0.2, 0.2], "dominates", ["higher"] * 3),
    ([-0.2, -0.2, 0.0], "dominated", ["lower", "lower", "not distinguishable"]),
    ([0.2, 0.0, -0.2], "mixed", ["higher", "not distinguishable", "lower"]),
    ([0.0, 0.0, 0.0], "not distinguishable", ["not distinguishable"] * 3),
])
def test_compare_methods_relations(effects, relation, signs):
    a, b = _method_pair(effects)
    r = compare_methods(a, b, (1, 2, 4))
    assert r["relation"] == relation
    assert list(r["compared"].sign) == signs
    assert r["left_out"] == []
    np.testing.assert_allclose(r["compared"].p_holm, holm(r["compared"].p))
    np.testing.assert_allclose(r["compared"].mean_diff, (a - b).mean(axis=0))


def test_compare_methods_holm_can_remove_a_nominal_difference():
    a, b = _method_pair([0, 0, 0, 0, 0], n=5, noise=0.1, seed=1)
    a[:, 0] = b[:, 0] + np.array([0.1, 0.2, 0.3, 0.15, 0.25]) - 0.08  # nominal p in (0.01, 0.05)
    r = compare_methods(a, b, BUDGETS)
    p0 = r["compared"].p.iloc[0]
    assert 0.01 < p0 < 0.05 and r["compared"].p_holm.iloc[0] >= 0.05
    assert r["relation"] == "not distinguishable"


def test_compare_methods_leaves_out_budgets_with_nan_and_says_why():
    a, b = _method_pair([0.2] * 5)
    a[3, 4] = np.nan          # DPO seed 3 stops short of KL 8
    b[[1, 2], 0] = np.nan     # PPO seeds 1 and 2 have no checkpoint at or below KL 0.5
    r = compare_methods(a, b, BUDGETS, name_a="DPO", name_b="PPO", seeds=[10, 11, 12, 13, 14, 15],
                        first_kl_a=np.full(6, 0.3), first_kl_b=np.array([0.3, 0.7, 0.9, 0.3, 0.3, 0.3]),
                        max_kl_a=np.array([9, 9, 9, 6, 9, 9.0]), max_kl_b=np.full(6, 9.0))
    assert list(r["compared"].budget) == [1, 2, 4]
    assert r["relation"] == "dominates"
    assert r["left_out"] == [
        {"budget": 0.5, "reason": "PPO: seeds 11 and 12 have no checkpoint at or below KL 0.5"},
        {"budget": 8.0, "reason": "DPO: seed 13 does not reach KL 8"}]
    # Without the KL ranges the reason still names the seeds.
    plain = compare_methods(a, b, BUDGETS, name_a="DPO", name_b="PPO")
    assert plain["left_out"][1]["reason"] == "DPO: seed 3 has no value at KL 8"


def test_compare_methods_no_comparable_budget():
    a, b = _method_pair([0.2, 0.2])
    a[0, :] = np.nan
    r = compare_methods(a, b, (1, 2))
    assert r["relation"] == "no comparable budget" and r["compared"].empty and len(r["left_out"]) == 2
    one = compare_methods(a[:1] * 0, b[:1], (1, 2))
    assert one["relation"] == "no comparable budget" and "fewer than 2 seeds" in one["left_out"][0]["reason"]


# ------------------------------------------------------------------------------------------------- bootstrap

def test_bootstrap_huge_consistent_difference_is_fully_stable():
    a, b = _method_pair([5.0] * 5, n=10)
    r = bootstrap_stability(a, b, BUDGETS, n_boot=500)
    assert r["relation"] == "dominates" and r["stability"] == 1.0 and r["counts"]["dominates"] == 500
    assert sum(r["counts"].values()) == 500 and set(r["counts"]) == set(RELATIONS)


def test_bootstrap_borderline_case_is_unstable_and_reproducible():
    rng = np.random.default_rng(2)
    b = rng.normal(size=(8, 1))
    d = rng.normal(size=8)
    d = (d - d.mean()) / d.std(ddof=1)
    d = d + 2.45 / math.sqrt(8)  # t = 2.45 with 7 dof: p about 0.044, just significant
    a = b + d[:, None]
    orig = compare_methods(a, b, (1,))
    assert 0.03 < orig["compared"].p.iloc[0] < 0.05 and orig["relation"] == "dominates"
    r1 = bootstrap_stability(a, b, (1,), n_boot=1000, seed=7)
    r2 = bootstrap_stability(a, b, (1,), n_boot=1000, seed=7)
    assert r1 == r2
    assert 0.2 < r1["stability"] < 0.9
    assert r1["counts"]["dominates"] + r1["counts"]["not distinguishable"] == 1000


def test_bootstrap_resample_relation_equals_compare_methods():
    # The vectorised per-resample relation is compare_methods' relation, NaN budgets and all.
    rng = np.random.default_rng(4)
    b = rng.normal(size=(5, 5))
    a = b + np.array([0.3, 0.1, 0.0, -0.1, -0.3]) + rng.normal(scale=0.2, size=b.shape)
    a[1, 0] = np.nan
    b[3, 4] = np.nan
    idx = rng.integers(0, 5, size=(120, 5))
    fast = _resample_relations(a, b, idx, 0.05)
    slow = [RELATIONS.index(compare_methods(a[i], b[i], BUDGETS)["relation"]) for i in idx]
    assert len(set(slow)) >= 3  # the check covers several relations
    np.testing.assert_array_equal(fast, slow)


# --------------------------------------------------------------------------------------------------- verdict

NAMES = {"dpo": "DPO", "ppo": "PPO", "ppo_gt": "PPO-GT"}


def test_verdict_sentence_claim_holds_fails_or_is_undecided():
    up, _ = _method_pair([0.3] * 3)
    base = _method_pair([0.3] * 3)[1]
    dominates = compare_methods(up, base, (1, 2, 4))
    same = compare_methods(*_method_pair([0.0] * 3), (1, 2, 4))
    mixed = compare_methods(*_method_pair([0.3, 0.0, -0.3]), (1, 2, 4))
    assert (dominates["relation"], same["relation"], mixed["relation"]) == ("dominates", "not distinguishable",
                                                                          "mixed")

    holds = verdict_sentence({"ppo": dominates, "ppo_gt": dominates}, NAMES)
    assert holds.startswith("At this scale DPO's frontier dominates PPO's (higher at KL 1, 2 and 4)")
    assert "the paper's claim that DPO dominates both holds here" in holds
    assert "across 6 full-pipeline seeds" in holds and "α = 0.05" in holds

    undecided = verdict_sentence({"ppo": dominates, "ppo_gt": same}, NAMES)
    assert "is not distinguishable from PPO-GT's (compared at" in undecided
    assert "is undecided at this scale" in undecided

    fails = verdict_sentence({"ppo": mixed, "ppo_gt": dominates}, NAMES)
    assert "neither dominates nor is dominated by PPO's (higher at KL 1; lower at KL 4" in fails
    assert "does not hold here" in fails

    flipped = compare_methods(base, up, (1, 2, 4))
    assert "does not hold here" in verdict_sentence({"ppo": flipped}, NAMES)
    assert "is dominated by PPO's" in verdict_sentence({"ppo": flipped}, NAMES)


def test_verdict_sentence_mentions_left_out_budgets():
    a, b = _method_pair([0.3] * 2)
    a[0, 0] = np.nan
    r = compare_methods(a, b, (0.5, 1), name_a="DPO", name_b="PPO", first_kl_a=np.full(6, 0.8))
    s = verdict_sentence({"ppo": r}, NAMES)
    assert "left out: DPO: seed 0 has no checkpoint at or below KL 0.5" in s
    assert "the paper's claim that DPO dominates PPO holds here" in s


def test_an_unstable_relation_leaves_the_claim_undecided():
    rng = np.random.default_rng(0)
    budgets = [1.0, 2.0]
    strong_a = rng.normal(0.7, 0.01, (10, 2))
    strong = compare_methods(strong_a, strong_a - 0.1, budgets)
    strong["stability"] = bootstrap_stability(strong_a, strong_a - 0.1, budgets)
    assert strong["relation"] == "dominates" and strong["stability"]["stability"] == 1.0
    names = {"dpo": "DPO", "ppo": "PPO", "ppo_gt": "PPO-GT"}
    assert "holds here" in verdict_sentence({"ppo": strong, "ppo_gt": strong}, names)
    shaky = dict(strong, stability={**strong["stability"], "stability": 0.52})
    text = verdict_sentence({"ppo": strong, "ppo_gt": shaky}, names)
    assert "is undecided at this scale" in text and "only 52% of bootstrap resamples" in text
