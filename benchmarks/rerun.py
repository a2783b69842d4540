"""Unchanged re-run (issue #7): a finished config run again, in the same process and in a fresh one (as after a
restart, cache read from <runs_root>/.prefect-results), as a fraction of its first run; every heavy task run must be
Cached.

  .venv/bin/python benchmarks/run.py --only rerun   # runs the overhead measurement first: its runs are re-run
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from harness import TARGETS, median, run_child, state_counts, task_runs_of, timed_flow, verdict, warm_prefect

HEAVY = ("annotate", "train-student", "relabel", "evaluate-student")


def heavy_cached(runs) -> dict:
    """How many of the heavy task runs (model work) there were and how many of them were Cached."""
    heavy = [r for r in runs if r.name.rsplit("-", 1)[0] in HEAVY]
    return {"heavy_task_runs": len(heavy), "heavy_cached": sum(r.state.name == "Cached" for r in heavy)}


def bench_rerun(cfg, first_seconds: float, reps: int) -> dict:
    """Unchanged re-run of a finished config: in this process (reps times), then in a fresh process.
    `first_seconds`: the median first-run time of this config (fresh caches) from the overhead section."""
    inproc, states, node_times = [], None, []
    for _ in range(reps):
        seconds, state = timed_flow(cfg)
        inproc.append(seconds)
        node_times.append({k: round(v, 2) for k, v in state.result()["timings"].items()})
        runs = task_runs_of(state.state_details.flow_run_id)
        states = heavy_cached(runs) | {"all": state_counts(runs)}
    child = rerun_in_subprocess(cfg, reps)
    frac_in = median(inproc) / first_seconds
    frac_child = median(child["rerun_seconds"]) / first_seconds
    frac_child_wall = child["process_wall_s"] / first_seconds
    return {
        "first_run_median_s": first_seconds,
        "rerun_in_process_s": inproc,
        "rerun_in_process_fraction": frac_in,
        "rerun_node_seconds": node_times,
        "states": states,
        "fresh_process": child,
        "rerun_fresh_process_fraction": frac_child,
        "rerun_fresh_process_fraction_incl_startup": frac_child_wall,
        "target": f"<= {TARGETS['rerun_fraction_max']:.0%} of the first run",
        "verdict_in_process": verdict(frac_in, TARGETS["rerun_fraction_max"], "max"),
        "verdict_fresh_process": verdict(frac_child, TARGETS["rerun_fraction_max"], "max"),
        "verdict_fresh_process_incl_startup": verdict(frac_child_wall, TARGETS["rerun_fraction_max"], "max"),
    }


def rerun_in_subprocess(cfg, reps: int) -> dict:
    cfg_file = Path(cfg.run_dir).parent / "rerun-config.json"
    cfg_file.write_text(cfg.model_dump_json())
    # The same Prefect home (as a restarted process has); the cached results come from <runs_root>/.prefect-results.
    started = time.perf_counter()
    result = run_child("--rerun-child", str(cfg_file), "--child-reps", str(reps))
    result["process_wall_s"] = time.perf_counter() - started
    return result


def rerun_child(cfg_file: str, reps: int) -> dict:
    """In a fresh process (run.py --rerun-child): imports, Prefect API start, then the unchanged flow."""
    started = time.perf_counter()
    importlib.import_module("flows")  # the flow's import cost is part of a restart
    from mckd_core.config import RunConfig

    cfg = RunConfig.model_validate_json(Path(cfg_file).read_text())
    imports = time.perf_counter() - started
    server = warm_prefect()
    times, cached = [], None
    for _ in range(reps):
        seconds, state = timed_flow(cfg)
        times.append(seconds)
        cached = heavy_cached(task_runs_of(state.state_details.flow_run_id))
    return {
        "import_s": imports,
        "prefect_start_s": server,
        "rerun_seconds": times,
        "states": cached,
        "child_total_s": time.perf_counter() - started,
    }
