"""Statistics behind the reward-vs-KL verdict: per-seed fronts chosen on validation, read on test at KL budgets,
then paired across seeds.

Design. Seed s of every method shares the SFT model and the preference pairs, so seed s of DPO is compared with seed
s of PPO (paired t-test on the per-seed differences). Which checkpoints make up a seed's front is decided on the
validation prefixes only; the reward of that front is then read on the test prefixes, so the choice of checkpoints
cannot overfit the numbers that are reported. Budgets are tested separately and the p-values Holm-corrected over the
budgets compared.

Pure functions of arrays and data frames: numpy, pandas and scipy only, no file IO, no plotting.

Public API
  validation_front(points)                    rows on the front chosen on val_kl / val_reward, sorted by val_kl
  front_curve(front, budgets, reach)          test r* of that front at each test-KL budget (NaN where unmeasured)
  reach(points)                               largest test KL of any own checkpoint (front or not)
  first_own_kl(front), last_kl(front)         smallest / largest test KL of the front's own (non-SFT) points
  paired_comparison(a, b, alpha, power)       paired t-test of one budget, CI and minimum detectable difference
  holm(pvalues)                               Holm-Bonferroni adjusted p-values
  compare_methods(values_a, values_b, ...)    per-budget paired tests, Holm-corrected, and the overall relation
  bootstrap_stability(values_a, values_b, ..) share of seed resamples that give the same relation
  verdict_sentence(rel_by_rival, names)       one quotable sentence on "DPO dominates its rivals"
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

# Relations of method a to method b, in the order bootstrap_stability reports their counts.
RELATIONS = ("dominates", "dominated", "mixed", "not distinguishable", "no comparable budget")
SIGNS = ("higher", "lower", "not distinguishable")
COMPARED_COLUMNS = ["budget", "n", "mean_a", "mean_b", "mean_diff", "sd_diff", "ci_low", "ci_high", "t", "p",
                    "p_holm", "sign", "mdd"]


# ----------------------------------------------------------------------------------------------------------- fronts

def _is_sft(df: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the SFT row(s): method == "sft" where the frame has a method column, else the rows at KL 0 on
    both splits (the SFT policy is the reference, so its KL is 0 by definition)."""
    if "method" in df.columns:
        return (df["method"] == "sft").to_numpy(bool)
    return ((df["kl"] == 0) & (df["val_kl"] == 0)).to_numpy(bool)


def validation_front(points: pd.DataFrame) -> pd.DataFrame:
    """Pareto front of one method and seed chosen on VALIDATION numbers.

    points: one row per evaluated checkpoint of one method and seed, plus that seed's SFT row; columns at least
    kl, reward (test prefixes) and val_kl, val_reward (validation prefixes). Rows without validation numbers are
    ignored.

    Returns the rows (all columns, original index) that no other row dominates on validation: a row is dropped when
    another has val_kl lower or equal and val_reward higher, or the same val_reward at strictly lower val_kl (the
    usual Pareto order: more KL for no more reward is not a trade-off). Of rows identical on validation one is
    kept: the SFT row if it is among them, else the first in input order. Sorted by val_kl. The test columns are
    never read here, so the choice of checkpoints cannot fit the numbers reported on test.
    """
    pts = points.dropna(subset=["val_kl", "val_reward"])
    if pts.empty:
        return pts.copy()
    key = pd.DataFrame({"val_kl": pts["val_kl"].to_numpy(float), "neg_r": -pts["val_reward"].to_numpy(float),
                        "not_sft": ~_is_sft(pts), "pos": np.arange(len(pts))})
    # Ascending KL, then highest reward first: a row is on the front iff it beats every reward seen before it.
    order = key.sort_values(["val_kl", "neg_r", "not_sft", "pos"]).pos.to_numpy()
    keep, best = [], -np.inf
    for i in order:
        r = -key.neg_r.iat[i]
        if r > best:
            keep.append(i)
            best = r
    return pts.iloc[keep]


