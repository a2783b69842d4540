"""How much does choosing a student's epoch on 20 dev rows cost? (issue #27 item 7: "better labels count")

Retrains one distilled student of a finished quality run (the same job: labels, gold rows, config and seed, so the
same weights epoch by epoch: tests/test_reproducible_students.py) but scores every epoch on N further dev rows no
model of the run saw (ATIS: training-pool rows outside L / U / T / dev / SFT-N; CRAFT: its dev split outside the run's
dev rows). Beside each epoch's F1 on those rows (with its 95% CI) it sets the F1 the run's 20 dev rows gave that epoch
(the run's metrics.json), so one sees which epoch the run kept, what that epoch scores on many rows, and what the last
epoch or the best one would have scored. Never the test set.

  .venv/bin/python benchmarks/epoch_selection.py runs/quality/atis-U200-e4-72fd36-seed1 --student final --rows 200
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import label_quality  # noqa: E402
import quality  # noqa: E402  (puts the repo root on sys.path)

from mckd_core.config import RunConfig, baseline_stages  # noqa: E402
from mckd_core.craft import load_craft  # noqa: E402
from mckd_core.data import ParquetRef, normalized_input, within_words, write_parquet  # noqa: E402
from mckd_core.jobs import StudentJob  # noqa: E402
from mckd_core.steps import train_student  # noqa: E402


def one(run_dir: Path, pattern: str) -> ParquetRef:
    """The one Parquet file of the finished run matching `pattern` (label_quality.one says which when not one)."""
    return ParquetRef.of(label_quality.one(pattern, run_dir))


def unseen_dev_rows(task: str, cfg: RunConfig, run_dir: Path, n: int):
    """`n` gold rows (seeded) that no set of the run holds, by normalised input."""
    used = set()
    for pattern in ("data/labeled-*", "data/unlabeled-*", "data/test-*", "data/dev-*", "data/sft_n-*"):
        used |= set(one(run_dir, pattern).read()["input"].map(normalized_input))
    if task == "craft":
        pool = load_craft(quality.CRAFT_DIR, "dev", max_words=12)
    else:
        pool = quality.atis_json_pool()[0] if task == "atis-json" else quality.load_atis("train")
        pool = within_words(pool, 12)
    pool = pool.drop_duplicates("input")
    pool = pool[~pool["input"].map(normalized_input).isin(used)]
    return pool.sample(n=min(n, len(pool)), random_state=cfg.seed).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--student", default="final", help="final, mckd-K or vanilla-kd")
    parser.add_argument("--rows", type=int, default=200, help="further dev rows to score every epoch on")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "epoch-selection")
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    report = json.loads((run_dir / "report.json").read_text())
    cfg = RunConfig.model_validate(report["config"])
    task = run_dir.name.split("-U")[0]
    stages = cfg.stages.num_stages if args.student == "final" else baseline_stages(args.student)
    # The labels it learned from: Y_{stages-1} (Y_0 the first labels; vanilla KD always the teacher's).
    chosen = (report.get("first_labels") or {}).get("chosen") or "teacher"
    y0 = (
        "teacher/labels-*.parquet"
        if chosen == "teacher" or args.student == "vanilla-kd"
        else "sft-labels/labels-*.parquet"
    )
    labels = one(run_dir, y0 if stages == 1 else f"stage-{stages - 1}/labels-*.parquet")
    kept = run_dir / ("final/student" if args.student == "final" else f"baselines/{args.student}")
    run_metrics = json.loads((kept / "metrics.json").read_text())
    dev = unseen_dev_rows(task, cfg, run_dir, args.rows)
    out = args.out_dir / f"{run_dir.name}-{args.student}"
    job = StudentJob(
        name=f"epoch-selection/{args.student}",
        task=cfg.data.format_ref,
        student=cfg.student.model_copy(update={"max_dev": len(dev)}),
        seed=cfg.seed + 100 * stages,
        labels=labels,
        dev=write_parquet(dev[["id", "input", "target"]], out / "data", "dev"),
        out_dir=str(out / "student"),
        gold=one(run_dir, "data/labeled-*.parquet") if cfg.student.train_on_labeled else None,
    )
    started = time.time()
    metrics = train_student(job).metrics
    by_20 = [h["dev_f1"] for h in run_metrics["history"]]
    by_n = [h["dev_f1"] for h in metrics["history"]]
    print(
        json.dumps(
            {
                "run": str(run_dir),
                "student": args.student,
                "train_rows": metrics["train_rows"],
                "run_train_rows": run_metrics["train_rows"],
                "dev_rows": len(dev),
                "epochs": [
                    {"epoch": i + 1, "dev20_f1": round(a, 1), f"dev{len(dev)}_f1": round(b, 1)}
                    for i, (a, b) in enumerate(zip(by_20, by_n))
                ],
                "kept_by_dev20": run_metrics["epochs"],
                "its_devN_f1": round(by_n[run_metrics["epochs"] - 1], 1),
                "last_devN_f1": round(by_n[-1], 1),
                "best_devN": [by_n.index(max(by_n)) + 1, round(max(by_n), 1)],
                "seconds": round(time.time() - started),
            }
        )
    )


if __name__ == "__main__":
    main()
