"""mckd benchmarks (issue #7): orchestration overhead, cached re-runs, incremental re-distillation, student
trainer throughput vs transformers' Trainer, and scaling. Real Prefect (ephemeral API in a temp PREFECT_HOME),
real models, real Parquet; no test doubles.

  .venv/bin/python benchmarks/run.py --quick   # tiny random-init T5/Llama + a toy task, <= 10 min on 2 CPU cores
  .venv/bin/python benchmarks/run.py --full    # SmolLM2-135M teacher and students on ATIS at small scale
  .venv/bin/python benchmarks/run.py --only overhead rerun   # some of: noop overhead rerun redistill trainer scaling

Prints ONE JSON object on stdout (all logs go to stderr); `--out FILE` also writes it to FILE.
Every timed section records the 1/5/15-minute load averages before and after it (the machine is shared).
Comparisons interleave their variants (A, B, A, B, ...) and report medians.

This file is the driver; each measurement is a module of its own (overhead.py: no-op tasks and Prefect's overhead
on mckd_flow; rerun.py; redistill.py; trainer.py; scaling.py), over the shared pieces in harness.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from harness import (
    MODES,
    TARGETS,
    Section,
    build_data,
    build_models,
    isolate_environment,
    loadavg,
    log,
    machine,
    median,
    warm_prefect,
)
from overhead import bench_noop_tasks, bench_overhead
from redistill import bench_redistill
from rerun import bench_rerun, rerun_child
from scaling import bench_scaling
from trainer import TRAINER_BASELINES, bench_trainer, train_child


def gpu_section() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"status": "not measured: no GPU lent"}
    return {
        "status": "not measured: GPU present but no GPU benchmark is implemented",
        "device": torch.cuda.get_device_name(0),
    }


def clean(obj):
    """JSON-safe copy without private keys; floats rounded for reading."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, float):
        return round(obj, 4)
    return obj


def run_all(
    mode_name: str,
    only: list[str] | None,
    reps: int | None = None,
    threads: int | None = None,
    trainer_rows: int | None = None,
) -> dict:
    mode = (
        MODES[mode_name]
        | ({"reps": reps, "scaling_reps": reps} if reps else {})
        | ({"torch_threads": threads} if threads else {})
    )
    if trainer_rows:
        mode["trainer"] = mode["trainer"] | {"rows": trainer_rows}
    work = Path(tempfile.mkdtemp(prefix=f"mckd-bench-{mode_name}-"))
    isolate_environment(work / "prefect-home", mode.get("torch_threads"))
    wall = time.perf_counter()
    result: dict = {
        "mode": mode_name,
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_start": loadavg(),
        "machine": machine(),
        "sizes": {k: v for k, v in mode.items()},
        "targets": TARGETS,
    }
    want = lambda name: only is None or name in only  # noqa: E731
    with Section("setup") as sec:
        models = build_models(mode, work / "models")
        log(f"   models ready ({time.perf_counter() - sec.start:.1f}s)")
        pool = max(
            mode["unlabeled"] + max(1, round(0.1 * mode["unlabeled"])),
            max(mode["teacher_rows"]),
            mode["trainer"]["rows"],
        )
        data = build_data(mode, work / "data", pool)
        result["prefect_api_start_s"] = warm_prefect()
        log(f"   Prefect API up in {result['prefect_api_start_s']:.1f}s")
    result["setup"] = sec.info
    if want("noop"):
        with Section("noop tasks") as sec:
            res = bench_noop_tasks(mode["noop_tasks"], mode["reps"], work)
        result["per_task_noop"] = res | {"load": sec.info}
    first_cfg = first_s = None
    if want("overhead") or want("rerun"):
        with Section("orchestration overhead") as sec:
            res = bench_overhead(mode, models, data, work)
        first_cfg, first_s = res["_first_cfg"], res["_first_seconds"]
        result["orchestration_overhead"] = res | {"load": sec.info}
    if want("rerun"):
        with Section("unchanged re-run") as sec:
            res = bench_rerun(first_cfg, first_s, mode["reps"])
        result["unchanged_rerun"] = res | {"load": sec.info}
    if want("redistill"):
        with Section("incremental re-distillation") as sec:
            res = bench_redistill(mode, models, data, work)
        result["incremental_redistill"] = res | {"load": sec.info}
    if want("trainer"):
        with Section("student trainer throughput") as sec:
            res = bench_trainer(mode, models, data, work)
        result["trainer_throughput"] = res | {"load": sec.info}
    if want("scaling"):
        with Section("scaling") as sec:
            res = bench_scaling(mode, models, data, work)
        result["scaling"] = res | {"load": sec.info}
    result["gpu"] = gpu_section()
    result["summary"] = summarize(result)
    result["load_end"] = loadavg()
    result["total_seconds"] = time.perf_counter() - wall
    result["work_dir"] = str(work)
    return clean(result)