def first_own_kl(front: pd.DataFrame) -> float:
    """Smallest test KL of the front's own (non-SFT) points; NaN if the front is only the SFT point."""
    own = front.loc[~_is_sft(front), "kl"]
    return float(own.min()) if len(own) else float("nan")


def last_kl(front: pd.DataFrame) -> float:
    """Largest test KL of the front's own (non-SFT) points, the last budget front_curve measures; NaN if none."""
    own = front.loc[~_is_sft(front), "kl"]
    return float(own.max()) if len(own) else float("nan")


def reach(points: pd.DataFrame) -> float:
    """Largest test KL of any of the seed's own (non-SFT) evaluated checkpoints, on its front or not: how far the
    seed's training went. NaN if it has none."""
    own = points.loc[~_is_sft(points), "kl"].dropna()
    return float(own.max()) if len(own) else float("nan")


def front_curve(front: pd.DataFrame, budgets, reach_kl: float | None = None) -> np.ndarray:
    """Test r* of a validation-chosen front (validation_front's output, SFT row included) at each test-KL budget.

    The front's points are taken in order of TEST KL and their test reward is replaced by its running maximum: a
    point whose test reward is below that of a point at lower test KL is dominated on test, and the policy at the
    lower KL (or a chord to it) already earns the higher reward within the budget. The SFT point takes part in this
    running maximum. Between consecutive points the curve is linear: sampling either policy at random per prompt
    earns the chord's reward at no more than the chord's KL (KL is convex in the policy).

    A budget is a limit, KL <= budget: beyond the front's last point the curve stays at that point's reward up to
    `reach_kl` (reach(points): the largest test KL of any checkpoint the seed evaluated, dominated ones included),
    because the seed's training did go that far and the best policy it found within the budget is that last front
    point (a run whose later checkpoints hack the reward keeps its best earlier one). Without `reach_kl` the curve
    ends at the front's last point. NaN beyond the reach (never extrapolated to KL no checkpoint of the seed had) and
    below first_own_kl(front): a budget counts only if the seed has an evaluated checkpoint of its own at or below it,
    not just the chord from SFT. A front of only the SFT point gives all NaN.

    Returns a float array with the shape of `budgets`.
    """
    grid = np.asarray(budgets, dtype=float)
    out = np.full(grid.shape, np.nan)
    lo, hi = first_own_kl(front), last_kl(front)
    if reach_kl is not None and np.isfinite(reach_kl):
        hi = max(hi, float(reach_kl))
    if np.isnan(lo):
        return out
    if front[["kl", "reward"]].isna().any().any():
        raise ValueError("front_curve: a front point has no test kl or reward")
    pts = front.sort_values(["kl", "reward"])
    xs = pts["kl"].to_numpy(float)
    ys = np.maximum.accumulate(pts["reward"].to_numpy(float))
    # Equal test KL: keep the last (highest running max) so np.interp sees strictly increasing x.
    last = np.append(xs[1:] != xs[:-1], True)
    xs, ys = xs[last], ys[last]
    inside = (grid >= lo) & (grid <= hi)
    out[inside] = np.interp(grid[inside], xs, ys)  # flat after the last front point, up to hi
    return out


# ------------------------------------------------------------------------------------------------------ paired tests

