"""Scoring predictions on gold rows, with what confidence intervals and paired comparisons need.

A scored system is its format's metrics plus `ci95` (bootstrap 95% CI of `f1` over the rows) and `rows`
(`{"id": [...], "stats": [[...], ...]}`: the per-row statistics of `f1`, see mckd_core.stats). `rows` is for
comparisons and `test-rows.json`; report.json keeps only the summary (report.summarize_test drops it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .formats import get_format
from .stats import bootstrap_ci, paired_bootstrap, paired_randomization_p

#: Next to report.json: the per-row statistics of every system scored on the test set (for pooling over runs).
TEST_ROWS_FILE = "test-rows.json"


def metric_columns(fmt, df: pd.DataFrame) -> dict[str, list]:
    """The extra gold columns the format's metric reads (e.g. constituency's `pos`) that the rows have."""
    return {c: list(df[c]) for c in getattr(fmt, "metric_columns", ()) if c in df.columns}


def score_predictions(df: pd.DataFrame, preds: Sequence[str | None], task: str) -> dict:
    """Metrics of `preds` (one per row of df, None: no output) against df's `target`, with `ci95` and `rows` where
    the format has per-row statistics and there are rows to resample."""
    fmt = get_format(task)
    args = (list(df["input"]), list(df["target"]), list(preds))
    extra = metric_columns(fmt, df)
    metrics = fmt.metrics(*args, **extra)
    if not hasattr(fmt, "row_stats") or len(df) == 0:
        return metrics
    stats = fmt.row_stats(*args, **extra)
    return metrics | {
        "ci95": bootstrap_ci(stats, fmt.aggregate),
        "rows": {"id": [str(i) for i in df["id"]], "stats": stats.tolist()},
    }


def comparisons(tests: dict[str, dict | None], task: str, base: str = "final") -> dict[str, dict]:
    """`<base> - <name>` for every other system scored with per-row statistics: a paired bootstrap on the test rows
    (report.json `comparisons`). Systems without them (not evaluated, an older cached result) are left out."""
    fmt = get_format(task)
    scored = {name: test["rows"] for name, test in tests.items() if test and "rows" in test}
    if base not in scored or not hasattr(fmt, "aggregate"):
        return {}
    return {
        f"{base} - {name}": paired_bootstrap(*aligned(scored[base], rows), fmt.aggregate)
        for name, rows in scored.items()
        if name != base
    }


def dev_margins(scored: dict[str, dict | None], task: str, base: str = "final") -> dict[str, dict]:
    """Each other system minus `base` on the dev rows, for the deliverable guard (report.json `deliverable.vs_final`):
    {name: {"diff", "ci95": paired bootstrap 95% CI, "p": one-sided paired randomization test that it scores above
    `base`}}. Systems without per-row statistics are left out, as in `comparisons`."""
    fmt = get_format(task)
    rows = {name: result["rows"] for name, result in scored.items() if result and "rows" in result}
    if base not in rows or not hasattr(fmt, "aggregate"):
        return {}
    margins = {}
    for name, candidate_rows in rows.items():
        if name != base:
            candidate, final = aligned(candidate_rows, rows[base])
            margins[name] = {
                **paired_bootstrap(candidate, final, fmt.aggregate),
                "p": paired_randomization_p(candidate, final, fmt.aggregate),
            }
    return margins


def aligned(rows_a: dict, rows_b: dict) -> tuple[np.ndarray, np.ndarray]:
    """Two systems' per-row statistics in the same row order (row i of both: the same test id)."""
    b_by_id = dict(zip(rows_b["id"], rows_b["stats"]))
    if len(b_by_id) != len(rows_a["id"]) or set(b_by_id) != set(rows_a["id"]):
        raise ValueError("the compared systems were scored on different test rows")
    return np.asarray(rows_a["stats"], dtype=float), np.asarray([b_by_id[i] for i in rows_a["id"]], dtype=float)


def write_test_rows(tests: dict[str, dict | None], task: str, run_dir: str | Path) -> Path:
    """`test-rows.json`: {"task", "systems": {name: rows}} of the systems scored with per-row statistics."""
    path = Path(run_dir) / TEST_ROWS_FILE
    systems = {name: test["rows"] for name, test in tests.items() if test and "rows" in test}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"task": task, "systems": systems}))
    tmp.replace(path)
    return path
