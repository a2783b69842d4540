"""DAG nodes: score a student on the test set; score label rows against their gold targets."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from mckd_core.config import StudentConfig
from mckd_core.data import ParquetRef
from mckd_core.gpus import SlotPlan, child_for, device_slot, run_in_slot
from mckd_core.jobs import StudentRef
from mckd_core.steps import evaluate_student, score_labels

from .common import EVALUATE, SCORE, retry_transient
from .progress import progress_reporter


@task(
    name="evaluate-student", cache_policy=EVALUATE, retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient
)
def evaluate_student_task(
    student: StudentRef, test: ParquetRef, cfg: StudentConfig, task_name: str, slots: SlotPlan | None = None
) -> dict:
    who = "/".join(Path(student.dir).parts[-2:])  # stage-1/student-0, final/student, baseline/sft
    with device_slot(slots) as slot, progress_reporter(f"Scoring {who} on {test.rows} rows") as progress:
        return run_in_slot(
            slot, evaluate_student, student, test, cfg, task_name, child=child_for(cfg.isolate), progress=progress
        )


@task(name="score-labels", cache_policy=SCORE)
def score_labels_task(labels: ParquetRef, task_name: str) -> dict | None:
    return score_labels(labels, task_name)
