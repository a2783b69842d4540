"""DAG node: train one student (in a child process on a GPU or a share of the CPU cores), retried on GPU failures with
OOM back-off."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.runtime import task_run

from mckd_core.faults import maybe_inject
from mckd_core.gpus import SlotPlan, child_for, device_slot, run_in_slot
from mckd_core.jobs import StudentJob, StudentRef
from mckd_core.report import trained_line
from mckd_core.steps import train_student
from mckd_core.student import micro_batch

from .common import TRAIN, retry_transient
from .progress import progress_reporter


@task(
    name="train-student",
    cache_policy=TRAIN,
    retries=3,
    retry_delay_seconds=5,
    retry_condition_fn=retry_transient,
)
def train_student_task(job: StudentJob, slots: SlotPlan | None = None) -> StudentRef:
    """The job's fields are the cache key (`init` with its weights' hash); `slots` only says where it runs."""
    logger = get_run_logger()
    attempt = task_run.run_count or 1
    micro, accum = micro_batch(job.student, attempt)
    with device_slot(slots) as slot:
        logger.info("%s: attempt %d on %s, micro-batch %d x grad-accum %d", job.name, attempt, slot, micro, accum)
        maybe_inject("train-student", attempt)
        with progress_reporter(f"Training {job.name}") as progress:
            child = child_for(job.student.isolate)
            ref = run_in_slot(slot, train_student, job, attempt, child=child, progress=progress)
    logger.info(trained_line(job.name, ref.metrics))
    return ref
