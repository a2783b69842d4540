"""benchmarks/run.py's pure helpers (no timing is asserted anywhere)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_run", Path(__file__).resolve().parents[1] / "benchmarks" / "run.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_linear_fit_recovers_slope_intercept_and_r2():
    fit = bench.linear_fit([1, 2, 3, 4], [2.5, 4.5, 6.5, 8.5])
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(0.5) and fit["r2"] == pytest.approx(1.0)
    noisy = bench.linear_fit([0, 1, 2, 3], [0.0, 1.0, 1.0, 3.0])
    assert noisy["slope"] == pytest.approx(0.9) and noisy["r2"] == pytest.approx(4.5 ** 2 / (5 * 4.75))
    with pytest.raises(ValueError):
        bench.linear_fit([1, 1], [1, 2])


def test_interleave_and_verdicts():
    assert bench.interleave(["a", "b"], 2) == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
    assert bench.verdict(0.04, 0.05, "max") == "met" and bench.verdict(0.06, 0.05, "max") == "missed"
    assert bench.verdict(0.9, 1.0, "min") == "missed"


def test_toy_pool_inputs_are_distinct():
    pool = bench.toy_pool(100)
    assert pool["input"].is_unique and pool["id"].is_unique and len(pool) == 100
