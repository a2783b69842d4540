"""What every mckd task shares: the cache policy, result storage under the runs root, the retry rule."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.utilities.hashing import hash_objects

from mckd_core import student
from mckd_core.failures import is_transient
from mckd_core.student import holds_student

# The default policy also keys on RUN_ID, which would stop a second run from reusing anything. `slots` (how the
# CPU is shared) says where a node runs; a new thread count changes float rounding, not what the node is.
CACHE = (INPUTS - "slots") + TASK_SOURCE

#: How students train and generate: TASK_SOURCE sees only a task's thin wrapper, so without this a new trainer
#: (another precision, loss or optimizer) would hand back students trained the old way.
TRAINER_SOURCE = hashlib.sha256(Path(student.__file__).read_bytes()).hexdigest()


@dataclass
class StudentOnDisk(CachePolicy):
    """CACHE plus the trainer's source, for tasks returning a StudentRef: a cached ref only counts while its dir
    still holds its weights.

    A record whose student dir was deleted or altered is passed over for a successor key derived from it, so
    the task trains again and stores its ref there; later runs walk the same chain to that fresh record. The key
    cannot simply include the dir's state (before the first run the dir does not exist either), and Prefect
    offers no way to drop a record from a cache policy.
    """

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs) -> str | None:
        key = CACHE.compute_key(task_ctx, inputs, flow_parameters, **kwargs)
        key = key and hash_objects(key, TRAINER_SOURCE, raise_on_failure=True)
        store = task_ctx.result_store
        while key is not None and store.exists(key):
            ref = store.read(key).result
            if holds_student(ref.dir, ref.metrics):
                return key
            key = hash_objects(key, ref.metrics.get("weights_sha256"), raise_on_failure=True)
        return key


def retry_transient(task, task_run, state) -> bool:
    """retry_condition_fn: retry GPU / teacher-transport failures only; data errors fail fast."""
    try:
        state.result()
    except Exception as exc:  # the task's exception, re-raised by result()
        return is_transient(exc)
    return False


def with_storage(task, runs_root: str | Path):
    """The task with its results persisted under `<runs_root>/.prefect-results` (cache survives restarts)."""
    basepath = Path(runs_root).resolve() / ".prefect-results"
    basepath.mkdir(parents=True, exist_ok=True)
    return task.with_options(result_storage=basepath, persist_result=True)
