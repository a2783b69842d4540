"""DAG nodes: a student relabels its held-out part; the stage's relabels merge into Y_s."""

from __future__ import annotations

from prefect import task

from mckd_core.data import ParquetRef
from mckd_core.faults import maybe_inject
from mckd_core.gpus import SlotPlan, child_for, device_slot, run_in_slot
from mckd_core.jobs import RelabelJob, StudentRef
from mckd_core.steps import merge_labels, relabel

from .common import MERGE, RELABEL, retry_transient
from .progress import progress_reporter


@task(name="relabel", cache_policy=RELABEL, retries=2, retry_delay_seconds=5, retry_condition_fn=retry_transient)
def relabel_task(student: StudentRef, job: RelabelJob, slots: SlotPlan | None = None) -> ParquetRef:
    with device_slot(slots) as slot, progress_reporter(f"Relabeling by {job.source}") as progress:
        return run_in_slot(slot, relabel, student, job, child=child_for(job.settings.isolate), progress=progress)


@task(name="merge-labels", cache_policy=MERGE)
def merge_labels_task(
    previous: ParquetRef, relabels: list[ParquetRef], out_dir: str, keep_previous_on_invalid: bool
) -> ParquetRef:
    maybe_inject("merge-labels", 1)
    return merge_labels(previous, relabels, out_dir, keep_previous_on_invalid)
