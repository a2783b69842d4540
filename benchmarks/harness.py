"""What the mckd benchmarks share: sizes and targets, statistics, timed sections, an isolated Prefect home, the
models and data of a benchmark run, Prefect API readers, and the machine record.

Not a script: benchmarks/run.py and its measurement modules (overhead, rerun, redistill, trainer, scaling) import it,
as do student_speed.py, precision_dev.py and profile_rerun.py (benchmarks/ on sys.path, as when a script of it runs).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO), str(REPO / "tests")):  # mckd itself; the tiny models and toy task of tests/
    if _p not in sys.path:
        sys.path.insert(0, _p)

TARGETS = {"prefect_overhead_max": 0.05, "rerun_fraction_max": 0.05, "trainer_speedup_min": 1.0}

# Sizes per mode. quick: tiny random-init models on a toy word-mapping task; full: SmolLM2-135M on ATIS.
MODES = {
    "quick": {
        "models": "tiny",
        "labeled": 8,
        "unlabeled": 32,
        "test": 8,
        "stages": 2,
        "partitions": 2,
        "reps": 3,
        "torch_threads": 1,
        "student": {
            "epochs": 4,
            "batch_size": 8,
            "learning_rate": 3e-3,
            "max_target_tokens": 24,
            "max_dev": 4,
            "eval_batch_size": 32,
        },
        "teacher": {"num_demos": 2, "max_new_tokens": 24, "chat": False, "batch_size": 16},
        "noop_tasks": 30,
        "k_values": [2, 3, 4],
        "s_values": [1, 2, 3, 4],
        "teacher_rows": [16, 32, 64, 128],
        "trainer": {"rows": 128, "epochs": 2, "batch_size": 8, "grad_accum": 2, "reps": 3},
    },
    "full": {
        "models": "smollm2",
        "labeled": 16,
        "unlabeled": 12,
        "test": 4,
        "stages": 2,
        "partitions": 2,
        "reps": 3,
        "scaling_reps": 1,
        "torch_threads": None,
        "baselines": (),
        "student": {
            "epochs": 1,
            "batch_size": 4,
            "learning_rate": 1e-4,
            "max_target_tokens": 40,
            "max_dev": 4,
            "eval_batch_size": 16,
        },
        "teacher": {"num_demos": 3, "max_new_tokens": 40, "batch_size": 8},
        "noop_tasks": 30,
        "k_values": [2, 3, 4],
        "s_values": [1, 2, 3, 4],
        "teacher_rows": [4, 8, 12, 16],
        "trainer": {"rows": 48, "epochs": 1, "batch_size": 4, "grad_accum": 2, "reps": 3},
    },
}
# A few-second smoke version of quick (to check the script itself; its numbers mean nothing).
MODES["smoke"] = {
    **MODES["quick"],
    "unlabeled": 16,
    "test": 4,
    "reps": 1,
    "noop_tasks": 5,
    "k_values": [2, 3],
    "s_values": [1, 2],
    "teacher_rows": [4, 8],
    "student": {**MODES["quick"]["student"], "epochs": 1},
    "trainer": {"rows": 16, "epochs": 1, "batch_size": 8, "grad_accum": 1, "reps": 1},
}


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
    train(
        TrainSpec.flat(
            model=models["causal"],
            out_dir=models["teacher"],
            task="text",
            train_inputs=list(PAIRS),
            train_targets=list(PAIRS.values()),
            epochs=30,
            batch_size=4,
            learning_rate=3e-3,
            select_on_dev=False,
        )
    )
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

        sets = sample_sets(
            load_atis("train"), load_atis("test"), mode["labeled"], pool_rows, mode["test"], 0, max_words=15
        )
        labeled, test, pool, task = sets["labeled"], sets["test"], sets["unlabeled"].reset_index(drop=True), "slots"
    else:
        from toy_data import PAIRS

        words = list(PAIRS)
        labeled = pd.DataFrame(
            {"id": [f"l{i}" for i in range(len(words))], "input": words, "target": [PAIRS[w] for w in words]}
        )
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
    df = data["pool"].iloc[start : start + n][["id", "input", "target"]]
    df.to_parquet(path, index=False)
    return str(path)


def make_config(
    mode: dict,
    models: dict,
    data: dict,
    runs_root: Path,
    unlabeled: str,
    run_name: str = "bench",
    baselines: tuple[str, ...] = ("sft",),
    **stages,
):
    from mckd_core.config import parse_config

    return parse_config(
        {
            "run_name": run_name,
            "runs_root": str(runs_root),
            "seed": 0,
            "data": {
                "task": data["task"],
                "labeled": data["paths"]["labeled"],
                "unlabeled": unlabeled,
                "test": data["paths"]["test"],
            },
            "teacher": {"model": models["teacher"], **mode["teacher"]},
            "student": {"model": models["student"], **mode["student"]},
            "stages": {
                "num_stages": mode["stages"],
                "partitions": mode["partitions"],
                "evaluate_students": True,
                **stages,
            },
            "baselines": list(mode.get("baselines", baselines)),
        },
        source="benchmark config",
    )


def forget_teacher() -> None:
    """Drop the in-process teacher model, so every measured run loads it (as a fresh process would)."""
    from mckd_core import steps

    steps._teacher_backend.cache_clear()


# ---- Prefect ---------------------------------------------------------------------------------------------


def _api(read):
    """`await read(client)` with a Prefect API client, from synchronous code."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def call():
        async with get_client() as client:
            return await read(client)

    return asyncio.run(call())


def flow_tree_ids(flow_run_id) -> list:
    """The flow run and all its nested subflow runs."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async def collect(client):
        ids, frontier = [flow_run_id], [flow_run_id]
        while frontier:
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier))
            )
            frontier = [c.id for c in children]
            ids += frontier
        return ids

    return _api(collect)


def task_runs_of(flow_run_id) -> list:
    """The task runs of a flow run and of its subflow runs."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run_filter = FlowRunFilter(id=FlowRunFilterId(any_=flow_tree_ids(flow_run_id)))
    return _api(lambda client: client.read_task_runs(flow_run_filter=run_filter, limit=200))


def logs_of(flow_run_id) -> list[str]:
    """The log messages of a flow run and of its subflow runs."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_tree_ids(flow_run_id)))
    return [entry.message for entry in _api(lambda client: client.read_logs(log_filter=log_filter, limit=200))]


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
    """mckd_flow(cfg) with the teacher loaded afresh: (wall seconds, its completed final state)."""
    from flows import mckd_flow

    forget_teacher()
    started = time.perf_counter()
    state = mckd_flow(cfg, return_state=True)
    seconds = time.perf_counter() - started
    if not state.is_completed():
        raise RuntimeError(f"benchmark flow did not complete: {state}")
    return seconds, state


# ---- processes and records -------------------------------------------------------------------------------


def run_child(*args: str) -> dict:
    """`benchmarks/run.py *args` in a fresh process with this environment: the JSON object it prints last."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), *args],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prefect": prefect.__version__,
        # AVX2 / AVX512 / ...: where student.precision auto trains in bf16, and how fast (students and the CPU
        # teacher alike run several times slower on an AVX2-only machine)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
