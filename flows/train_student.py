"""One student as its own deployment run: scale a stage's students out over GPUs or nodes.

`train_student_flow` wraps the `train-student` task for one partition (same parameters). Deployed as
`mckd-train-student/mckd-train-student` (prefect.yaml) on a GPU work pool, a stage can hand each of its
students to a worker with `dispatch_student(...)`, which pins the run to one GPU through the job
variable `env.CUDA_VISIBLE_DEVICES` and returns the trained `StudentRef`.

Requirement: the student's `out_dir` (and the labels it reads) must be on a filesystem that the worker and
the dispatching flow both see (the same box, or NFS / a shared volume), exactly as for in-process runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, task

from mckd_core.config import StudentConfig
from mckd_core.data import ParquetRef
from mckd_core.steps import StudentRef
from tasks.common import with_storage
from tasks.train_student import train_student_task

DEPLOYMENT = "mckd-train-student/mckd-train-student"


class StudentDispatchError(RuntimeError):
    """A dispatched student run did not complete (its state and message are in the text)."""


@flow(name="mckd-train-student", flow_run_name="{what}", persist_result=True, log_prints=True)
def train_student_flow(labels: ParquetRef, assignment: ParquetRef | None, parts: list[int] | None, dev: ParquetRef,
                       student: StudentConfig, task_name: str, seed: int, out_dir: str, what: str,
                       runs_root: str | None = None) -> StudentRef:
    """Train one student (the `train-student` task: cached, GPU-failure retries with OOM back-off).

    `runs_root`: when given, the task's cached result lives under `<runs_root>/.prefect-results`, the same
    place the in-process MCKD flow uses, so a dispatched student and an in-process one share the cache.
    """
    train = with_storage(train_student_task, runs_root) if runs_root else train_student_task
    ref = train(labels, assignment, parts, dev, student, task_name, seed, out_dir, what)
    get_run_logger().info("%s: student saved in %s", what, ref.dir)
    return ref


def student_parameters(labels: ParquetRef, assignment: ParquetRef | None, parts: list[int] | None, dev: ParquetRef,
                       student: StudentConfig, task_name: str, seed: int, out_dir: str, what: str,
                       runs_root: str | None = None) -> dict:
    """The deployment parameters (JSON) of one student run."""
    return {
        "labels": labels.model_dump(mode="json"),
        "assignment": assignment.model_dump(mode="json") if assignment is not None else None,
        "parts": list(parts) if parts is not None else None,
        "dev": dev.model_dump(mode="json"),
        "student": student.model_dump(mode="json"),
        "task_name": task_name,
        "seed": seed,
        "out_dir": str(out_dir),
        "what": what,
        "runs_root": runs_root,
    }


def dispatch_student(labels: ParquetRef, assignment: ParquetRef | None, parts: list[int] | None, dev: ParquetRef,
                     student: StudentConfig, task_name: str, seed: int, out_dir: str, what: str, *,
                     gpu: str | None = None, runs_root: str | None = None, deployment: str = DEPLOYMENT,
                     work_queue_name: str | None = None, timeout: float | None = None,
                     poll_interval: float = 5) -> StudentRef:
    """Run one student as a `mckd-train-student` deployment run, wait for it, and return its StudentRef.

    `gpu`: the device id(s) the worker's flow-run process may see (`CUDA_VISIBLE_DEVICES`); None leaves
    the work pool's default. Called inside a flow or task, the run is linked to it in the UI. A run that
    does not end Completed raises StudentDispatchError naming the run and its state message.
    """
    from prefect.deployments import run_deployment

    params = student_parameters(labels, assignment, parts, dev, student, task_name, seed, out_dir, what, runs_root)
    job_variables = {"env": {"CUDA_VISIBLE_DEVICES": str(gpu)}} if gpu is not None else None
    flow_run = run_deployment(name=deployment, parameters=params, job_variables=job_variables, timeout=timeout,
                              poll_interval=poll_interval, work_queue_name=work_queue_name)
    state = flow_run.state
    if state is None or not state.is_completed():
        kind = state.type.value if state is not None else "UNKNOWN"
        message = state.message if state is not None else "no state"
        raise StudentDispatchError(f"{what}: deployment run {flow_run.name!r} ({flow_run.id}) of {deployment} ended "
                                   f"{kind}: {message}" + (" (timed out waiting)" if not state or not state.is_final() else ""))
    return _student_ref(state, out_dir, what)


def _student_ref(state, out_dir: str, what: str) -> StudentRef:
    """The flow run's persisted result; the student's own metrics.json when that result is out of reach
    (e.g. the worker's result storage is local to another node)."""
    try:
        result = state.result()
        if isinstance(result, StudentRef):
            return result
        if isinstance(result, dict):
            return StudentRef.model_validate(result)
    except Exception as exc:  # MissingResult, storage not reachable from here, ...
        try:
            get_run_logger().info("%s: run result not readable here (%s); using %s/metrics.json", what, type(exc).__name__, out_dir)
        except Exception:
            pass
    metrics_path = Path(out_dir) / "metrics.json"
    if not metrics_path.is_file():
        raise StudentDispatchError(f"{what}: the run completed but {metrics_path} is missing; "
                                   "out_dir must be on a filesystem shared by the worker and this process")
    return StudentRef(dir=str(out_dir), metrics=json.loads(metrics_path.read_text()))


# The stage flow submits this when `stages.dispatch` is "deployment": each student is its own deployment run.
dispatch_student_task = task(dispatch_student, name="dispatch-student")
