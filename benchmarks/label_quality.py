"""Precision / recall / F1 of the labels of U, stage by stage, from finished quality runs' files.

report.json keeps only the F1 of each stage's labels; whether the teacher and the cross-relabels under- or
over-tag needs precision and recall (BENCHMARKS.md: "why distilled students under-tag"), and whether a stage's
labels beat the teacher's (the paper's premise) needs a CI: each stage's F1 has its bootstrap 95% CI over U's rows,
and `gain` holds each stage minus the teacher and minus the stage before, paired on the same rows of U. Reads a run
dir's teacher/labels-*.parquet, sft-labels/labels-*.parquet (stages.first_labels: sft) and stage-N/labels-*.parquet
(U's rows with their gold `target`); invalid labels
count as empty predictions, as in every score of the report.

`students` sets each trained model's test score beside the labels of U it trained on (issue #27's "better labels
count"): vanilla KD on the teacher's, MCKD-k (k < S, a baseline) on Y_{k-1}, the final student (MCKD-S) on
Y_{S-1}; Y_0 is the source report.json's `first_labels.chosen` names (the teacher's when absent); with the epoch dev
selection chose and its dev F1.

Usage:
  .venv/bin/python benchmarks/label_quality.py runs/quality-bm25-s1/atis-U40-e6-74f312-seed1 [RUN_DIR ...]
Prints one JSON object per run dir: {"run", "labels": {"teacher": {...}, "stage-1": {...}, ...},
"gain": {"stage-1": {"vs teacher": {"diff", "ci95"}}, "stage-2": {"vs teacher": ..., "vs previous": ...}, ...},
"students": [{"model", "trained_on", "labels": {...}, "test": {...}, "epoch", "epochs", "dev_f1"}, ...]}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mckd_core.data import ParquetRef  # noqa: E402
from mckd_core.formats import get_format  # noqa: E402
from mckd_core.scoring import aligned  # noqa: E402
from mckd_core.stats import paired_bootstrap  # noqa: E402
from mckd_core.steps import score_labels  # noqa: E402

KEYS = ("f1", "precision", "recall", "invalid", "ci95")


def one(pattern: str, run_dir: Path) -> Path:
    """The one file of a finished run matching `pattern` (a re-run with other inputs would leave a second)."""
    found = sorted(run_dir.glob(pattern))
    if len(found) != 1:
        where = run_dir / Path(pattern).parent
        raise SystemExit(
            f"{where}: expected one {Path(pattern).name}, found {len(found)}; pass the dir of one finished run"
        )
    return found[0]


def label_files(run_dir: Path, report: dict) -> dict[str, Path]:
    """The U label file of the teacher, of the SFT student where it made Y_0 (stages.first_labels: sft), and of each
    intermediate stage, in stage order: those report.json names (a node the cache answered names its file where it
    was first written, maybe another run's dir), else the run dir's own."""
    named = report.get("files", {}).get("labels_of_unlabeled")
    if named:
        return {name: run_dir / path for name, path in named.items() if name != "final"}
    stages = sorted(run_dir.glob("stage-*"), key=lambda d: int(d.name.split("-")[1]))
    first = {"sft": one("sft-labels/labels-*.parquet", run_dir)} if (run_dir / "sft-labels").is_dir() else {}
    return {
        "teacher": one("teacher/labels-*.parquet", run_dir),
        **first,
        **{d.name: one(f"{d.name}/labels-*.parquet", run_dir) for d in stages},
    }


def label_quality(run_dir: Path, with_gains: bool = True) -> dict:
    """Label F1/P/R of every Y_k of U, each distilled model beside the labels it trained on, and (`with_gains`) the
    paired bootstrap of each stage's gain, the slow part."""
    report = json.loads((run_dir / "report.json").read_text())
    task = report["config"]["data"]["task"]
    scores = {name: score_labels(ParquetRef.of(path), task) for name, path in label_files(run_dir, report).items()}
    if any(score is None for score in scores.values()):
        raise SystemExit(
            f"{run_dir}: the rows of U have no gold `target`; label quality needs a run on gold-labeled U (e.g. "
            "quality.py's)"
        )
    labels = {name: {k: rounded(s[k]) for k in KEYS if k in s} for name, s in scores.items()}
    return {
        "run": str(run_dir),
        "labels": labels,
        **({"gain": gains(scores, get_format(task).aggregate)} if with_gains else {}),
        **({"students": students(report, labels)} if "final_student" in report else {}),
    }


def students(report: dict, labels: dict[str, dict]) -> list[dict]:
    """Each distilled model's test score beside the score of the labels of U it trained on."""
    y0 = (report.get("first_labels") or {}).get("chosen") or "teacher"
    y = lambda k: y0 if k == 0 else f"stage-{k}"  # noqa: E731  (the name of Y_k in `labels`)
    last = len(report["stages"]) + 1  # S: the final student trains on Y_{S-1}
    models = [("vanilla-kd", "teacher", report["baselines"].get("vanilla-kd"))]
    models += [
        (name, y(int(name.split("-")[1]) - 1), entry)
        for name, entry in sorted(report["baselines"].items())
        if name.startswith("mckd-")
    ]
    models.append((f"mckd-{last} (final)", y(last - 1), report["final_student"]))
    return [
        {
            "model": name,
            "trained_on": source,
            "labels": {k: labels[source][k] for k in ("f1", "precision", "recall")},
            "test": {k: rounded(entry["test"][k]) for k in ("f1", "precision", "recall")},
            "train_rows": entry.get("train_rows"),  # gold copies included (student.gold_share)
            "gold_rows": entry.get("gold_rows"),
            "gold_repeats": entry.get("gold_repeats"),
            "epoch": entry.get("epochs"),
            "epochs": report["config"]["student"]["epochs"],
            "dev_f1": rounded(entry["dev_f1"]) if entry.get("dev_f1") is not None else None,
        }
        for name, source, entry in models
        if entry and entry.get("test")
    ]


def gains(scores: dict[str, dict], aggregate) -> dict[str, dict]:
    """Each stage's label F1 minus the teacher's and (from stage 2 on) minus the previous stage's, paired on U's
    rows."""
    names = list(scores)
    paired = lambda a, b: {
        k: rounded(v) for k, v in paired_bootstrap(*aligned(scores[a]["rows"], scores[b]["rows"]), aggregate).items()
    }  # noqa: E731
    return {
        name: {"vs teacher": paired(name, "teacher"), **({"vs previous": paired(name, names[i - 1])} if i > 1 else {})}
        for i, name in enumerate(names)
        if i > 0
    }


def rounded(value):
    return [round(v, 1) for v in value] if isinstance(value, list) else round(value, 1)


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["--help"]:
        if arg.startswith("-"):
            raise SystemExit(__doc__)
        print(json.dumps(label_quality(Path(arg))))
