"""DAG node: train one student (in a child process on a GPU or a share of the CPU cores), retried on GPU failures with OOM back-off."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.runtime import task_run

from mckd_core.config import StudentConfig
from mckd_core.faults import maybe_inject
from mckd_core.data import ParquetRef
from mckd_core.gpus import SlotPlan, device_slot
from mckd_core.steps import StudentRef, train_student_on

from .common import StudentOnDisk, retry_transient
from .progress import progress_reporter


@task(name="train-student", cache_policy=StudentOnDisk(), retries=3, retry_delay_seconds=5, retry_condition_fn=retry_transient)
def train_student_task(labels: ParquetRef, assignment: ParquetRef | None, parts: list[int] | None, dev: ParquetRef,
                       student: StudentConfig, task_name: str, seed: int, out_dir: str, what: str,
                       slots: SlotPlan | None = None, gold: ParquetRef | None = None, init: StudentRef | None = None) -> StudentRef:
    """`gold`: gold rows it trains on besides the pseudolabels (student.train_on_labeled); `init`: the student it starts
    from (student.init: sft). Both are part of the cache key (`init` with its weights' hash)."""
    logger = get_run_logger()
    attempt = task_run.run_count or 1
    # Every retry halves the micro-batch and doubles accumulation: the same effective batch in less memory.
    micro, accum = student.batch_size // 2 ** (attempt - 1), student.grad_accum * 2 ** (attempt - 1)
    with device_slot(slots) as slot:
        logger.info("%s: attempt %d on %s, micro-batch %d x grad-accum %d", what, attempt, slot, micro, accum)
        maybe_inject("train-student", attempt)
        with progress_reporter(f"Training {what}"):
            ref = train_student_on(labels, assignment, parts, dev, student, task_name, seed, out_dir,
                                   attempt=attempt, slot=slot, what=what, gold=gold, init=init)
    m = ref.metrics
    logger.info("%s: %d rows (%d gold), best epoch %s, dev F1 %s, %.1fs", what, m["train_rows"], m["gold_rows"], m["epochs"],
                m["dev_f1"], m["seconds"])
    return ref
