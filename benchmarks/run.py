"""mckd benchmarks (issue #7): orchestration overhead, cached re-runs, incremental re-distillation, student
trainer throughput vs transformers' Trainer, and scaling. Real Prefect (ephemeral API in a temp PREFECT_HOME),
real models, real Parquet; no test doubles.

  .venv/bin/python benchmarks/run.py --quick   # tiny random-init T5/Llama + a toy task, <= 10 min on 2 CPU cores
  .venv/bin/python benchmarks/run.py --full    # SmolLM2-135M teacher and students on ATIS at small scale

Prints ONE JSON object on stdout (all logs go to stderr); `--out FILE` also writes it to FILE.
Every timed section records the 1/5/15-minute load averages before and after it (the machine is shared).
Comparisons interleave their variants (A, B, A, B, ...) and report medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO), str(REPO / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

TARGETS = {"prefect_overhead_max": 0.05, "rerun_fraction_max": 0.05, "trainer_speedup_min": 1.0}

# Sizes per mode. quick: tiny random-init models on a toy word-mapping task; full: SmolLM2-135M on ATIS.
MODES = {
    "quick": {
        "models": "tiny", "labeled": 8, "unlabeled": 32, "test": 8, "stages": 2, "partitions": 2, "reps": 3,
        "torch_threads": 1,
        "student": {"epochs": 4, "batch_size": 8, "learning_rate": 3e-3, "max_target_tokens": 24, "max_dev": 4,
                    "eval_batch_size": 32},
        "teacher": {"num_demos": 2, "max_new_tokens": 24, "chat": False, "batch_size": 16},
        "noop_tasks": 30, "k_values": [2, 3, 4], "s_values": [1, 2, 3, 4], "teacher_rows": [16, 32, 64, 128],
        "trainer": {"rows": 128, "epochs": 2, "batch_size": 8, "grad_accum": 2, "reps": 3},
    },
    "full": {
        "models": "smollm2", "labeled": 16, "unlabeled": 12, "test": 4, "stages": 2, "partitions": 2, "reps": 3,
        "scaling_reps": 1, "torch_threads": None, "baselines": (),
        "student": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-4, "max_target_tokens": 40, "max_dev": 4,
                    "eval_batch_size": 16},
        "teacher": {"num_demos": 3, "max_new_tokens": 40, "batch_size": 8},
        "noop_tasks": 30, "k_values": [2, 3, 4], "s_values": [1, 2, 3, 4], "teacher_rows": [4, 8, 12, 16],
        "trainer": {"rows": 48, "epochs": 1, "batch_size": 4, "grad_accum": 2, "reps": 3},
    },
}
# A few-second smoke version of quick (to check the script itself; its numbers mean nothing).
MODES["smoke"] = {**MODES["quick"], "unlabeled": 16, "test": 4, "reps": 1, "noop_tasks": 5, "k_values": [2, 3],
                  "s_values": [1, 2], "teacher_rows": [4, 8], "student": {**MODES["quick"]["student"], "epochs": 1},
                  "trainer": {"rows": 16, "epochs": 1, "batch_size": 8, "grad_accum": 1, "reps": 1}}


# ---- pure helpers (tested in tests/test_benchmarks.py) ----------------------------------------------------

def linear_fit(xs: list[float], ys: list[float]) -> dict:
    """Least-squares y = slope * x + intercept, with R² (1.0 when y is constant and perfectly fit)."""
    n = len(xs)
    if n < 2 or len(set(xs)) < 2:
        raise ValueError("linear_fit needs at least two distinct x values")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return {"slope": slope, "intercept": intercept, "r2": r2}


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def interleave(variants: list[str], reps: int) -> list[tuple[int, str]]:
    """(rep, variant) in the order A, B, ..., A, B, ...: slow drifts of the machine hit every variant alike."""
    return [(r, v) for r in range(reps) for v in variants]


def verdict(value: float, target: float, kind: str) -> str:
    ok = value <= target if kind == "max" else value >= target
    return "met" if ok else "missed"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def log(*args) -> None:
    print("[bench]", time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


class Section:
    """Times a benchmark section and records the load averages at its start and end."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        log(f"== {self.name} (load {loadavg()})")
        self.load_start, self.start = loadavg(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.info = {"load_start": self.load_start, "load_end": loadavg(), "section_seconds": round(self.seconds, 1)}
        log(f"   {self.name}: {self.seconds:.1f}s")
        return False


# ---- environment, models, data -------------------------------------------------------------------------

def isolate_environment(home: Path, torch_threads: int | None = None) -> None:
    """A temp Prefect home (its own ephemeral API database), no telemetry, no hub access.

    torch_threads=1 for the tiny models: their ops are far too small to gain from 2 threads, and with the 2 cores
    shared, spinning OpenMP threads made a 0.5 s student take 10+ s (measured); children inherit it."""
    if torch_threads:
        os.environ["OMP_NUM_THREADS"] = str(torch_threads)
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(home / "storage")
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    # A new API database is migrated at first start; on a busy 2-core machine that takes longer than the default 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def build_models(mode: dict, root: Path) -> dict:
    """tiny: random-init T5 student + a tiny Llama taught the toy mapping (as in tests/conftest.py);
    smollm2: the pip-shipped SmolLM2-135M-Instruct as teacher and student."""
    if mode["models"] == "smollm2":
        from mckd_core.models import resolve_model

        path = resolve_model("smollm2-135m-instruct")
        return {"teacher": path, "student": path, "causal": path}
    from tiny_models import make_tiny_llama, make_tiny_t5
    from toy_data import PAIRS

    from mckd_core.models import cache_root
    from mckd_core.student import TrainSpec, train

    # Seeded and deterministic: built once per machine (about a minute on 2 busy cores), then reused.
    root = cache_root() / "bench-tiny-models-v1"
    models = {"student": str(root / "t5"), "causal": str(root / "llama"), "teacher": str(root / "teacher")}
    if all((Path(p) / "config.json").is_file() for p in models.values()):
        return models
    make_tiny_t5(root / "t5")
    make_tiny_llama(root / "llama")
    train(TrainSpec(model=models["causal"], out_dir=models["teacher"], task="text", train_inputs=list(PAIRS),
                    train_targets=list(PAIRS.values()), epochs=30, batch_size=4, learning_rate=3e-3, select_on_dev=False))
    return models


def toy_pool(n: int, offset: int = 0):
    """n distinct toy inputs of three words (index → base-8 digits), with their word-by-word mapped targets."""
    import pandas as pd
    from toy_data import PAIRS

    words = list(PAIRS)
    rows = []
    for i in range(offset, offset + n):
        ws = [words[(i // 64) % 8], words[(i // 8) % 8], words[i % 8]]
        rows.append({"id": f"u{i}", "input": " ".join(ws), "target": " ".join(PAIRS[w] for w in ws)})
    return pd.DataFrame(rows)


def build_data(mode: dict, root: Path, pool_rows: int) -> dict:
    """labeled / test Parquet paths and a pool of `pool_rows` unlabeled rows (DataFrame) to cut U from."""
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    if mode["models"] == "smollm2":
        from mckd_core.atis import load_atis
        from mckd_core.data import sample_sets

        sets = sample_sets(load_atis("train"), load_atis("test"), mode["labeled"], pool_rows, mode["test"], 0, max_words=15)
        labeled, test, pool, task = sets["labeled"], sets["test"], sets["unlabeled"].reset_index(drop=True), "slots"
    else:
        from toy_data import PAIRS

        words = list(PAIRS)
        labeled = pd.DataFrame({"id": [f"l{i}" for i in range(len(words))], "input": words, "target": [PAIRS[w] for w in words]})
        if pool_rows + mode["test"] > 512:
            raise ValueError("the toy task has 512 distinct inputs")
        pool = toy_pool(pool_rows)
        test = toy_pool(mode["test"], offset=512 - mode["test"]).assign(id=lambda d: "t" + d["id"])
        task = "text"
    paths = {"labeled": str(root / "labeled.parquet"), "test": str(root / "test.parquet")}
    labeled.to_parquet(paths["labeled"], index=False)
    test.to_parquet(paths["test"], index=False)
    return {"paths": paths, "pool": pool, "task": task}


def write_unlabeled(data: dict, n: int, path: Path, start: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    df = data["pool"].iloc[start:start + n][["id", "input", "target"]]
    df.to_parquet(path, index=False)
    return str(path)


def make_config(mode: dict, models: dict, data: dict, runs_root: Path, unlabeled: str, run_name: str = "bench",
                baselines: tuple[str, ...] = ("sft",), **stages):
    from mckd_core.config import parse_config

    return parse_config({
        "run_name": run_name, "runs_root": str(runs_root), "seed": 0,
        "data": {"task": data["task"], "labeled": data["paths"]["labeled"], "unlabeled": unlabeled, "test": data["paths"]["test"]},
        "teacher": {"model": models["teacher"], **mode["teacher"]},
        "student": {"model": models["student"], **mode["student"]},
        "stages": {"num_stages": mode["stages"], "partitions": mode["partitions"], "evaluate_students": True, **stages},
        "baselines": list(mode.get("baselines", baselines)),
    }, source="benchmark config")


def forget_teacher() -> None:
    """Drop the in-process teacher model, so every measured run loads it (as a fresh process would)."""
    from mckd_core import steps

    steps._teacher_backend.cache_clear()


# ---- the pipeline without Prefect: the same node sequence as flows/mckd.py ----------------------------

def core_pipeline(cfg) -> dict:
    """mckd_flow's DAG as plain mckd_core.steps calls, in the flow's order and with its concurrency (a stage's K
    students train and relabel in parallel threads, as the flow's default thread-pool task runner runs them, each
    node holding a device slot as the tasks do: on CPU that serializes them)."""
    from concurrent.futures import ThreadPoolExecutor

    from mckd_core import steps
    from mckd_core.gpus import device_slot

    def slotted(fn):
        def call(*args, **kwargs):
            with device_slot():
                return fn(*args, **kwargs)
        return call

    train, relabel, evaluate_student = (slotted(steps.train_student_on), slotted(steps.relabel), slotted(steps.evaluate_student))
    from mckd_core.partition import cross_assignment
    from mckd_core.report import final_entry, student_entry, summarize_test, write_report

    clock = time.perf_counter()
    timings: dict[str, float] = {}
    task, seed, K = cfg.data.task, cfg.seed, cfg.stages.partitions

    def d(*parts: str) -> str:
        return str(cfg.run_dir.joinpath(*parts))

    data = steps.prepare_inputs(cfg)
    cache = str(cfg.run_dir.parent / ".teacher-cache.sqlite")
    labels, _ = steps.annotate_rows(data.unlabeled, data.labeled, cfg.teacher, task, seed, d("teacher"), cache)
    teacher_test = steps.annotate_rows(data.test, data.labeled, cfg.teacher, task, seed, d("teacher", "test"), cache)[0] if data.test else None
    teacher_labels = labels
    timings["teacher"] = time.perf_counter() - clock
    assignment = steps.make_partition(data.unlabeled, K, seed, d("data"))
    stages = []
    for stage in range(1, cfg.stages.num_stages):
        started = time.perf_counter()

        def student_k(k: int, train_parts: list[int], held_out: int, labels=labels, stage=stage):
            what = f"stage-{stage}/student-{k}"
            student = train(labels, assignment, train_parts, data.dev, cfg.student, task, seed + 100 * stage + k,
                                             d(f"stage-{stage}", f"student-{k}"), what=what)
            return student, relabel(student, labels, assignment, held_out, stage, what, cfg.student, task,
                                          d(f"stage-{stage}", f"partition-{held_out}"))

        with ThreadPoolExecutor() as pool:
            done = [f.result() for f in [pool.submit(student_k, k, parts, held) for k, (parts, held) in enumerate(cross_assignment(K))]]
            students = [s for s, _ in done]
            new_labels = steps.merge_labels(labels, [r for _, r in done], d(f"stage-{stage}"), cfg.stages.keep_previous_on_invalid)
            evaluate = data.test is not None and cfg.stages.evaluate_students
            tests = [f.result() if f else None for f in
                     [pool.submit(evaluate_student, s, data.test, cfg.student, task) if evaluate else None for s in students]]
        entries = [student_entry(k, s.metrics, t) for k, (s, t) in enumerate(zip(students, tests))]
        score = steps.score_labels(new_labels, task)
        stages.append({"stage": stage, "students": entries, "pseudolabel_f1": score and score["f1"],
                       "changed_fraction": steps.changed_fraction(labels, new_labels)})
        labels = new_labels
        timings[f"stage-{stage}"] = time.perf_counter() - started
    started = time.perf_counter()
    final = train(labels, None, None, data.dev, cfg.student, task, seed + 100 * cfg.stages.num_stages,
                                   d("final", "student"), what="final/student")
    timings["final"] = time.perf_counter() - started
    started = time.perf_counter()
    final_test = evaluate_student(final, data.test, cfg.student, task) if data.test else None
    baselines = {}
    if "sft" in cfg.baselines and data.test:
        sft_cfg = cfg.student.model_copy(update={"select_on_dev": cfg.data.dev is not None, "min_valid_rows": 1})
        sft = train(steps.gold_labels(data.labeled, d("baselines")), None, None, data.dev, sft_cfg, task, seed,
                                     d("baselines", "sft"), what="baseline/sft")
        baselines["sft"] = final_entry(sft.dir, sft.metrics, evaluate_student(sft, data.test, sft_cfg, task))
    timings["evaluate"] = time.perf_counter() - started
    teacher_rows = teacher_labels.read()
    teacher_score = steps.score_labels(teacher_labels, task)
    timings["total"] = time.perf_counter() - clock
    report = {"config": cfg.model_dump(mode="json"),
              "counts": {"labeled": data.labeled.rows, "unlabeled": data.unlabeled.rows, "test": data.test.rows if data.test else 0,
                         "teacher_valid": int(teacher_rows["valid"].sum()), "teacher_invalid": int((~teacher_rows["valid"]).sum()),
                         "teacher_repaired": int((teacher_rows["error"] == "repaired").sum())},
              "teacher": {"test": summarize_test(steps.score_labels(teacher_test, task)) if teacher_test else None,
                          "pseudolabel_f1": teacher_score and teacher_score["f1"]},
              "stages": stages, "final_student": final_entry(final.dir, final.metrics, final_test), "baselines": baselines,
              "timings": timings}
    write_report(report, cfg.run_dir)
    return report


# ---- Prefect API helpers -------------------------------------------------------------------------------

def flow_tree_ids(flow_run_id) -> list:
    """The flow run and all its nested subflow runs."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async def collect():
        ids, frontier = [flow_run_id], [flow_run_id]
        async with get_client() as client:
            while frontier:
                children = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)))
                frontier = [c.id for c in children]
                ids += frontier
        return ids

    return asyncio.run(collect())


def task_runs_of(flow_run_id) -> list:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    ids = flow_tree_ids(flow_run_id)

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200)

    return asyncio.run(read())


def logs_of(flow_run_id) -> list[str]:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    ids = flow_tree_ids(flow_run_id)

    async def read():
        async with get_client() as client:
            return await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200)

    return [entry.message for entry in asyncio.run(read())]


HEAVY = ("annotate", "train-student", "relabel", "evaluate-student")


def state_counts(runs) -> dict:
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.state.name] = counts.get(r.state.name, 0) + 1
    return counts


def warm_prefect() -> float:
    """Start the ephemeral API (first flow call of the process) outside any measurement; returns its seconds."""
    from prefect import flow

    @flow(name="bench-warmup")
    def warmup() -> int:
        return 1

    started = time.perf_counter()
    warmup()
    return time.perf_counter() - started


def timed_flow(cfg) -> tuple[float, object]:
    from flows import mckd_flow

    forget_teacher()
    started = time.perf_counter()
    state = mckd_flow(cfg, return_state=True)
    seconds = time.perf_counter() - started
    if not state.is_completed():
        raise RuntimeError(f"benchmark flow did not complete: {state}")
    return seconds, state


def teacher_cache_rows(runs_root: Path) -> int:
    path = runs_root / ".teacher-cache.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(str(path)) as conn:
        return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


# ---- sections ----------------------------------------------------------------------------------------

def bench_noop_tasks(n: int, reps: int, work: Path) -> dict:
    """Per-task overhead of Prefect itself: the wall time of each call of a trivial task inside a flow (mckd's cache
    policy and persisted results; unique inputs, so nothing is a cache hit), minus the same plain call's time."""
    from prefect import flow, task

    from tasks.common import CACHE, with_storage

    def tiny(x: int, salt: str) -> int:
        return x + 1

    noop = with_storage(task(tiny, name="bench-noop", cache_policy=CACHE), work / "noop-root")

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
    return {"tasks_per_flow": n, "flows": reps, "per_task_ms_median": median(task_ms) - median(plain_ms),
            "per_task_ms_p90": sorted(task_ms)[int(0.9 * len(task_ms))], "plain_call_ms_median": median(plain_ms),
            "flow_seconds": flow_s}


def bench_overhead(mode: dict, models: dict, data: dict, work: Path) -> dict:
    """Same pipeline, same data and seeds, fresh caches: mckd_flow vs core_pipeline, interleaved."""
    unlabeled = write_unlabeled(data, mode["unlabeled"], work / "overhead-data" / "unlabeled.parquet")
    times = {"prefect": [], "core": []}
    task_runs, f1s, first_cfg, flow_states = [], {"prefect": [], "core": []}, None, []
    node_times: dict[str, list] = {"prefect": [], "core": []}
    for rep, variant in interleave(["prefect", "core"], mode["reps"]):
        cfg = make_config(mode, models, data, work / f"overhead-{variant}-{rep}", unlabeled)
        if variant == "prefect":
            seconds, state = timed_flow(cfg)
            report = state.result()
            runs = task_runs_of(state.state_details.flow_run_id)
            task_runs.append(len(runs))
            flow_states.append(state_counts(runs))
            first_cfg = first_cfg or cfg
        else:
            forget_teacher()
            started = time.perf_counter()
            report = core_pipeline(cfg)
            seconds = time.perf_counter() - started
        times[variant].append(seconds)
        node_times[variant].append({k: round(v, 2) for k, v in report["timings"].items()})
        f1s[variant].append(report["final_student"]["test"]["f1"])
        log(f"   overhead rep {rep} {variant}: {seconds:.1f}s (load {loadavg()})")
    ratios = [p / c - 1 for p, c in zip(times["prefect"], times["core"])]
    per_task = [(p - c) / n * 1000 for p, c, n in zip(times["prefect"], times["core"], task_runs)]
    overhead = median(times["prefect"]) / median(times["core"]) - 1
    return {
        "prefect_seconds": times["prefect"], "core_seconds": times["core"],
        "prefect_median_s": median(times["prefect"]), "core_median_s": median(times["core"]),
        "overhead_fraction_of_medians": overhead, "overhead_fraction_per_pair": ratios,
        "overhead_fraction_median_of_pairs": median(ratios),
        "task_runs_per_flow": task_runs, "task_run_states": flow_states[0] if flow_states else None,
        "per_task_overhead_ms_per_pair": per_task, "per_task_overhead_ms_median": median(per_task),
        "node_seconds": node_times, "final_student_f1": f1s, "same_results": f1s["prefect"] == f1s["core"],
        "target": f"<= {TARGETS['prefect_overhead_max']:.0%}",
        "verdict": verdict(overhead, TARGETS["prefect_overhead_max"], "max"),
        "_first_cfg": first_cfg, "_first_seconds": times["prefect"][0],
    }


def bench_rerun(cfg, first_seconds: float, reps: int) -> dict:
    """Unchanged re-run of a finished config: in this process (reps times), then in a fresh process.
    `first_seconds`: the median first-run time of this config (fresh caches) from the overhead section."""
    inproc, states, node_times = [], None, []
    for _ in range(reps):
        seconds, state = timed_flow(cfg)
        inproc.append(seconds)
        node_times.append({k: round(v, 2) for k, v in state.result()["timings"].items()})
        runs = task_runs_of(state.state_details.flow_run_id)
        heavy = [r for r in runs if r.name.rsplit("-", 1)[0] in HEAVY]
        states = {"heavy_task_runs": len(heavy), "heavy_cached": sum(r.state.name == "Cached" for r in heavy), "all": state_counts(runs)}
    child = rerun_in_subprocess(cfg, reps)
    frac_in = median(inproc) / first_seconds
    frac_child = median(child["rerun_seconds"]) / first_seconds
    frac_child_wall = child["process_wall_s"] / first_seconds
    return {
        "first_run_median_s": first_seconds, "rerun_in_process_s": inproc, "rerun_in_process_fraction": frac_in,
        "rerun_node_seconds": node_times,
        "states": states,
        "fresh_process": child, "rerun_fresh_process_fraction": frac_child,
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
    env = os.environ.copy()
    started = time.perf_counter()
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--rerun-child", str(cfg_file), "--child-reps", str(reps)],
                         cwd=str(REPO), capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"re-run child failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def rerun_child(cfg_file: str, reps: int) -> dict:
    """In a fresh process: imports, Prefect API start, then the unchanged flow (cache from .prefect-results)."""
    started = time.perf_counter()
    from flows import mckd_flow  # noqa: F401  (import cost is part of a restart)
    from mckd_core.config import RunConfig

    cfg = RunConfig.model_validate_json(Path(cfg_file).read_text())
    imports = time.perf_counter() - started
    server = warm_prefect()
    times, cached = [], None
    for _ in range(reps):
        seconds, state = timed_flow(cfg)
        times.append(seconds)
        runs = task_runs_of(state.state_details.flow_run_id)
        heavy = [r for r in runs if r.name.rsplit("-", 1)[0] in HEAVY]
        cached = {"heavy_task_runs": len(heavy), "heavy_cached": sum(r.state.name == "Cached" for r in heavy)}
    return {"import_s": imports, "prefect_start_s": server, "rerun_seconds": times, "states": cached,
            "child_total_s": time.perf_counter() - started}


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
        "base_rows": n, "new_rows": m, "first_status": first["status"], "second_status": second["status"],
        "second_new_rows_reported": second["new_rows"],
        "teacher_cache_rows_before": rows_before, "teacher_cache_rows_after": rows_after,
        "teacher_requests": rows_after - rows_before, "teacher_requests_equal_new_rows": rows_after - rows_before == m,
        "annotate_log": sent,
        "first_run_s": first_s, "incremental_run_s": second_s, "from_scratch_s": scratch_s,
        "incremental_over_scratch": second_s / scratch_s, "no_new_data_status": again["status"],
    }


# Trainer variants: transformers' default (random order, the baseline the target names) and with its own
# length grouping switched on (the lever mckd's trainer relies on, so the stricter comparison).
TRAINER_BASELINES = {"hf_trainer": "random", "hf_trainer_grouped": "group_by_length"}


def bench_trainer(mode: dict, models: dict, data: dict, work: Path) -> dict:
    """mckd_core.student.train vs transformers.Trainer (default sampler and group_by_length): same rows, model,
    effective batch, epochs, lr, seed; each measurement in its own child process (peak RSS = the child's)."""
    t = mode["trainer"]
    rows = data["pool"].iloc[: t["rows"]]
    spec = {"model": models["causal"], "task": data["task"], "inputs": list(rows["input"]), "targets": list(rows["target"]),
            "epochs": t["epochs"], "batch_size": t["batch_size"], "grad_accum": t["grad_accum"],
            "learning_rate": mode["student"]["learning_rate"], "max_target_tokens": mode["student"]["max_target_tokens"]}
    spec_file = work / "trainer-spec.json"
    spec_file.write_text(json.dumps(spec))
    variants = ["mckd", *TRAINER_BASELINES]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for rep, variant in interleave(variants, t["reps"]):
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--train-child", str(spec_file), "--variant", variant,
                              "--out-dir", str(work / f"trainer-{variant}-{rep}")],
                             cwd=str(REPO), capture_output=True, text=True, env=os.environ.copy())
        if out.returncode != 0:
            raise RuntimeError(f"train child {variant} failed:\n{out.stderr[-4000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        results[variant].append(res)
        log(f"   trainer rep {rep} {variant}: {res['seconds']:.1f}s {res['tokens_per_s']:.0f} tok/s rss {res['peak_rss_mib']:.0f} MiB")

    def summary(runs: list[dict]) -> dict:
        return {"seconds": [r["seconds"] for r in runs], "tokens_per_s_median": median([r["tokens_per_s"] for r in runs]),
                "examples_per_s_median": median([r["examples_per_s"] for r in runs]),
                "train_loop_tokens_per_s_median": median([r["loop_tokens_per_s"] for r in runs]),
                "peak_rss_mib_median": median([r["peak_rss_mib"] for r in runs]), "final_loss": [r.get("loss") for r in runs],
                "tokens": runs[0]["tokens"], "examples": runs[0]["examples"]}

    summaries = {v: summary(results[v]) for v in variants}
    mckd = summaries["mckd"]

    def versus(base: str) -> dict:
        speedup = mckd["tokens_per_s_median"] / summaries[base]["tokens_per_s_median"]
        return {"speedup_tokens_per_s": speedup,
                "speedup_per_pair": [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(results["mckd"], results[base])],
                "loop_speedup": mckd["train_loop_tokens_per_s_median"] / summaries[base]["train_loop_tokens_per_s_median"],
                "rss_ratio": mckd["peak_rss_mib_median"] / summaries[base]["peak_rss_mib_median"],
                "verdict": verdict(speedup, TARGETS["trainer_speedup_min"], "min")}

    return {"model": Path(models["causal"]).name, "rows": t["rows"], "epochs": t["epochs"],
            "micro_batch": t["batch_size"], "grad_accum": t["grad_accum"], **summaries,
            "versus": {base: versus(base) for base in TRAINER_BASELINES},
            "target": f">= {TARGETS['trainer_speedup_min']}x of transformers.Trainer tokens/s"}


def peak_rss_mib() -> float:
    """This process's peak RSS. /proc VmHWM belongs to the process's own address space; ru_maxrss is not used
    because Linux carries a forked parent's maximum into the child across exec (every child read 682 MiB, the
    parent's size)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_child(spec_file: str, variant: str, out_dir: str) -> dict:
    """One training run (load + train + save), timed inside a fresh process."""
    spec = json.loads(Path(spec_file).read_text())
    import torch

    from mckd_core.student import TrainSpec, _Encoder, is_seq2seq, load_tokenizer, save_model, train

    # Library imports happen before either clock (train() would otherwise pay for transformers' lazy imports).
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer,  # noqa: F401
                              Trainer, TrainingArguments, get_linear_schedule_with_warmup)

    path = spec["model"]
    prep_started = time.perf_counter()  # Trainer's clock starts here: its tokenizer load and encoding count, as in train()
    seq2seq = is_seq2seq(path, "auto")
    tok = load_tokenizer(path)
    encoder = _Encoder(tok, seq2seq, 128, spec["max_target_tokens"])
    rows = [encoder.example(x, y) for x, y in zip(spec["inputs"], spec["targets"])]
    tokens_per_epoch = sum(len(r["input_ids"]) + (len(r["labels"]) if seq2seq else 0) for r in rows)
    tokens, examples = tokens_per_epoch * spec["epochs"], len(rows) * spec["epochs"]
    loss = None
    if variant == "mckd":
        started = time.perf_counter()
        metrics = train(TrainSpec(model=path, out_dir=out_dir, task=spec["task"], train_inputs=spec["inputs"],
                                  train_targets=spec["targets"], epochs=spec["epochs"], batch_size=spec["batch_size"],
                                  grad_accum=spec["grad_accum"], learning_rate=spec["learning_rate"], precision="fp32",
                                  max_target_tokens=spec["max_target_tokens"], select_on_dev=False, seed=0))
        seconds = time.perf_counter() - started
        loop = metrics["seconds"] - metrics["phases"]["save"]  # load + train (before save)
        loss = metrics["history"][-1]["loss"]
    else:
        started = prep_started
        torch.manual_seed(0)
        cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model = cls.from_pretrained(path, dtype=torch.float32)
        args = TrainingArguments(output_dir=out_dir + "-trainer", per_device_train_batch_size=spec["batch_size"],
                                 gradient_accumulation_steps=spec["grad_accum"], num_train_epochs=spec["epochs"],
                                 learning_rate=spec["learning_rate"], weight_decay=0.0, warmup_steps=0, lr_scheduler_type="linear",
                                 max_grad_norm=1.0, optim="adamw_torch", logging_strategy="epoch", save_strategy="no",
                                 eval_strategy="no", report_to="none", use_cpu=True, seed=0, dataloader_num_workers=0,
                                 train_sampling_strategy=TRAINER_BASELINES[variant], remove_unused_columns=False,
                                 disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=encoder.collate)
        out = trainer.train()
        loop = time.perf_counter() - started
        loss = out.training_loss
        save_model(model, tok, out_dir, {"trainer": "transformers.Trainer"})
        seconds = time.perf_counter() - started
    peak = peak_rss_mib()
    return {"variant": variant, "seconds": seconds, "tokens": tokens, "examples": examples, "tokens_per_s": tokens / seconds,
            "examples_per_s": examples / seconds, "loop_tokens_per_s": tokens / loop, "peak_rss_mib": peak, "loss": loss}


def bench_scaling(mode: dict, models: dict, data: dict, work: Path) -> dict:
    """One stage with K partitions (stage_flow, no test evaluation); the whole flow with S stages (teacher
    responses pre-cached, Prefect caches fresh, no baselines, intermediate students not scored on T);
    teacher seconds vs rows (warm model, empty response cache)."""
    from flows import stage_flow
    from mckd_core import steps

    unlabeled = write_unlabeled(data, mode["unlabeled"], work / "scaling-data" / "unlabeled.parquet")
    base = make_config(mode, models, data, work / "scaling-base", unlabeled)
    inputs = steps.prepare_inputs(base)
    warm_cache = base.run_dir.parent / ".teacher-cache.sqlite"
    labels, _ = steps.annotate_rows(inputs.unlabeled, inputs.labeled, base.teacher, base.data.task, base.seed,
                                    base.run_dir / "teacher", warm_cache)
    if inputs.test:
        steps.annotate_rows(inputs.test, inputs.labeled, base.teacher, base.data.task, base.seed, base.run_dir / "teacher" / "test", warm_cache)

    k_times: dict[int, list[float]] = {k: [] for k in mode["k_values"]}
    reps = mode.get("scaling_reps", mode["reps"])
    for rep, k in interleave(mode["k_values"], reps):
        cfg = make_config(mode, models, data, work / f"scaling-k{k}-{rep}", unlabeled, partitions=k, evaluate_students=False)
        assignment = steps.make_partition(inputs.unlabeled, k, cfg.seed, cfg.run_dir / "data")
        started = time.perf_counter()
        stage_flow(cfg, 1, labels, assignment, inputs.dev, None)
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
    from mckd_core.teacher import ResponseCache  # noqa: F401  (the cache file is created by annotate_rows)

    steps.teacher_backend(base.teacher)  # load once, outside the timings
    row_times: dict[int, list[float]] = {n: [] for n in mode["teacher_rows"]}
    for rep, n in interleave(mode["teacher_rows"], reps):
        path = write_unlabeled(data, n, work / f"teacher-rows-{n}" / "unlabeled.parquet")
        from mckd_core.data import ParquetRef, read_table, write_parquet

        ref = write_parquet(read_table(path, "unlabeled"), work / f"teacher-rows-{n}" / f"ref-{rep}", "unlabeled")
        started = time.perf_counter()
        _, stats = steps.annotate_rows(ref, inputs.labeled, base.teacher, base.data.task, base.seed,
                                       work / f"teacher-rows-{n}" / f"out-{rep}", work / f"teacher-rows-{n}" / f"cache-{rep}.sqlite")
        row_times[n].append(time.perf_counter() - started)
        assert stats["requested"] == n, stats
    xs = [n for n, ts in row_times.items() for _ in ts]
    ys = [t for ts in row_times.values() for t in ts]
    fit = linear_fit(xs, ys)
    k_med = {k: median(v) for k, v in k_times.items()}
    s_med = {s: median(v) for s, v in s_times.items()}
    return {
        "stage_seconds_by_K": k_times, "stage_median_s_by_K": k_med,
        "stage_K_fit": linear_fit(list(k_med), list(k_med.values())),
        "flow_seconds_by_S": s_times, "flow_median_s_by_S": s_med,
        "flow_S_fit": linear_fit(list(s_med), list(s_med.values())),
        "teacher_seconds_by_rows": row_times, "teacher_fit_s_per_row": fit["slope"], "teacher_fit_intercept_s": fit["intercept"],
        "teacher_fit_r2": fit["r2"], "unlabeled_rows": mode["unlabeled"],
    }


def gpu_section() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"status": "not measured: no GPU lent"}
    return {"status": "not measured: GPU present but no GPU benchmark is implemented", "device": torch.cuda.get_device_name(0)}


def save_result(result: dict, stem: str, out: Path | None) -> None:
    """Print a measurement's JSON and write it to `out` (default: benchmarks/results/<stem>-<date>.json)."""
    text = json.dumps(result, indent=1)
    (out or REPO / "benchmarks" / "results" / f"{stem}-{result['date']}.json").write_text(text)
    print(text)


def machine() -> dict:
    import prefect
    import torch
    import transformers

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "prefect": prefect.__version__, "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def clean(obj):
    """JSON-safe copy without private keys; floats rounded for reading."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, float):
        return round(obj, 4)
    return obj


def run_all(mode_name: str, only: list[str] | None, reps: int | None = None, threads: int | None = None,
            trainer_rows: int | None = None) -> dict:
    mode = MODES[mode_name] | ({"reps": reps, "scaling_reps": reps} if reps else {}) | ({"torch_threads": threads} if threads else {})
    if trainer_rows:
        mode["trainer"] = mode["trainer"] | {"rows": trainer_rows}
    work = Path(tempfile.mkdtemp(prefix=f"mckd-bench-{mode_name}-"))
    isolate_environment(work / "prefect-home", mode.get("torch_threads"))
    wall = time.perf_counter()
    result: dict = {"mode": mode_name, "command": " ".join([Path(sys.executable).name] + sys.argv),
                    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_start": loadavg(),
                    "machine": machine(), "sizes": {k: v for k, v in mode.items()}, "targets": TARGETS}
    want = lambda name: only is None or name in only  # noqa: E731
    with Section("setup") as sec:
        models = build_models(mode, work / "models")
        log(f"   models ready ({time.perf_counter() - sec.start:.1f}s)")
        pool = max(mode["unlabeled"] + max(1, round(0.1 * mode["unlabeled"])), max(mode["teacher_rows"]), mode["trainer"]["rows"])
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
        first_cfg, first_s = res["_first_cfg"], res["prefect_median_s"]
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
        s["prefect_overhead_fraction"] = o["overhead_fraction_of_medians"]
        s["prefect_overhead_verdict"] = o["verdict"]
        s["per_task_overhead_ms_from_pipeline"] = o["per_task_overhead_ms_median"]
        s["prefect_overhead_seconds_per_run"] = o["prefect_median_s"] - o["core_median_s"]
    if "per_task_noop" in r:
        s["per_task_overhead_ms_noop"] = r["per_task_noop"]["per_task_ms_median"]
    if "unchanged_rerun" in r:
        u = r["unchanged_rerun"]
        s["rerun_seconds_in_process"] = median(u["rerun_in_process_s"])
        s["rerun_fraction_in_process"] = u["rerun_in_process_fraction"]
        s["rerun_fraction_fresh_process_flow"] = u["rerun_fresh_process_fraction"]
        s["rerun_fraction_fresh_process_incl_startup"] = u["rerun_fresh_process_fraction_incl_startup"]
        s["rerun_verdicts"] = [u["verdict_in_process"], u["verdict_fresh_process"], u["verdict_fresh_process_incl_startup"]]
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
    parser.add_argument("--threads", type=int, help="override the mode's OMP_NUM_THREADS (quick: 1; full: torch's default)")
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
        result = run_all(args.mode or ("full" if args.full else "quick"), args.only, args.reps, args.threads, args.trainer_rows)
    text = json.dumps(result, indent=None if (args.rerun_child or args.train_child) else 2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    os.write(real_stdout, (text + "\n").encode())


if __name__ == "__main__":
    main()
