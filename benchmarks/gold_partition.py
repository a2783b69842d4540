"""Is it the labels or the size? Retrain one stage student of a finished run on GOLD labels of its own rows.

A stage student that selects near-zero dev F1 (CRAFT: 2–13) could fail because its ~20 training rows are too few
for the student model, or because the labels it was given (teacher's or the previous stage's) are poor. This
trains the same student (the run's student config, seed, dev set and the very rows it trained on: the valid
labeled rows of its training parts) on those rows' gold targets instead, and prints both dev F1s.
No test row is read.

Usage:
  .venv/bin/python benchmarks/gold_partition.py RUN_DIR [--stage 1] [--student 0]
The student is written under RUN_DIR/gold-partition/ (delete its weights afterwards: ~0.5 GiB).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import pandas as pd  # noqa: E402
from label_quality import one  # noqa: E402

from mckd_core.config import RunConfig  # noqa: E402
from mckd_core.data import ParquetRef, write_parquet  # noqa: E402
from mckd_core.jobs import StudentJob  # noqa: E402
from mckd_core.partition import cross_assignment  # noqa: E402
from mckd_core.steps import train_student, training_rows  # noqa: E402


def gold_rows(run_dir: Path, stage: int, student: int, partitions: int) -> pd.DataFrame:
    """The rows the stage student trained on (valid labels of its training parts), with label := gold target."""
    labels = one("teacher/labels-*.parquet" if stage == 1 else f"stage-{stage - 1}/labels-*.parquet", run_dir)
    train_parts, _ = cross_assignment(partitions)[student]
    rows = training_rows(
        ParquetRef.of(labels), ParquetRef.of(one("data/partition-*.parquet", run_dir)), train_parts, 1, "gold partition"
    )
    if rows["target"].isna().any():
        raise SystemExit(
            f"{run_dir}: the rows of U have no gold `target`; this check needs a run on gold-labeled U (e.g. "
            "quality.py's)"
        )
    return rows.assign(label=rows["target"], raw=rows["target"], source="gold")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--stage", type=int, default=1)
    parser.add_argument("--student", type=int, default=0)
    args = parser.parse_args()
    report = json.loads((args.run_dir / "report.json").read_text())
    cfg = RunConfig.model_validate(report["config"])
    if cfg.stages.redraw_partitions:
        raise SystemExit("runs with stages.redraw_partitions have one partition file per stage; not supported here")
    out = args.run_dir / "gold-partition" / f"stage-{args.stage}-student-{args.student}"
    rows = gold_rows(args.run_dir, args.stage, args.student, cfg.stages.partitions)
    dev = next(iter(sorted((args.run_dir / "data").glob("dev-*.parquet"))), None) or one(
        "data/labeled-*.parquet", args.run_dir
    )
    student = train_student(
        StudentJob(
            name="gold partition",
            task=cfg.data.task,
            student=cfg.student,
            seed=cfg.seed + 100 * args.stage + args.student,
            labels=write_parquet(rows, out, "gold-labels"),
            dev=ParquetRef.of(dev),
            out_dir=str(out / "student"),
        )
    )
    trained = report["stages"][args.stage - 1]["students"][args.student]
    print(
        json.dumps(
            {
                "run": str(args.run_dir),
                "stage": args.stage,
                "student": args.student,
                "rows": len(rows),
                "dev_f1_on_gold_labels": student.metrics.get("dev_f1"),
                "epochs": student.metrics.get("epochs"),
                "dev_f1_on_run_labels": trained["dev_f1"],
                "run_train_rows": trained["train_rows"],
            }
        )
    )


if __name__ == "__main__":
    main()
