"""What every mckd task shares: the cache policy, result storage under the runs root, the retry rule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from prefect.cache_policies import TASK_SOURCE, CachePolicy
from prefect.utilities.hashing import hash_objects

from mckd_core.data import ParquetRef
from mckd_core.failures import is_transient
from mckd_core.formats import format_source_hash as format_source
from mckd_core.identity import key_view, package_versions, source_hash
from mckd_core.jobs import StudentRef, TeacherLabels
from mckd_core.student import holds_student

#: The packages whose versions change a model's numerics (and so a node's labels, weights or scores).
NUMERICS = ("torch", "transformers", "tokenizers")


@dataclass
class NodeCache(CachePolicy):
    """The cache key of an mckd node (the rule in mckd_core/identity.py): its inputs as content (`key_view`), the
    source of the task wrapper and of the mckd_core `modules` it runs, the `packages` versions, and what `depends`
    adds from the inputs (the task format's code, the weights it loads). The default policy's RUN_ID is left out:
    it would stop a second run from reusing anything.

    A cached result is only reused while what it points to is still on disk (a Parquet file with its sha256, a
    student dir with its weights); one found moved with its run dir (a renamed run, a moved runs root) is reused
    from the new place. A record whose files are gone is passed over for a successor key derived from it, so the
    task runs again and stores its result there; later runs walk the same chain to that fresh record (Prefect offers
    no way to drop a record from a cache policy, and the key cannot hold the files' state: before the first run
    they do not exist either).
    """

    modules: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    depends: Callable[[dict], Any] | None = None

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs) -> str | None:
        code = TASK_SOURCE.compute_key(task_ctx, inputs, flow_parameters, **kwargs)
        extra = self.depends(inputs) if self.depends else None
        key = hash_objects(
            code,
            source_hash(self.modules),
            package_versions(*self.packages),
            key_view(inputs),
            extra,
            raise_on_failure=True,
        )
        return _on_disk(task_ctx.result_store, key, inputs)


def _on_disk(store, key: str, inputs: dict) -> str:
    """The first key of `key`'s chain whose record's files are in place (or where the task will store a new one)."""
    while store.exists(key):
        try:
            result = store.read(key).result
        except Exception:  # written by another mckd version whose classes no longer load: compute it again
            key = hash_objects(key, "unreadable", raise_on_failure=True)
            continue
        if _in_place(result):
            return key
        moved = _relocated(result, _out_dir(inputs))
        if moved is not None:
            successor = hash_objects(key, "moved to", _where(moved), raise_on_failure=True)
            if not store.exists(successor):
                store.write(moved, key=successor)
            key = successor
        else:
            key = hash_objects(key, "gone", key_view(result), raise_on_failure=True)
    return key


def _in_place(result) -> bool:
    if isinstance(result, TeacherLabels):
        return result.labels.exists()
    if isinstance(result, ParquetRef):
        return result.exists()
    if isinstance(result, StudentRef):
        return holds_student(result.dir, result.metrics)
    return True  # scores and other plain values point to no file


def _relocated(result, out_dir: str | None):
    """The same result at the task's current out_dir (the run dir moved or renamed), or None."""
    if out_dir is None:
        return None
    if isinstance(result, TeacherLabels):
        labels = _relocated(result.labels, out_dir)
        return result.model_copy(update={"labels": labels}) if labels is not None else None
    if isinstance(result, ParquetRef):  # files are named by their content: the same name in the new place
        moved = result.model_copy(update={"path": str(Path(out_dir) / Path(result.path).name)})
        return moved if moved.exists() else None
    if isinstance(result, StudentRef) and holds_student(out_dir, result.metrics):
        return result.model_copy(update={"dir": str(out_dir)})
    return None


def _where(result) -> str:
    if isinstance(result, TeacherLabels):
        return result.labels.path
    return result.path if isinstance(result, ParquetRef) else result.dir


def _out_dir(inputs: dict) -> str | None:
    job = inputs.get("job")
    return inputs.get("out_dir") or getattr(job, "out_dir", None)


def _train_depends(inputs: dict):
    job = inputs["job"]
    # The format's metric picks the epoch where the student selects on dev. (The weights it starts from are in the
    # job's key view: `init` by its weights' hash, student.model by weights_identity.)
    return format_source(job.task) if job.student.select_on_dev else None


def _format_of(parameter: str):
    def depends(inputs: dict):
        value = inputs[parameter]
        return format_source(value if isinstance(value, str) else value.task)

    return depends


ANNOTATE = NodeCache(
    modules=("steps", "jobs", "data", "prompting", "teacher", "models"), packages=NUMERICS, depends=_format_of("job")
)
PARTITION = NodeCache(modules=("steps", "partition", "data"))
TRAIN = NodeCache(modules=("steps", "jobs", "data", "student", "models"), packages=NUMERICS, depends=_train_depends)
RELABEL = NodeCache(modules=("steps", "jobs", "data", "student"), packages=NUMERICS, depends=_format_of("job"))
MERGE = NodeCache(modules=("steps", "data"))
EVALUATE = NodeCache(
    modules=("steps", "student", "scoring", "stats"), packages=NUMERICS, depends=_format_of("task_name")
)
SCORE = NodeCache(modules=("steps", "scoring", "stats"), depends=_format_of("task_name"))


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
