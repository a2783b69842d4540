"""Partitioning U into K disjoint parts and the cross-relabel assignment between them."""

from __future__ import annotations

import numpy as np
import pandas as pd


def partition_ids(ids: list[str], k: int, seed: int) -> pd.DataFrame:
    """Seeded, disjoint, balanced (sizes differ by at most one) assignment of every id to a part 0..k-1."""
    if k < 2:
        raise ValueError(f"need at least 2 partitions, got {k}")
    if len(ids) < k:
        raise ValueError(f"cannot split {len(ids)} unlabeled rows into {k} non-empty parts")
    order = np.random.default_rng(seed).permutation(len(ids))
    parts = np.empty(len(ids), dtype=np.int64)
    parts[order] = np.arange(len(ids)) % k
    return pd.DataFrame({"id": list(ids), "part": parts})


def cross_assignment(k: int) -> list[tuple[list[int], int]]:
    """For each student: (parts it trains on, part it relabels). Student j trains on all parts but j.

    For K=2 this is the paper's scheme: train on A, relabel B, and vice versa.
    """
    return [([p for p in range(k) if p != j], j) for j in range(k)]


def stage_seed(seed: int, stage: int, redraw: bool) -> int:
    """The partition seed of a stage: fixed across stages unless partitions are redrawn."""
    return seed + 1000 * stage if redraw else seed