def _paired_t(d: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sd (ddof 1), t and two-sided p of the one-sample t-test of the differences `d` along `axis`.

    Same numbers as scipy.stats.ttest_rel, vectorised so that the bootstrap tests thousands of resamples at once,
    and used by paired_comparison too so both give identical decisions. An sd of zero (within rounding of the
    values) gives t = 0, p = 1 when the mean is 0 and t = ±inf, p = 0 otherwise, without a warning.
    """
    n = d.shape[axis]
    mean = d.mean(axis=axis)
    sd = d.std(axis=axis, ddof=1)
    # Identical differences leave an sd of a few ulps from rounding the mean: treat that as exactly 0.
    scale = np.abs(d).max(axis=axis)
    sd = np.where(sd <= 16 * np.finfo(float).eps * scale, 0.0, sd)
    zero = sd == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(zero, np.where(mean == 0, 0.0, np.sign(mean) * np.inf), mean / (sd / np.sqrt(n)))
    p = np.where(zero, np.where(mean == 0, 1.0, 0.0), 2 * _st.t.sf(np.abs(t), n - 1))
    return mean, sd, t, p


def paired_comparison(a, b, alpha: float = 0.05, power: float = 0.8) -> dict:
    """Paired t-test of one KL budget: a[i] and b[i] are the two methods' values at seed i (same seeds, same order).

    NaN is not allowed (the caller compares only budgets every seed of both methods measures) and at least two seeds
    are needed: ValueError otherwise.

    Returns a dict of floats (n an int): n, mean_a, mean_b, mean_diff (a - b), sd_diff (ddof 1), ci_low and ci_high
    (the 1 - alpha, by default 95 %, t-interval of the mean difference), t and p (two-sided, as
    scipy.stats.ttest_rel; sd_diff 0 gives p 1 if the difference is 0 and p 0 otherwise), and mdd: the minimum
    detectable difference of a two-sided paired t-test at level alpha with the given power,
    (t_{1-alpha/2, n-1} + t_{power, n-1}) sd_diff / sqrt(n) — the true mean difference this many seeds would find
    with that probability, so a "not distinguishable" budget says nothing about differences smaller than it.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired_comparison: a and b must be 1-D of the same length, got {a.shape} and {b.shape}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("paired_comparison: NaN in a or b; compare only budgets every seed of both measures")
    n = a.size
    if n < 2:
        raise ValueError(f"paired_comparison: a paired t-test needs at least 2 seeds, got {n}")
    mean, sd, t, p = (float(x) for x in _paired_t(a - b))
    se = sd / np.sqrt(n)
    t_crit = float(_st.t.ppf(1 - alpha / 2, n - 1))
    return {"n": n, "mean_a": float(a.mean()), "mean_b": float(b.mean()), "mean_diff": mean, "sd_diff": sd,
            "ci_low": mean - t_crit * se, "ci_high": mean + t_crit * se, "t": t, "p": p,
            "mdd": (t_crit + float(_st.t.ppf(power, n - 1))) * se}


def _holm_rows(p: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Holm adjustment of each row of p over its entries where ok is True; NaN elsewhere. Shapes (rows, k)."""
    rows, k = p.shape
    m = ok.sum(axis=1, keepdims=True)
    order = np.argsort(np.where(ok, p, np.inf), axis=1, kind="stable")
    ps = np.take_along_axis(np.where(ok, p, 0.0), order, axis=1)
    j = np.arange(k)[None, :]
    # Step-down: the j-th smallest of m p-values is multiplied by m - j; the running max keeps the order monotone.
    adj = np.minimum(1.0, np.maximum.accumulate(np.where(j < m, (m - j) * ps, 0.0), axis=1))
    out = np.empty_like(adj)
    np.put_along_axis(out, order, adj, axis=1)
    return np.where(ok, out, np.nan)


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order: the j-th smallest (j from 0) of m is multiplied by m - j,
    made monotone by a running maximum and capped at 1. Rejecting where adjusted p < alpha controls the
    family-wise error rate at alpha."""
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError("holm: pvalues must be 1-D")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("holm: p-values must lie in [0, 1]")
    if p.size == 0:
        return p.copy()
    return _holm_rows(p[None, :], np.ones((1, p.size), bool))[0]


def _relation(compared, higher, lower):
    """Relation codes (indices into RELATIONS) from whether any budget was compared / significantly higher / lower.
    Works on scalars and arrays alike."""
    compared, higher, lower = (np.asarray(x, bool) for x in (compared, higher, lower))
    return np.select([~compared, higher & lower, higher, lower], [4, 2, 0, 1], default=3)


# --------------------------------------------------------------------------------------------- comparing two methods

def _fmt_kl(x: float) -> str:
    return f"{x:g}"


def _seed_list(labels: list) -> str:
    s = [str(x) for x in labels]
    return ("seed " if len(s) == 1 else "seeds ") + (s[0] if len(s) == 1 else ", ".join(s[:-1]) + " and " + s[-1])


def _why_missing(name: str, column: np.ndarray, budget: float, seeds: list, first_kl, max_kl) -> str | None:
    """Why some seeds of one method have no value at `budget` (None if all have one)."""
    missing = np.flatnonzero(np.isnan(column))
    if missing.size == 0:
        return None
    groups: dict[str, list] = {}
    for i in missing:
        if first_kl is not None and not budget >= first_kl[i]:  # NaN first_kl: no own front point at all
            why = "no_ckpt"
        elif max_kl is not None and budget > max_kl[i]:
            why = "no_reach"
        else:
            why = "no_value"
        groups.setdefault(why, []).append(seeds[i])
    parts = []
    for why, labels in groups.items():
        one = len(labels) == 1
        verb = {"no_ckpt": f"{'has' if one else 'have'} no checkpoint at or below KL",
                "no_reach": f"{'does' if one else 'do'} not reach KL",
                "no_value": f"{'has' if one else 'have'} no value at KL"}[why]
        parts.append(f"{_seed_list(labels)} {verb} {_fmt_kl(budget)}")
    return f"{name}: {' and '.join(parts)}"


def _per_seed(x, n: int, what: str) -> np.ndarray | None:
    if x is None:
        return None
    x = np.asarray(x, dtype=float)
    if x.shape != (n,):
        raise ValueError(f"compare_methods: {what} must have one value per seed ({n}), got shape {x.shape}")
    return x


def compare_methods(values_a, values_b, budgets, alpha: float = 0.05, *, power: float = 0.8,
                    name_a: str = "A", name_b: str = "B", seeds: Sequence | None = None,
                    first_kl_a=None, first_kl_b=None, max_kl_a=None, max_kl_b=None) -> dict:
    """Method a against method b across seeds, budget by budget.

    values_a, values_b: (seeds x budgets) arrays of front_curve values for the SAME seeds in the same row order;
    budgets: the KL budget of each column. A budget is compared only where every seed of both methods has a value;
    the others are left out with a reason. To say why a seed has no value, optionally pass per-seed arrays
    first_kl_* (first_own_kl of the seed's front: below it, "has no checkpoint at or below KL x") and max_kl_*
    (reach of the seed: beyond it, "does not reach KL x"); name_a, name_b and seeds (row labels, default 0..n-1)
    only label the reasons.

    At the compared budgets: paired_comparison (a - b), p-values Holm-adjusted over the compared budgets, and a sign
    per budget: 'higher' (adjusted p < alpha and a above b), 'lower' (adjusted p < alpha and a below b), else
    'not distinguishable'. Relation of a to b: 'dominates' (some higher, none lower), 'dominated' (some lower, none
    higher), 'mixed' (both), 'not distinguishable' (none significant), 'no comparable budget' (none compared).

    Returns {"relation": str, "compared": DataFrame with COMPARED_COLUMNS (one row per compared budget, in budget
    order), "left_out": [{"budget", "reason"}, ...], "n_seeds", "alpha", "name_a", "name_b"}.
    """
    va, vb = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    grid = np.asarray(budgets, dtype=float).ravel()
    if va.ndim != 2 or va.shape != vb.shape or va.shape[1] != grid.size:
        raise ValueError(f"compare_methods: values must both be (seeds x {grid.size} budgets), "
                         f"got {va.shape} and {vb.shape}")
    n = va.shape[0]
    labels = list(range(n)) if seeds is None else list(seeds)
    if len(labels) != n:
        raise ValueError(f"compare_methods: {len(labels)} seed labels for {n} seeds")
    fa, fb = _per_seed(first_kl_a, n, "first_kl_a"), _per_seed(first_kl_b, n, "first_kl_b")
    ma, mb = _per_seed(max_kl_a, n, "max_kl_a"), _per_seed(max_kl_b, n, "max_kl_b")

    rows, left_out = [], []
    for j, budget in enumerate(grid):
        if n < 2:
            left_out.append({"budget": float(budget), "reason": f"fewer than 2 seeds ({n}) for a paired test"})
            continue
        reasons = [r for r in (_why_missing(name_a, va[:, j], budget, labels, fa, ma),
                               _why_missing(name_b, vb[:, j], budget, labels, fb, mb)) if r]
        if reasons:
            left_out.append({"budget": float(budget), "reason": "; ".join(reasons)})
            continue
        rows.append({"budget": float(budget), **paired_comparison(va[:, j], vb[:, j], alpha, power)})

    compared = pd.DataFrame(rows, columns=[c for c in COMPARED_COLUMNS if c not in ("p_holm", "sign")])
    compared.insert(compared.columns.get_loc("p") + 1, "p_holm", holm(compared["p"].to_numpy(float)))
    significant = compared["p_holm"].to_numpy(float) < alpha
    diff = compared["mean_diff"].to_numpy(float)
    higher, lower = significant & (diff > 0), significant & (diff < 0)
    compared.insert(compared.columns.get_loc("p_holm") + 1, "sign",
                    np.where(higher, SIGNS[0], np.where(lower, SIGNS[1], SIGNS[2])).astype(object))
    relation = RELATIONS[int(_relation(len(compared) > 0, higher.any(), lower.any()))]
    return {"relation": relation, "compared": compared, "left_out": left_out, "n_seeds": n, "alpha": alpha,
            "name_a": name_a, "name_b": name_b}


def _resample_relations(va: np.ndarray, vb: np.ndarray, idx: np.ndarray, alpha: float) -> np.ndarray:
    """compare_methods' relation (index into RELATIONS) for each row of seed indices idx (resamples x seeds, at
    least 2 seeds), vectorised over resamples and budgets: same NaN rule, t-test, Holm step and relation."""
    A, B = va[idx], vb[idx]                      # (resamples, seeds, budgets)
    ok = ~(np.isnan(A).any(axis=1) | np.isnan(B).any(axis=1))
    mean, _, _, p = _paired_t(np.where(ok[:, None, :], A - B, 0.0), axis=1)
    p_holm = _holm_rows(np.where(ok, p, 1.0), ok)
    significant = ok & (p_holm < alpha)
    return _relation(ok.any(axis=1), (significant & (mean > 0)).any(axis=1), (significant & (mean < 0)).any(axis=1))


def bootstrap_stability(values_a, values_b, budgets, n_boot: int = 2000, seed: int = 0,
                        alpha: float = 0.05) -> dict:
    """How stable compare_methods' relation is under resampling the seeds.

    Draws n_boot resamples of the seed indices with replacement (numpy Generator seeded with `seed`, so the result
    is reproducible), the same indices for a and b to keep the pairing, and recomputes the relation on each: a
    budget is compared in a resample exactly when no drawn seed of either method lacks a value there. Vectorised
    over resamples (same test, Holm step and relation as compare_methods, not a call per resample).

    Returns {"relation": the relation on the original seeds, "stability": share of resamples with that relation,
    "counts": {relation: number of resamples} over all of RELATIONS, "n_boot", "seed"}.
    """
    va, vb = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    original = compare_methods(va, vb, budgets, alpha)["relation"]
    n = va.shape[0]
    rng = np.random.default_rng(seed)
    codes = np.empty(n_boot, dtype=int)
    # Chunks bound the memory of the (resamples x seeds x budgets) arrays for large n_boot.
    if n < 2:  # no paired test possible in any resample
        codes[:] = RELATIONS.index("no comparable budget")
    for start in range(0, n_boot if n >= 2 else 0, 4096):
        idx = rng.integers(0, n, size=(min(4096, n_boot - start), n))
        codes[start:start + len(idx)] = _resample_relations(va, vb, idx, alpha)
    counts = {r: int((codes == i).sum()) for i, r in enumerate(RELATIONS)}
    return {"relation": original, "stability": counts[original] / n_boot if n_boot else float("nan"),
            "counts": counts, "n_boot": n_boot, "seed": seed}


# --------------------------------------------------------------------------------------------------------- verdict

def _kl_list(budgets) -> str:
    """[1, 2, 4] -> 'KL 1, 2 and 4'."""
    s = [_fmt_kl(b) for b in budgets]
    return "KL " + (s[0] if len(s) == 1 else ", ".join(s[:-1]) + " and " + s[-1])


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _clause(result: dict, rival: str) -> str:
    """'dominates PPO's (higher at KL 1 and 2; not distinguishable at KL 4; left out: ...)'."""
    rel, comp = result["relation"], result["compared"]
    details = []
    if rel == "not distinguishable":
        details.append(f"compared at {_kl_list(comp.budget)}")
    else:
        for sign in SIGNS:
            ks = comp.budget[comp.sign == sign]
            if len(ks):
                details.append(f"{sign} at {_kl_list(ks)}")
    if result["left_out"]:
        details.append("left out: " + "; ".join(x["reason"] for x in result["left_out"]))
    verb = {"dominates": f"dominates {rival}'s", "dominated": f"is dominated by {rival}'s",
            "mixed": f"neither dominates nor is dominated by {rival}'s",
            "not distinguishable": f"is not distinguishable from {rival}'s",
            "no comparable budget": f"cannot be compared with {rival}'s at any KL budget"}[rel]
    return f"{verb} ({'; '.join(details)})" if details else verb


def verdict_sentence(rel_by_rival: dict[str, dict], names: dict[str, str], subject: str = "dpo",
                     min_stability: float = 0.95) -> str:
    """One quotable sentence on the paper's claim that `subject` (DPO) dominates every rival.

    rel_by_rival: rival key (e.g. "ppo", "ppo_gt") -> compare_methods(subject's values, rival's values) result;
    names: key -> display name (a key without one is shown as is). The claim "holds" only if the subject dominates
    every rival, "does not hold" if any rival dominates it or the relation with any rival is mixed, and "is
    undecided at this scale" otherwise (not distinguishable, or no comparable budget). A result carrying
    "stability" (bootstrap_stability) below `min_stability` decides nothing: its relation is reported with the
    share of resamples that agree, and the claim is undecided unless another rival already settles it.
    """
    if not rel_by_rival:
        raise ValueError("verdict_sentence: no rival to compare with")
    me = names.get(subject, subject)
    rivals = {k: names.get(k, k) for k in rel_by_rival}
    def stable(r: dict) -> bool:
        return "stability" not in r or r["stability"]["stability"] >= min_stability

    rels = [r["relation"] if stable(r) else "unstable" for r in rel_by_rival.values()]
    claim = ("holds here" if all(r == "dominates" for r in rels) else
             "does not hold here" if any(r in ("dominated", "mixed") for r in rels) else
             "is undecided at this scale")
    whom = "both" if len(rivals) == 2 else _and(list(rivals.values()))
    clauses = [_clause(res, rivals[k]) + ("" if stable(res) else
                                          f", a relation only {res['stability']['stability']:.0%} of bootstrap "
                                          "resamples of the seeds repeat") for k, res in rel_by_rival.items()]
    ns = {k: r["n_seeds"] for k, r in rel_by_rival.items()}
    seeds = (str(next(iter(ns.values()))) if len(set(ns.values())) == 1
             else _and([f"{n} (vs {rivals[k]})" for k, n in ns.items()]))
    alphas = sorted({float(r["alpha"]) for r in rel_by_rival.values()})
    return (f"At this scale {me}'s frontier {_and(clauses)}: the paper's claim that {me} dominates {whom} {claim} "
            f"(paired t-tests across {seeds} full-pipeline seeds at each KL budget every seed of both methods "
            f"reaches (a budget is KL ≤ b: the best checkpoint the seed found within it), Holm-corrected over "
            f"budgets, α = {' / '.join(f'{a:g}' for a in alphas)}).")
