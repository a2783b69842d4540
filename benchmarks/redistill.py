"""Incremental re-distillation (issue #7): +10% new unlabeled rows dropped into redistill_flow's watch folder must
cost exactly that many teacher requests; the incremental run's time is compared with a from-scratch run on the grown
set.

  .venv/bin/python benchmarks/run.py --only redistill
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from harness import forget_teacher, logs_of, make_config, timed_flow, write_unlabeled


def teacher_cache_rows(runs_root: Path) -> int:
    """Rows in the teacher's response cache of `runs_root` (one per row ever sent to the teacher)."""
    path = runs_root / ".teacher-cache.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(str(path)) as conn:
        return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def bench_redistill(mode: dict, models: dict, data: dict, work: Path) -> dict:
    """+10% new unlabeled rows into the watch folder → teacher requests = exactly the new rows; time vs from scratch."""
    from flows.redistill import redistill_flow

    n = mode["unlabeled"]
    m = max(1, round(0.1 * n))
    watch = work / "redistill-watch"
    write_unlabeled(data, n, watch / "batch-0.parquet")
    root = work / "redistill-root"
    cfg = make_config(mode, models, data, root, str(watch), run_name="redistill")
    forget_teacher()
    started = time.perf_counter()
    first = redistill_flow(cfg, str(watch))
    first_s = time.perf_counter() - started
    rows_before = teacher_cache_rows(root)
    write_unlabeled(data, m, watch / "batch-1.parquet", start=n)
    forget_teacher()
    started = time.perf_counter()
    state = redistill_flow(cfg, str(watch), return_state=True)
    second_s = time.perf_counter() - started
    second = state.result()
    rows_after = teacher_cache_rows(root)
    sent = [line for line in logs_of(state.state_details.flow_run_id) if line.startswith("teacher on unlabeled")]
    # From scratch on the same grown set (fresh caches), for comparison.
    grown = write_unlabeled(data, n + m, work / "redistill-scratch-data" / "unlabeled.parquet")
    scratch_cfg = make_config(mode, models, data, work / "redistill-scratch", grown, run_name="redistill")
    scratch_s, _ = timed_flow(scratch_cfg)
    again = redistill_flow(cfg, str(watch))  # nothing new: returns at once
    return {
        "base_rows": n,
        "new_rows": m,
        "first_status": first["status"],
        "second_status": second["status"],
        "second_new_rows_reported": second["new_rows"],
        "teacher_cache_rows_before": rows_before,
        "teacher_cache_rows_after": rows_after,
        "teacher_requests": rows_after - rows_before,
        "teacher_requests_equal_new_rows": rows_after - rows_before == m,
        "annotate_log": sent,
        "first_run_s": first_s,
        "incremental_run_s": second_s,
        "from_scratch_s": scratch_s,
        "incremental_over_scratch": second_s / scratch_s,
        "no_new_data_status": again["status"],
    }
