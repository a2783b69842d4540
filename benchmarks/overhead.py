"""Prefect's overhead (issue #7): per no-op task run, and on the wall time of real mckd_flow runs.

  .venv/bin/python benchmarks/run.py --only noop overhead   # add --full for SmolLM2 on ATIS

The flow is the one place mckd's algorithm is written, so the overhead is measured on the flow itself, never on a
copy of its DAG: while mckd_flow runs (fresh caches), each node body's mckd_core call records its [start, end] wall
interval (`node_clock`, which wraps the functions for that run only and puts them back), and the gap is the flow's
wall seconds minus the union of those intervals: the seconds in which no node body was running. The gap holds
Prefect's orchestration (flow and task run states, cache keys, result persistence, API calls, artifacts) and the flow
body's own unwrapped plain work (building the report dict, one Parquet read: milliseconds), so it is an upper bound
on Prefect's share. Reported per run: overhead fraction = gap / (wall − gap) (target <= 5 %) and per task run
gap / task runs, medians over the reps.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import time
from pathlib import Path

from harness import TARGETS, log, make_config, median, state_counts, task_runs_of, timed_flow, verdict, write_unlabeled

# Every node body's mckd_core call, by the module it is looked up in when the node runs (a `from mckd_core.steps
# import x` binds x there, so patching mckd_core.steps alone would time nothing). A listed name its module no longer
# has fails loudly; a node body left off this list would count as overhead.
NODE_BODIES = {
    "tasks.annotate": ("annotate_rows",),
    "tasks.partition": ("make_partition",),
    "tasks.train_student": ("run_in_slot",),
    # relabel and evaluate-student hand their step to run_in_slot, which may run it in a CPU slot's worker process
    # that no patch reaches: the call spans the step as seen from this process.
    "tasks.relabel": ("run_in_slot", "merge_labels"),
    "tasks.evaluate": ("run_in_slot", "score_labels"),
    "tasks.report": ("write_report", "write_test_rows", "render_markdown"),
    # mckd_core work the flow body does itself, outside any task.
    "flows.mckd": ("prepare_inputs", "gold_labels", "changed_fraction", "comparisons"),
}


# ---- pure helper (tested in tests/test_benchmarks.py) ------------------------------------------------------


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals: the seconds in which at least one of them was open."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


# ---- node clock ------------------------------------------------------------------------------------------


def _timed(fn, name: str, intervals: list):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            intervals.append((name, start, time.perf_counter()))  # list.append is atomic: tasks run in threads

    return call


@contextlib.contextmanager
def node_clock():
    """While open, every NODE_BODIES call still runs and appends (name, start, end) to the yielded list; the real
    functions are put back on exit."""
    intervals: list[tuple[str, float, float]] = []
    patched = []
    try:
        for module_name, names in NODE_BODIES.items():
            module = importlib.import_module(module_name)
            for name in names:
                real = getattr(module, name)
                setattr(module, name, _timed(real, f"{module_name.rsplit('.', 1)[1]}.{name}", intervals))
                patched.append((module, name, real))
        yield intervals
    finally:
        for module, name, real in patched:
            setattr(module, name, real)


def busy_by_node(intervals: list[tuple[str, float, float]]) -> dict[str, float]:
    """Seconds per node body, summed over its calls (concurrent calls each count)."""
    seconds: dict[str, float] = {}
    for name, start, end in intervals:
        seconds[name] = seconds.get(name, 0.0) + end - start
    return seconds


# ---- measurements ----------------------------------------------------------------------------------------


def bench_noop_tasks(n: int, reps: int, work: Path) -> dict:
    """Per-task overhead of Prefect itself: the wall time of each call of a trivial task inside a flow (mckd's cache
    policy and persisted results; unique inputs, so nothing is a cache hit), minus the same plain call's time."""
    from prefect import flow, task

    from tasks.common import NodeCache, with_storage

    def tiny(x: int, salt: str) -> int:
        return x + 1

    noop = with_storage(task(tiny, name="bench-noop", cache_policy=NodeCache()), work / "noop-root")

    def timed_calls(fn, salt: str) -> list[float]:
        out = []
        for i in range(n):
            started = time.perf_counter()
            fn(i, salt)
            out.append(time.perf_counter() - started)
        return out

    @flow(name="bench-noop-flow")
    def noop_flow(salt: str) -> list[float]:
        return timed_calls(noop, salt)

    task_ms, plain_ms, flow_s = [], [], []
    for rep in range(reps):
        started = time.perf_counter()
        task_ms += [1000 * t for t in noop_flow(f"{time.time_ns()}-{rep}")]
        flow_s.append(time.perf_counter() - started)
        plain_ms += [1000 * t for t in timed_calls(tiny, f"plain-{rep}")]
    return {
        "tasks_per_flow": n,
        "flows": reps,
        "per_task_ms_median": median(task_ms) - median(plain_ms),
        "per_task_ms_p90": sorted(task_ms)[int(0.9 * len(task_ms))],
        "plain_call_ms_median": median(plain_ms),
        "flow_seconds": flow_s,
    }


def bench_overhead(mode: dict, models: dict, data: dict, work: Path) -> dict:
    """mckd_flow on fresh caches, `reps` times, under the node clock. Per run: gap = wall − union of the node-body
    intervals; overhead fraction = gap / (wall − gap), the share Prefect adds to the node bodies' time."""
    unlabeled = write_unlabeled(data, mode["unlabeled"], work / "overhead-data" / "unlabeled.parquet")
    walls, busy, task_runs, states, nodes, f1s, first_cfg = [], [], [], [], [], [], None
    for rep in range(mode["reps"]):
        cfg = make_config(mode, models, data, work / f"overhead-{rep}", unlabeled)
        with node_clock() as intervals:
            seconds, state = timed_flow(cfg)
        runs = task_runs_of(state.state_details.flow_run_id)
        walls.append(seconds)
        busy.append(union_seconds([(start, end) for _, start, end in intervals]))
        task_runs.append(len(runs))
        states.append(state_counts(runs))
        nodes.append({name: round(s, 2) for name, s in busy_by_node(intervals).items()})
        f1s.append(state.result()["final_student"]["test"]["f1"])
        first_cfg = first_cfg or cfg
        log(f"   overhead rep {rep}: {seconds:.1f}s, node bodies busy {busy[-1]:.1f}s")
    gaps = [w - b for w, b in zip(walls, busy)]
    fractions = [g / b for g, b in zip(gaps, busy)]
    per_task = [1000 * g / n for g, n in zip(gaps, task_runs)]
    overhead = median(fractions)
    return {
        "prefect_seconds": walls,
        "prefect_median_s": median(walls),
        "node_busy_seconds": busy,
        "node_busy_median_s": median(busy),
        "gap_seconds": gaps,
        "gap_median_s": median(gaps),
        "overhead_fraction_per_rep": fractions,
        "overhead_fraction_median": overhead,
        "task_runs_per_flow": task_runs,
        "task_run_states": states[0],
        "per_task_overhead_ms_per_rep": per_task,
        "per_task_overhead_ms_median": median(per_task),
        "node_seconds": nodes,
        "final_student_f1": f1s,
        "method": "gap = flow wall - union of node-body intervals (an upper bound on Prefect's share); "
        "fraction = gap / (wall - gap)",
        "target": f"<= {TARGETS['prefect_overhead_max']:.0%}",
        "verdict": verdict(overhead, TARGETS["prefect_overhead_max"], "max"),
        "_first_cfg": first_cfg,
        "_first_seconds": median(walls),
    }
