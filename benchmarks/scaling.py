"""Scaling (issue #7): one stage's seconds vs K partitions, the whole flow's vs S stages, and the teacher's vs rows,
each with a linear fit.

  .venv/bin/python benchmarks/run.py --only scaling
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from harness import interleave, linear_fit, log, make_config, median, timed_flow, write_unlabeled


def bench_scaling(mode: dict, models: dict, data: dict, work: Path) -> dict:
    """One stage with K partitions (stage_flow, no test evaluation); the whole flow with S stages (teacher
    responses pre-cached, Prefect caches fresh, no baselines, intermediate students not scored on T);
    teacher seconds vs rows (warm model, empty response cache)."""
    from flows import stage_flow
    from mckd_core import steps
    from mckd_core.data import read_table, write_parquet
    from mckd_core.plan import RunPlan

    unlabeled = write_unlabeled(data, mode["unlabeled"], work / "scaling-data" / "unlabeled.parquet")
    base = make_config(mode, models, data, work / "scaling-base", unlabeled)
    inputs = steps.prepare_inputs(base)
    warm_cache = base.run_dir.parent / ".teacher-cache.sqlite"
    plan = RunPlan(base, inputs)
    labels, _ = steps.annotate_rows(plan.annotate(inputs.unlabeled, "unlabeled"))
    if inputs.test:
        steps.annotate_rows(plan.annotate(inputs.test, "test"))

    k_times: dict[int, list[float]] = {k: [] for k in mode["k_values"]}
    reps = mode.get("scaling_reps", mode["reps"])
    for rep, k in interleave(mode["k_values"], reps):
        cfg = make_config(
            mode, models, data, work / f"scaling-k{k}-{rep}", unlabeled, partitions=k, evaluate_students=False
        )
        assignment = steps.make_partition(inputs.unlabeled, k, cfg.seed, cfg.run_dir / "data")
        started = time.perf_counter()
        stage_flow(cfg, 1, labels, assignment, inputs, None)
        k_times[k].append(time.perf_counter() - started)
        log(f"   stage K={k} rep {rep}: {k_times[k][-1]:.1f}s")

    s_times: dict[int, list[float]] = {s: [] for s in mode["s_values"]}
    for rep, s in interleave(mode["s_values"], reps):
        root = work / f"scaling-s{s}-{rep}"
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(warm_cache, root / ".teacher-cache.sqlite")
        cfg = make_config(mode, models, data, root, unlabeled, baselines=(), num_stages=s, evaluate_students=False)
        seconds, _ = timed_flow(cfg)
        s_times[s].append(seconds)
        log(f"   flow S={s} rep {rep}: {seconds:.1f}s")

    # Teacher time vs rows (warm model, empty response cache each time: every row is generated).
    steps.teacher_backend(base.teacher)  # load once, outside the timings
    row_times: dict[int, list[float]] = {n: [] for n in mode["teacher_rows"]}
    for rep, n in interleave(mode["teacher_rows"], reps):
        path = write_unlabeled(data, n, work / f"teacher-rows-{n}" / "unlabeled.parquet")
        ref = write_parquet(read_table(path, "unlabeled"), work / f"teacher-rows-{n}" / f"ref-{rep}", "unlabeled")
        started = time.perf_counter()
        job = plan.annotate(ref, "unlabeled").model_copy(
            update={
                "out_dir": str(work / f"teacher-rows-{n}" / f"out-{rep}"),
                "cache_path": str(work / f"teacher-rows-{n}" / f"cache-{rep}.sqlite"),
            }
        )
        _, stats = steps.annotate_rows(job)
        row_times[n].append(time.perf_counter() - started)
        assert stats["requested"] == n, stats
    xs = [n for n, ts in row_times.items() for _ in ts]
    ys = [t for ts in row_times.values() for t in ts]
    fit = linear_fit(xs, ys)
    k_med = {k: median(v) for k, v in k_times.items()}
    s_med = {s: median(v) for s, v in s_times.items()}
    return {
        "stage_seconds_by_K": k_times,
        "stage_median_s_by_K": k_med,
        "stage_K_fit": linear_fit(list(k_med), list(k_med.values())),
        "flow_seconds_by_S": s_times,
        "flow_median_s_by_S": s_med,
        "flow_S_fit": linear_fit(list(s_med), list(s_med.values())),
        "teacher_seconds_by_rows": row_times,
        "teacher_fit_s_per_row": fit["slope"],
        "teacher_fit_intercept_s": fit["intercept"],
        "teacher_fit_r2": fit["r2"],
        "unlabeled_rows": mode["unlabeled"],
    }
