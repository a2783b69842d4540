"""Precision / recall / F1 of the labels of U, stage by stage, from finished quality runs' files.

report.json keeps only the F1 of each stage's labels; whether the teacher and the cross-relabels under- or
over-tag needs precision and recall (BENCHMARKS.md: "why distilled students under-tag"). Reads a run dir's
teacher/labels-*.parquet and stage-N/labels-*.parquet (U's rows with their gold `target`); invalid labels
count as empty predictions, as in every score of the report.

Usage:
  .venv/bin/python benchmarks/label_quality.py runs/quality-bm25-s1/atis-U40-e6-74f312-seed1 [RUN_DIR ...]
Prints one JSON object per run dir: {"run", "labels": {"teacher": {...}, "stage-1": {...}, ...}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mckd_core.data import ParquetRef  # noqa: E402
from mckd_core.steps import score_labels  # noqa: E402

KEYS = ("f1", "precision", "recall", "invalid")


def one(pattern: str, run_dir: Path) -> Path:
    """The one file of a finished run matching `pattern` (a re-run with other inputs would leave a second)."""
    found = sorted(run_dir.glob(pattern))
    if len(found) != 1:
        where = run_dir / Path(pattern).parent
        raise SystemExit(f"{where}: expected one {Path(pattern).name}, found {len(found)}; pass the dir of one finished run")
    return found[0]


def label_files(run_dir: Path) -> dict[str, Path]:
    """The U label file of the teacher and of each intermediate stage, in stage order."""
    stages = sorted(run_dir.glob("stage-*"), key=lambda d: int(d.name.split("-")[1]))
    return {"teacher": one("teacher/labels-*.parquet", run_dir), **{d.name: one(f"{d.name}/labels-*.parquet", run_dir) for d in stages}}


def label_quality(run_dir: Path) -> dict:
    task = json.loads((run_dir / "report.json").read_text())["config"]["data"]["task"]
    scores = {name: score_labels(ParquetRef.of(path), task) for name, path in label_files(run_dir).items()}
    if any(score is None for score in scores.values()):
        raise SystemExit(f"{run_dir}: the rows of U have no gold `target`; label quality needs a run on gold-labeled U (e.g. quality.py's)")
    return {"run": str(run_dir), "labels": {name: {k: round(s[k], 1) for k in KEYS if k in s} for name, s in scores.items()}}


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["--help"]:
        if arg.startswith("-"):
            raise SystemExit(__doc__)
        print(json.dumps(label_quality(Path(arg))))
