"""DAG node: teacher annotation (few-shot pseudolabels, per-row cached)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.blocks.system import Secret
from prefect.runtime import task_run

from mckd_core.errors import MckdInputError
from mckd_core.faults import maybe_inject
from mckd_core.jobs import AnnotateJob, TeacherLabels
from mckd_core.steps import annotate_rows

from .common import ANNOTATE, retry_transient
from .progress import progress_reporter


@task(
    name="annotate",
    cache_policy=ANNOTATE,
    retries=3,
    retry_delay_seconds=[5, 30, 120],
    retry_condition_fn=retry_transient,
)
def annotate_task(job: AnnotateJob) -> TeacherLabels:
    logger = get_run_logger()
    maybe_inject("annotate", task_run.run_count or 1)
    what = job.what
    with progress_reporter(f"Teacher annotation ({what})") as progress:
        ref, stats = annotate_rows(job, progress, api_key=api_key_from_secret(job.teacher.api_key_secret))
    logger.info(
        "teacher on %s: %d rows (%d sent, %d from cache), %d valid, %d invalid, %d repaired, %.1fs",
        what,
        ref.rows,
        stats["requested"],
        stats["cached"],
        stats["valid"],
        stats["invalid"],
        stats["repaired"],
        stats["seconds"],
    )
    if stats.get("metered"):
        logger.info(
            "teacher on %s: %d prompt + %d completion tokens for the %d rows sent (as the backend counted them)",
            what,
            stats["prompt_tokens"],
            stats["completion_tokens"],
            stats["metered"],
        )
    return TeacherLabels(labels=ref, tokens=stats["tokens"])


def api_key_from_secret(block_name: str | None) -> str | None:
    """The teacher endpoint's key from a Prefect Secret block, read here, inside the task.

    Only the block's name is a task parameter: parameters, cache keys and the run's config are stored in the
    Prefect API and in report.json, the key itself must never be.
    """
    if block_name is None:
        return None
    try:
        return Secret.load(block_name).get()
    except ValueError as exc:  # what Prefect raises for an unknown block name
        raise MckdInputError(
            f"teacher.api_key_secret: no Prefect Secret block named {block_name!r} "
            f"(create it in the UI or with Secret(value=...).save({block_name!r})): {exc}"
        ) from None
