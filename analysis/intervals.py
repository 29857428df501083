"""The 95 % t-interval across seeds that the frontier's matched-KL table and plot and the win-rate table share.

Apart from analysis/stats.py (the paired comparison of two methods) because it describes one method's seeds, and
apart from frontier.py so that winrate.py can use it without importing the frontier (which imports winrate).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import t as student_t


def t975(dof: int) -> float:
    """Two-sided 95 % quantile of Student's t (NaN below one degree of freedom)."""
    return float(student_t.ppf(0.975, dof)) if dof >= 1 else float("nan")


def across_seeds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per column of a (seeds x KL) array, ignoring NaN: seed count, mean, sample sd (ddof 1) and the 95 %
    t-interval half-width t_{0.975, n-1} sd / sqrt(n); sd and half-width NaN below two seeds."""
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[None, :]
    ok = ~np.isnan(v)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, v, 0.0).sum(axis=0) / n
        sq = np.where(ok, (v - mean) ** 2, 0.0).sum(axis=0)
        sd = np.where(n >= 2, np.sqrt(sq / np.maximum(n - 1, 1)), np.nan)
        half = np.array([t975(int(k) - 1) for k in n]) * sd / np.sqrt(n)
    return n, mean, sd, half
