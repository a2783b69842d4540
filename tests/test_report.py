"""report.py on hand-built reports: the degradation warning and where it shows."""

from __future__ import annotations

from mckd_core.report import degradation_warnings, render_markdown, write_report


def report(stage_dev: list[list[float | None]], final_dev: float | None) -> dict:
    return {
        "config": {"run_name": "r", "data": {"task": "slots"}, "stages": {"num_stages": len(stage_dev) + 1}},
        "counts": {"labeled": 50, "unlabeled": 40, "test": 20, "teacher_valid": 36, "teacher_invalid": 4},
        "teacher": {"test": None},
        "stages": [{"stage": i + 1, "students": [{"partition": k, "train_rows": 20, "dev_f1": d, "epochs": 2, "seconds": 1.0}
                                                 for k, d in enumerate(devs)]} for i, devs in enumerate(stage_dev)],
        "final_student": {"dir": "/x", "dev_f1": final_dev, "test": None},
    }


def test_collapsing_stages_are_flagged_in_order():
    # The measured ATIS seed-0 run: stage 1 students 37.5 / 14.0, stage 2 0.0 / 3.8, final 0.0.
    warnings = degradation_warnings(report([[37.5, 14.0], [0.0, 3.8]], 0.0))
    assert len(warnings) == 2
    assert warnings[0].startswith("stage 2 students: dev F1 1.9 is less than 50% of the stage 1 students' 25.8")
    assert warnings[1].startswith("final student: dev F1 0.0 is less than 50% of the stage 2 students' 1.9")


def test_steady_or_unscored_stages_are_not_flagged():
    assert degradation_warnings(report([[40.0, 30.0], [30.0, 25.0]], 30.0)) == []
    assert degradation_warnings(report([[None, None]], 10.0)) == []  # no dev selection: nothing to compare
    assert degradation_warnings(report([[0.0, 0.0]], 0.0)) == []  # nothing to lose


def test_warnings_are_in_report_md():
    r = report([[40.0, 40.0]], 5.0)
    r["warnings"] = degradation_warnings(r)
    assert "## Warnings" in render_markdown(r) and "final student: dev F1 5.0" in render_markdown(r)
    assert "## Warnings" not in render_markdown(report([[40.0, 40.0]], 40.0))


def test_figure_is_redrawn_only_when_its_scores_change(tmp_path):
    r = report([[40.0, 40.0]], 40.0)
    r["final_student"]["test"] = {"f1": 40.0, "exact_match": 10.0}
    figure = tmp_path / "f1_by_stage.png"
    write_report(r, tmp_path)
    drawn = figure.stat().st_mtime_ns
    write_report({**r, "timings": {"total": 1.0}}, tmp_path)  # a cached re-run: new timings, same scores
    assert figure.stat().st_mtime_ns == drawn
    write_report({**r, "final_student": {**r["final_student"], "test": {"f1": 41.0, "exact_match": 10.0}}}, tmp_path)
    assert figure.stat().st_mtime_ns != drawn
    figure.unlink()
    write_report(r, tmp_path)
    assert figure.is_file()
