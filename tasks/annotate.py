"""DAG node: teacher annotation (few-shot pseudolabels, per-row cached)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.runtime import task_run

from mckd_core.config import TeacherConfig
from mckd_core.data import ParquetRef
from mckd_core.faults import maybe_inject
from mckd_core.steps import annotate_rows

from .common import CACHE, retry_transient
from .progress import progress_reporter


@task(name="annotate", cache_policy=CACHE, retries=3, retry_delay_seconds=[5, 30, 120], retry_condition_fn=retry_transient)
def annotate_task(examples: ParquetRef, demos: ParquetRef, teacher: TeacherConfig, task_name: str, seed: int,
                  out_dir: str, cache_path: str, what: str = "unlabeled") -> ParquetRef:
    logger = get_run_logger()
    maybe_inject("annotate", task_run.run_count or 1)
    with progress_reporter(f"Teacher annotation ({what})") as progress:
        ref, stats = annotate_rows(examples, demos, teacher, task_name, seed, out_dir, cache_path, progress)
    logger.info("teacher on %s: %d rows (%d sent, %d from cache), %d valid, %d invalid, %d repaired, %.1fs",
                what, ref.rows, stats["requested"], stats["cached"], stats["valid"], stats["invalid"], stats["repaired"], stats["seconds"])
    return ref
