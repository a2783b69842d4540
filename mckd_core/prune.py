"""Disk for finished runs: the weights of the students a run trained but does not ship.

A run keeps every student it trains (K per stage, the final student, each baseline) so that a re-run reuses them;
each is a full model (~0.5 GB for SmolLM2-135M, gigabytes for larger students). `prune` deletes the weight files of
all but the kept ones. What it keeps: the run's deliverable (its final student for a run from before the deliverable
guard), every student a `deliverable` link of a run in the same runs root points to (another run whose cache
answered with this run's student ships it), and the kept names. Everything else a run wrote stays (labels, Parquet,
report, metrics.json, configs, tokenizers): `mckd suggest` and the reports work as before, and a re-run of the config
trains the pruned students again (the cache checks weights on disk), the teacher's rows coming from its cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import MckdInputError
from .report import DELIVERABLE

#: The files of a saved model that hold its weights (sharded saves add an index).
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")


#: Files written this long after report.json belong to a later run in the same dir.
REPORT_WRITING_S = 120


@dataclass
class Pruned:
    """What `prune` deleted (or, dry, would delete) and kept."""

    students: list[Path]
    files: list[Path]
    bytes: int
    kept: list[Path]


def weight_files(folder: Path) -> list[Path]:
    return [p for pattern in WEIGHT_PATTERNS for p in sorted(folder.glob(pattern)) if p.is_file()]


def student_dirs(run_dir: Path) -> list[Path]:
    """Every saved model in the run dir: a folder with a config.json beside weight files."""
    found = {path.parent for pattern in WEIGHT_PATTERNS for path in run_dir.rglob(pattern) if path.is_file()}
    return sorted(d for d in found if (d / "config.json").is_file())


def _here(run_dir: Path, recorded: str | None, default: Path) -> Path:
    """A student dir report.json recorded, where it is now: the recorded path while it exists (the cache may have
    answered from another run's dir), else the same place under this run dir (a run moved or renamed since)."""
    if recorded and Path(recorded).is_dir():
        return Path(recorded).resolve()
    return default.resolve()


def _report(run_dir: Path) -> dict:
    path = run_dir / "report.json"
    if not path.is_file():
        raise MckdInputError(
            f"{run_dir}: no report.json; prune a finished run dir (`mckd run` writes report.json at its end)"
        )
    try:
        report = json.loads(path.read_text())
    except ValueError as exc:
        raise MckdInputError(f"{path}: not JSON ({exc}); prune only a run dir whose run finished") from None
    # The report step itself writes report.md, the figure and the model cards just after report.json.
    since = path.stat().st_mtime + REPORT_WRITING_S
    newer = [p for p in run_dir.rglob("*") if p.is_file() and p.stat().st_mtime > since]
    if newer:
        raise MckdInputError(
            f"{run_dir}: {len(newer)} files are newer than report.json (e.g. {newer[0]}): a run is writing here or "
            "ended without its report; prune once it has finished"
        )
    return report


def kept_dirs(run_dir: Path, keep: list[str]) -> list[Path]:
    """The run's deliverable, what any run's `deliverable` link in the same runs root points to, and `keep`'s names:
    `final` (the final student) or a baseline (`sft`, `vanilla-kd`, `mckd-2`, …)."""
    report = _report(run_dir)
    final = _here(run_dir, (report.get("final_student") or {}).get("dir"), run_dir / "final" / "student")
    baselines = {
        name: _here(run_dir, entry.get("dir"), run_dir / "baselines" / name)
        for name, entry in (report.get("baselines") or {}).items()
    }
    own_link = run_dir / DELIVERABLE
    if own_link.exists():
        shipped = own_link.resolve()
    elif report.get("deliverable"):
        shipped = _here(run_dir, report["deliverable"].get("dir"), run_dir / "final" / "student")
    else:  # a run from before the deliverable guard: `mckd predict RUN_DIR` uses its final student
        shipped = final
    if not weight_files(shipped):
        raise MckdInputError(
            f"{run_dir}: its deliverable {shipped} holds no weights; nothing pruned (re-run the config to train it)"
        )
    kept = {shipped}
    for link in run_dir.parent.glob(f"*/{DELIVERABLE}"):
        if link.exists():
            kept.add(link.resolve())
    names = {"final": final, **baselines} if report.get("final_student") else baselines
    for name in keep:
        if name not in names:
            raise MckdInputError(
                f"--keep {name}: {run_dir / 'report.json'} has no such student; use one of: {', '.join(names)}"
            )
        kept.add(names[name])
    return sorted(kept)


def prune(run_dir: str | Path, keep: list[str] | None = None, dry_run: bool = False) -> Pruned:
    """Delete the weight files of every student in `run_dir` but the kept ones (`kept_dirs`)."""
    run_dir = Path(run_dir).resolve()  # `.` or a link to the run: its siblings are those of the real dir
    kept = kept_dirs(run_dir, keep or [])
    students = [d for d in student_dirs(run_dir) if d.resolve() not in kept]
    files = [p for d in students for p in weight_files(d)]
    size = sum(p.stat().st_size for p in files)
    if not dry_run:
        for path in files:
            path.unlink()
    return Pruned(students=students, files=files, bytes=size, kept=kept)
