"""`mckd prune`: a finished run's students give their disk back, all but the ones a run ships."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from mckd_core.errors import MckdInputError
from mckd_core.prune import prune
from mckd_core.report import point_to_deliverable

runner = CliRunner()


def _student(folder: Path, size: int = 1000) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "metrics.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w" * size)
    return folder


def _run(root: Path, name: str, shipped: str = "baselines/sft") -> Path:
    """A finished run dir: two stage students, the final student, an sft and a vanilla-kd baseline; `shipped` is
    the deliverable."""
    run = root / name
    for part in ("stage-1/student-0", "stage-1/student-1", "final/student", "baselines/sft", "baselines/vanilla-kd"):
        _student(run / part)
    (run / "stage-1" / "labels-a.parquet").write_bytes(b"labels")
    report = {
        "final_student": {"dir": str(run / "final" / "student")},
        "baselines": {name: {"dir": str(run / "baselines" / name)} for name in ("sft", "vanilla-kd")},
        "deliverable": {"name": shipped.rsplit("/", 1)[-1], "dir": str(run / shipped)},
    }
    (run / "report.json").write_text(json.dumps(report))
    point_to_deliverable(run, run / shipped)
    return run


def test_prune_deletes_the_weights_of_every_student_but_the_deliverable_and_keeps_everything_else(tmp_path):
    run = _run(tmp_path, "a")
    dry = prune(run, dry_run=True)
    assert [d.relative_to(run).as_posix() for d in dry.students] == [
        "baselines/vanilla-kd",
        "final/student",
        "stage-1/student-0",
        "stage-1/student-1",
    ]
    assert dry.bytes == 4000 and all(f.is_file() for f in dry.files)  # a dry run deletes nothing

    pruned = prune(run)
    assert pruned.bytes == 4000 and not any(f.exists() for f in pruned.files)
    assert (run / "deliverable" / "model.safetensors").is_file()  # the deliverable still loads
    assert (run / "stage-1" / "student-0" / "metrics.json").is_file()
    assert (run / "stage-1" / "labels-a.parquet").is_file()
    assert prune(run).students == []  # nothing left to prune


def test_a_student_another_run_ships_is_kept_and_keep_names_more(tmp_path):
    run = _run(tmp_path, "a")
    # Run b's cache answered with run a's final student, and b's guard shipped it.
    other = tmp_path / "b"
    other.mkdir()
    (other / "report.json").write_text("{}")
    point_to_deliverable(other, run / "final" / "student")

    pruned = prune(run, keep=["vanilla-kd"])
    assert [d.relative_to(run).as_posix() for d in pruned.students] == ["stage-1/student-0", "stage-1/student-1"]
    assert (other / "deliverable" / "model.safetensors").is_file()
    assert {k.relative_to(run.resolve()).as_posix() for k in pruned.kept} == {
        "baselines/sft",
        "baselines/vanilla-kd",
        "final/student",
    }


def test_a_moved_run_pruned_from_inside_keeps_what_its_report_names_in_the_new_place(tmp_path, monkeypatch):
    _run(tmp_path / "old", "a")
    shutil.move(tmp_path / "old", tmp_path / "new")  # report.json's absolute dirs now point nowhere
    run = tmp_path / "new" / "a"
    other = tmp_path / "new" / "b"
    other.mkdir()
    point_to_deliverable(other, run / "stage-1" / "student-1")
    monkeypatch.chdir(run)
    pruned = prune(".", keep=["final"])  # the runs root is the parent of the real dir, not of "."
    assert [d.relative_to(run).as_posix() for d in pruned.students] == ["baselines/vanilla-kd", "stage-1/student-0"]


def test_a_run_from_before_the_deliverable_guard_keeps_its_final_student(tmp_path):
    run = _run(tmp_path, "a")
    report = json.loads((run / "report.json").read_text())
    del report["deliverable"]
    (run / "report.json").write_text(json.dumps(report))
    (run / "deliverable").unlink()
    assert "final/student" not in [d.relative_to(run).as_posix() for d in prune(run).students]
    assert (run / "final" / "student" / "model.safetensors").is_file()


def test_prune_refuses_a_run_that_has_not_finished_and_a_keep_name_it_does_not_have(tmp_path):
    run = _run(tmp_path, "a")
    with pytest.raises(MckdInputError, match=r"--keep mckd-9: .* use one of: final, sft, vanilla-kd"):
        prune(run, keep=["mckd-9"])
    # A re-run writing into the dir: files newer than the report's.
    past = (run / "report.json").stat().st_mtime - 1000
    os.utime(run / "report.json", (past, past))
    with pytest.raises(MckdInputError, match=r"files are newer than report.json .*: a run is writing here"):
        prune(run)
    (run / "report.json").unlink()
    with pytest.raises(MckdInputError, match="no report.json; prune a finished run dir"):
        prune(run)
    assert (run / "stage-1" / "student-0" / "model.safetensors").is_file()  # refused: nothing deleted


def test_a_deliverable_without_weights_prunes_nothing(tmp_path):
    run = _run(tmp_path, "a")
    (run / "baselines" / "sft" / "model.safetensors").unlink()
    with pytest.raises(MckdInputError, match=r"its deliverable .*sft holds no weights; nothing pruned"):
        prune(run)
    assert (run / "final" / "student" / "model.safetensors").is_file()


def test_the_prune_command_says_what_it_freed_and_fails_in_one_line(tmp_path):
    run = _run(tmp_path, "a")
    result = runner.invoke(app, ["prune", str(run), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would delete 4 files of 4 students" in " ".join(result.output.split())
    assert (run / "final" / "student" / "model.safetensors").is_file()
    result = runner.invoke(app, ["prune", str(run), "--keep", "final"])
    assert result.exit_code == 0 and "deleted 3 files of 3 students" in " ".join(result.output.split())
    # a pruned student says so where a model is asked for
    result = runner.invoke(app, ["predict", str(run / "stage-1" / "student-0"), "--input", str(run / "x.jsonl")])
    assert result.exit_code == 2 and "holds no weights (`mckd prune`" in " ".join(result.output.split())
    result = runner.invoke(app, ["prune", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no report.json; prune a finished run dir" in " ".join(result.output.split())
