"""What every mckd task shares: the cache policy, result storage under the runs root, the retry rule."""

from __future__ import annotations

from pathlib import Path

from prefect.cache_policies import INPUTS, TASK_SOURCE

from mckd_core.failures import is_transient

# The default policy also keys on RUN_ID, which would stop a second run from reusing anything.
CACHE = INPUTS + TASK_SOURCE


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
