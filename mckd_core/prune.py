"""Disk for finished runs: the weights of the students a run trained but does not ship.

A run keeps every student it trains (K per stage, the final student, each baseline) so that a re-run reuses them;
each is a full model (~0.5 GB for SmolLM2-135M, gigabytes for larger students). `prune` deletes the weight files of
all but the kept ones. What it keeps: the run's deliverable, every student a `deliverable` link beside it points
to (another run whose cache answered with this run's student ships it), and the kept names. Everything else a run
wrote stays (labels, Parquet, report, metrics.json, configs, tokenizers): `mckd suggest` and the reports work as
before, and a re-run of the config trains the pruned students again (the cache checks weights on disk), the
teacher's rows coming from its cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import MckdInputError
from .report import DELIVERABLE

#: The files of a saved model that hold its weights (sharded saves add an index).
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")


@dataclass
class Pruned:
    """What `prune` deleted (or, dry, would delete) and kept."""

    students: list[Path]
    files: list[Path]
    bytes: int
    kept: list[Path]


def student_dirs(run_dir: Path) -> list[Path]:
    """Every saved model in the run dir: a folder with a config.json beside weight files."""
    found = {path.parent for pattern in WEIGHT_PATTERNS for path in run_dir.rglob(pattern) if path.is_file()}
    return sorted(d for d in found if (d / "config.json").is_file())


def kept_dirs(run_dir: Path, keep: list[str]) -> list[Path]:
    """The run's deliverable, what any run's `deliverable` link in the same runs root points to, and `keep`'s names:
    `final` (the final student) or a baseline (`sft`, `vanilla-kd`, `mckd-2`, …)."""
    report_path = run_dir / "report.json"
    if not report_path.is_file():
        raise MckdInputError(
            f"{run_dir}: no report.json; prune a finished run dir (`mckd run` writes report.json at its end)"
        )
    report = json.loads(report_path.read_text())
    shipped = (report.get("deliverable") or {}).get("dir")
    kept = {Path(shipped).resolve()} if shipped else set()
    for link in run_dir.parent.glob(f"*/{DELIVERABLE}"):
        if link.exists():
            kept.add(link.resolve())
    for name in keep:
        entry = report["final_student"] if name == "final" else (report.get("baselines") or {}).get(name)
        if not entry or not entry.get("dir"):
            names = ", ".join(["final", *sorted(report.get("baselines") or {})])
            raise MckdInputError(f"--keep {name}: {report_path} has no such student; use one of: {names}")
        kept.add(Path(entry["dir"]).resolve())
    return sorted(kept)


def prune(run_dir: str | Path, keep: list[str] | None = None, dry_run: bool = False) -> Pruned:
    """Delete the weight files of every student in `run_dir` but the kept ones (`kept_dirs`)."""
    run_dir = Path(run_dir)
    kept = kept_dirs(run_dir, keep or [])
    students = [d for d in student_dirs(run_dir) if d.resolve() not in kept]
    files = [p for d in students for pattern in WEIGHT_PATTERNS for p in sorted(d.glob(pattern)) if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    if not dry_run:
        for path in files:
            path.unlink()
    return Pruned(students=students, files=files, bytes=size, kept=kept)
