"""DAG node: write report.json / report.md / f1_by_stage.png (+ test-rows.json) and publish them as Prefect
artifacts."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mckd_core.report import render_markdown, write_report
from mckd_core.scoring import write_test_rows


@task(name="report")
def report_task(report: dict, run_dir: str, tests: dict[str, dict | None] | None = None) -> dict:
    """`tests`: the systems' full test results; their per-row statistics go to test-rows.json, not report.json. The
    report's warnings go to the run's log too."""
    logger = get_run_logger()
    for warning in report["warnings"]:
        logger.warning(warning)
    paths = write_report(report, run_dir)
    if tests:
        paths["test-rows.json"] = str(write_test_rows(tests, report["config"]["data"]["task"], run_dir))
    create_markdown_artifact(
        key="mckd-report",
        markdown=render_markdown(report) + f"\n\nRun dir: `{run_dir}`\n",
        description="MCKD teacher / stage / final F1",
    )
    logger.info("run dir: %s", run_dir)
    return paths


def publish_stage_table(stage: int, students: list[dict]) -> None:
    """A table artifact per stage (students, rows, dev F1, seconds)."""
    create_table_artifact(
        key=f"mckd-stage-{stage}",
        table=[
            {k: v for k, v in s.items() if k != "test"} | {"test_f1": (s.get("test") or {}).get("f1")} for s in students
        ],
        description=f"Stage {stage} students",
    )