def summarize(r: dict) -> dict:
    """Every headline ratio in one place."""
    s: dict = {}
    if "orchestration_overhead" in r:
        o = r["orchestration_overhead"]
        s["prefect_overhead_fraction"] = o["overhead_fraction_median"]
        s["prefect_overhead_verdict"] = o["verdict"]
        s["per_task_overhead_ms_from_flow"] = o["per_task_overhead_ms_median"]
        s["prefect_overhead_seconds_per_run"] = o["gap_median_s"]
    if "per_task_noop" in r:
        s["per_task_overhead_ms_noop"] = r["per_task_noop"]["per_task_ms_median"]
    if "unchanged_rerun" in r:
        u = r["unchanged_rerun"]
        s["rerun_seconds_in_process"] = median(u["rerun_in_process_s"])
        s["rerun_fraction_in_process"] = u["rerun_in_process_fraction"]
        s["rerun_fraction_fresh_process_flow"] = u["rerun_fresh_process_fraction"]
        s["rerun_fraction_fresh_process_incl_startup"] = u["rerun_fresh_process_fraction_incl_startup"]
        s["rerun_verdicts"] = [
            u["verdict_in_process"],
            u["verdict_fresh_process"],
            u["verdict_fresh_process_incl_startup"],
        ]
    if "incremental_redistill" in r:
        i = r["incremental_redistill"]
        s["redistill_teacher_requests"] = i["teacher_requests"]
        s["redistill_new_rows"] = i["new_rows"]
        s["redistill_requests_equal_new_rows"] = i["teacher_requests_equal_new_rows"]
        s["redistill_over_scratch"] = i["incremental_over_scratch"]
        s["redistill_seconds"] = {"incremental": i["incremental_run_s"], "from_scratch": i["from_scratch_s"]}
    if "trainer_throughput" in r:
        t = r["trainer_throughput"]
        for base, v in t["versus"].items():
            s[f"trainer_speedup_vs_{base}"] = v["speedup_tokens_per_s"]
            s[f"trainer_verdict_vs_{base}"] = v["verdict"]
            s[f"trainer_rss_ratio_vs_{base}"] = v["rss_ratio"]
        s["trainer_tokens_per_s"] = {v: t[v]["tokens_per_s_median"] for v in ("mckd", *TRAINER_BASELINES)}
    if "scaling" in r:
        c = r["scaling"]
        s["stage_s_by_K"] = c["stage_median_s_by_K"]
        s["flow_s_by_S"] = c["flow_median_s_by_S"]
        s["teacher_s_per_row"] = c["teacher_fit_s_per_row"]
        s["teacher_fit_r2"] = c["teacher_fit_r2"]
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny models, toy task (default)")
    size.add_argument("--full", action="store_true", help="SmolLM2-135M on ATIS, small scale")
    size.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", choices=["noop", "overhead", "rerun", "redistill", "trainer", "scaling"])
    parser.add_argument("--reps", type=int, help="override the mode's repetitions (medians need >= 3)")
    parser.add_argument(
        "--threads", type=int, help="override the mode's OMP_NUM_THREADS (quick: 1; full: torch's default)"
    )
    parser.add_argument("--trainer-rows", type=int, help="override the trainer comparison's row count")
    parser.add_argument("--out", help="also write the JSON to this file")
    parser.add_argument("--rerun-child", help=argparse.SUPPRESS)
    parser.add_argument("--child-reps", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--train-child", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    # Libraries print to stdout; keep stdout for the one JSON object.
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(os.dup(2), "w")
    if args.rerun_child:
        result = rerun_child(args.rerun_child, args.child_reps)
    elif args.train_child:
        result = train_child(args.train_child, args.variant, args.out_dir)
    else:
        result = run_all(
            args.mode or ("full" if args.full else "quick"), args.only, args.reps, args.threads, args.trainer_rows
        )
    text = json.dumps(result, indent=None if (args.rerun_child or args.train_child) else 2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    os.write(real_stdout, (text + "\n").encode())


if __name__ == "__main__":
    main()
