"""Stage wall time: a stage's K=2 students at once (one per core) vs one at a time (the whole process each).

Runs the real stage subflow (`flows.mckd.stage_flow`: train both students, relabel each held-out part, merge)
with SmolLM2-135M students on ATIS rows, in fresh run dirs (nothing cached), alternating the two modes over
`--reps` repetitions (the order flips every repetition so drift in machine load hits both). The labels are the
gold targets of U: where they come from does not change what a student costs.

Usage: .venv/bin/python benchmarks/parallel_students.py [--unlabeled 80 --epochs 2 --reps 3]
Prints one JSON object (also written to benchmarks/results/parallel-students-<date>.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from mckd_core.atis import load_atis  # noqa: E402
from mckd_core.config import parse_config  # noqa: E402
from mckd_core.data import write_parquet  # noqa: E402
from mckd_core.gpus import available_cores  # noqa: E402
from mckd_core.steps import Inputs, gold_labels, make_partition  # noqa: E402

MODES = {"one-at-a-time": 1, "parallel": None}  # stages.cpu_students: 1, or the default (one per core, K=2)


def stage_inputs(args, out: Path):
    """Gold-labelled U (the stage's labels), its 2-part partition, and the dev rows students select on."""
    pool = load_atis("train").drop_duplicates("input").sample(frac=1.0, random_state=args.seed)
    unlabeled = write_parquet(pool.iloc[: args.unlabeled].reset_index(drop=True), out / "data", "unlabeled")
    dev = write_parquet(
        pool.iloc[args.unlabeled : args.unlabeled + args.dev].reset_index(drop=True), out / "data", "dev"
    )
    return gold_labels(unlabeled, out / "data"), make_partition(unlabeled, 2, args.seed, out / "data"), dev, unlabeled


def stage_seconds(mode: str, rep: int, args, out: Path, inputs) -> dict:
    """One stage in a fresh run dir; its wall time and each student's own interval."""
    from flows.mckd import stage_flow

    labels, assignment, dev, unlabeled = inputs
    cfg = parse_config(
        {
            "run_name": f"{mode}-{rep}",
            "runs_root": str(out / "runs"),
            "seed": args.seed,
            "data": {"task": "slots", "labeled": unlabeled.path, "unlabeled": unlabeled.path},
            "student": {
                "epochs": args.epochs,
                "batch_size": 4,
                "max_dev": args.dev,
                "max_target_tokens": 64,
                "learning_rate": 1e-4,
                "train_on_labeled": False,
            },
            "stages": {"num_stages": 2, "partitions": 2, "cpu_students": MODES[mode]},
        }
    )
    started = time.perf_counter()
    data = Inputs(
        labeled=unlabeled, unlabeled=unlabeled, dev=dev, labeled_train=unlabeled, dev_source="dev rows of the pool"
    )
    _, stage = stage_flow(cfg, 1, labels, assignment, data, None)
    wall = time.perf_counter() - started
    metrics = [json.loads((cfg.run_dir / "stage-1" / f"student-{k}" / "metrics.json").read_text()) for k in (0, 1)]
    return {
        "mode": mode,
        "rep": rep,
        "wall_s": round(wall, 1),
        "students": [
            {
                "rows": m["train_rows"],
                "seconds": round(m["seconds"], 1),
                "threads": m["threads"],
                "started_at": m["started_at"],
                "dev_f1": m["dev_f1"],
            }
            for m in metrics
        ],
    }


def warm_up() -> None:
    """Read the student's weights once, so the first measured stage does not also pay for a cold disk cache."""
    from transformers import AutoModelForCausalLM

    from mckd_core.models import resolve_model

    AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m-instruct"))


def summary(runs: list[dict]) -> dict:
    med = {mode: statistics.median(r["wall_s"] for r in runs if r["mode"] == mode) for mode in MODES}
    return {
        "median_wall_s": med,
        "ratio_parallel_over_one_at_a_time": round(med["parallel"] / med["one-at-a-time"], 3),
        "target": "<= 0.6",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unlabeled", type=int, default=80)
    parser.add_argument("--dev", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / f"parallel-students-{datetime.date.today()}.json")
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mckd-parallel-"))
    inputs = stage_inputs(args, work)
    warm_up()
    runs = []
    for rep in range(args.reps):
        for mode in list(MODES) if rep % 2 == 0 else list(reversed(MODES)):
            runs.append(stage_seconds(mode, rep, args, work, inputs))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    result = {
        "command": "benchmarks/parallel_students.py " + " ".join(sys.argv[1:]),
        "date": str(datetime.date.today()),
        "machine": {"cores": len(available_cores()), "platform": platform.platform(), "load_after": os.getloadavg()},
        "sizes": {
            "unlabeled": args.unlabeled,
            "rows_per_student": args.unlabeled // 2,
            "dev": args.dev,
            "epochs": args.epochs,
        },
        "runs": runs,
        **summary(runs),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
