"""DAG node: split U into K disjoint, balanced, seeded parts."""

from __future__ import annotations

from prefect import task

from mckd_core.data import ParquetRef
from mckd_core.steps import make_partition

from .common import PARTITION


@task(name="partition", cache_policy=PARTITION)
def partition_task(unlabeled: ParquetRef, k: int, seed: int, out_dir: str) -> ParquetRef:
    return make_partition(unlabeled, k, seed, out_dir)
