"""Bootstrap confidence intervals over test rows (numpy only).

A system's test score is `aggregate(stats)`: `stats` holds one row of per-example statistics per test row (e.g. a
sentence's chunks right / predicted / gold for micro F1, or a sentence's F1 for a sentence mean) and `aggregate`
reduces the row axis (-2) to the corpus metric, so a resample of rows is scored exactly as the full set is.
Intervals are percentile intervals of `resamples` seeded resamples of the rows, drawn with replacement.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

Aggregate = Callable[[np.ndarray], np.ndarray]

RESAMPLES = 1000
#: Cells of stats[indices] scored at once: a block of resamples at a time keeps memory flat for big test sets.
_BLOCK_CELLS = 4_000_000


def micro_f1(stats: np.ndarray) -> np.ndarray:
    """F1 in percent from per-row (right, predicted, gold) counts pooled over the rows (conlleval's micro F1)."""
    right, predicted, gold = (np.asarray(stats, dtype=float)[..., i].sum(axis=-1) for i in range(3))
    precision = np.divide(100.0 * right, predicted, out=np.zeros_like(right), where=predicted > 0)
    recall = np.divide(100.0 * right, gold, out=np.zeros_like(right), where=gold > 0)
    total = precision + recall
    return np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)


def mean_f1(stats: np.ndarray) -> np.ndarray:
    """The mean of per-row F1 values (column 0, as fractions) in percent."""
    return 100.0 * np.asarray(stats, dtype=float)[..., 0].mean(axis=-1)


def bootstrap_ci(stats, aggregate: Aggregate, resamples: int = RESAMPLES, seed: int = 0) -> list[float]:
    """95% CI of one system's score: [2.5th, 97.5th] percentile of its score on resampled rows."""
    rows = _rows(stats)
    return _interval(_resampled(rows, _indices(len(rows), resamples, seed), aggregate))


def paired_bootstrap(stats_a, stats_b, aggregate: Aggregate, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """`a - b` on the same test rows: {"diff": score(a) - score(b), "ci95": [lo, hi]}.

    Paired: every resample draws the same rows for both systems, so what the two share (hard sentences) cancels.
    Row i of `stats_a` and of `stats_b` must be the same test example.
    """
    a, b = _rows(stats_a), _rows(stats_b)
    _check_paired(a, b)
    indices = _indices(len(a), resamples, seed)
    diffs = _resampled(a, indices, aggregate) - _resampled(b, indices, aggregate)
    return {"diff": float(aggregate(a) - aggregate(b)), "ci95": _interval(diffs)}


def pooled_paired_bootstrap(
    pairs: Sequence[tuple], aggregate: Aggregate, resamples: int = RESAMPLES, seed: int = 0
) -> dict:
    """`a - b` averaged over independent runs (seeds), each with its own test rows: {"diff", "ci95", "runs"}.

    `diff` is the mean of the runs' differences; each resample redraws every run's rows (within that run) and
    averages the runs' resampled differences, so the interval reflects the test-row noise of all runs together.
    """
    if not pairs:
        raise ValueError("no runs to pool")
    total = np.zeros(resamples)
    point = []
    for run, (stats_a, stats_b) in enumerate(pairs):
        a, b = _rows(stats_a), _rows(stats_b)
        _check_paired(a, b)
        indices = _indices(len(a), resamples, seed + run)  # runs are independent samples: independent draws
        total += _resampled(a, indices, aggregate) - _resampled(b, indices, aggregate)
        point.append(float(aggregate(a) - aggregate(b)))
    return {"diff": float(np.mean(point)), "ci95": _interval(total / len(pairs)), "runs": len(pairs)}


def _rows(stats) -> np.ndarray:
    rows = np.asarray(stats, dtype=float)
    if rows.ndim != 2 or len(rows) == 0:
        raise ValueError(f"per-row statistics must be a non-empty (rows, k) array, got shape {rows.shape}")
    return rows


def _check_paired(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"paired systems need statistics of the same test rows: shapes {a.shape} and {b.shape}")


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _resampled(rows: np.ndarray, indices: np.ndarray, aggregate: Aggregate) -> np.ndarray:
    block = max(1, _BLOCK_CELLS // rows.size)
    return np.concatenate([aggregate(rows[indices[start : start + block]]) for start in range(0, len(indices), block)])


def _interval(values: np.ndarray) -> list[float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]
