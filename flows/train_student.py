"""One student as its own deployment run: scale a stage's students out over GPUs or nodes.

`train_student_flow` wraps the `train-student` task for one student job (its one parameter, the StudentJob). Deployed as
`mckd-train-student/mckd-train-student` (prefect.yaml) on a GPU work pool, a stage can hand each of its
students to a worker with `dispatch_student(...)`, which pins the run to one GPU through the job
variable `env.CUDA_VISIBLE_DEVICES` and returns the trained `StudentRef`.

Requirement: the student's `out_dir` (and the labels it reads) must be on a filesystem that the worker and
the dispatching flow both see (the same box, or NFS / a shared volume), exactly as for in-process runs.

A student whose worker or node dies mid-run is found by its missing heartbeats (`wait_for_student_run`), marked
Crashed and submitted again; another worker of the pool picks it up.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from pathlib import Path

from prefect import flow, get_run_logger, task

from mckd_core.jobs import StudentJob, StudentRef
from tasks.common import with_storage
from tasks.train_student import train_student_task

DEPLOYMENT = "mckd-train-student/mckd-train-student"


class StudentDispatchError(RuntimeError):
    """A dispatched student run did not complete (its state and message are in the text)."""


@flow(name="mckd-train-student", flow_run_name="{job.name}", persist_result=True, log_prints=True)
def train_student_flow(job: StudentJob, runs_root: str | None = None) -> StudentRef:
    """Train one student (the `train-student` task: cached, GPU-failure retries with OOM back-off).

    `runs_root`: when given, the task's cached result lives under `<runs_root>/.prefect-results`, the same
    place the in-process MCKD flow uses, so a dispatched student and an in-process one share the cache.
    """
    from prefect.settings import get_current_settings

    # Where it runs, in the UI: the worker (node), the devices it may see, how often it reports it is alive.
    get_run_logger().info(
        "%s: worker %s, CUDA_VISIBLE_DEVICES=%s, heartbeat every %ss",
        job.name,
        os.environ.get("PREFECT__WORKER_NAME", "-"),
        os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        get_current_settings().flows.heartbeat_frequency,
    )
    train = with_storage(train_student_task, runs_root) if runs_root else train_student_task
    ref = train(job)
    get_run_logger().info("%s: student saved in %s", job.name, ref.dir)
    return ref


def student_parameters(job: StudentJob, runs_root: str | None = None) -> dict:
    """The deployment parameters (JSON) of one student run."""
    return {"job": job.model_dump(mode="json"), "runs_root": runs_root}


def dispatch_student(
    job: StudentJob,
    *,
    gpu: str | None = None,
    runs_root: str | None = None,
    deployment: str = DEPLOYMENT,
    work_queue_name: str | None = None,
    timeout: float | None = None,
    poll_interval: float = 5,
    crash_retries: int = 2,
) -> StudentRef:
    """Run one student as a `mckd-train-student` deployment run, wait for it, and return its StudentRef.

    `gpu`: the device id(s) the worker's flow-run process may see (`CUDA_VISIBLE_DEVICES`); None leaves
    the work pool's default. Called inside a flow or task, the run is linked to it in the UI. A run that
    crashes (its worker or node died: see `wait_for_student_run`) is submitted again, up to `crash_retries`
    times; the train task's cache makes the retry cheap where the student had finished. A run that does not
    end Completed otherwise raises StudentDispatchError naming the run and its state message.
    """
    from prefect.deployments import run_deployment

    params = student_parameters(job, runs_root)
    beat = heartbeat_seconds()
    # The run beats at the period this process's watchdog expects, whatever the worker's own setting.
    env = {
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(beat),
        **({"CUDA_VISIBLE_DEVICES": str(gpu)} if gpu is not None else {}),
    }
    deadline = None if timeout is None else time.monotonic() + timeout
    for attempt in range(1, crash_retries + 2):
        flow_run = run_deployment(
            name=deployment, parameters=params, job_variables={"env": env}, timeout=0, work_queue_name=work_queue_name
        )
        flow_run = wait_for_student_run(
            flow_run.id, silence=HEARTBEAT_MISSES * beat, poll_interval=poll_interval, deadline=deadline
        )
        if not (flow_run.state and flow_run.state.is_crashed()) or attempt > crash_retries:
            break
        _log(
            "warning",
            "%s: run %r (%s) crashed: %s; submitting it again (retry %d of %d)",
            job.name,
            flow_run.name,
            flow_run.id,
            flow_run.state.message,
            attempt,
            crash_retries,
        )
    state = flow_run.state
    if state is None or not state.is_completed():
        kind = state.type.value if state is not None else "UNKNOWN"
        message = state.message if state is not None else "no state"
        raise StudentDispatchError(
            f"{job.name}: deployment run {flow_run.name!r} ({flow_run.id}) of {deployment} ended "
            f"{kind}: {message}" + (" (timed out waiting)" if not state or not state.is_final() else "")
        )
    return _student_ref(state, job.out_dir, job.name)


# Liveness of a dispatched student. A Prefect 3.9 OSS server marks nothing Crashed when a flow-run process dies
# without reporting (worker and run SIGKILLed, node lost): the run stays RUNNING. But its engine emits a
# `prefect.flow-run.heartbeat` event every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (default 180, at least 30),
# from a thread of its own, so a RUNNING run silent for HEARTBEAT_MISSES periods is taken for dead.
HEARTBEAT_MISSES = 3


def heartbeat_seconds() -> int:
    """The heartbeat period of dispatched runs: this process's PREFECT_FLOWS_HEARTBEAT_FREQUENCY (180 when unset;
    Prefect refuses less than 30)."""
    from prefect.settings import get_current_settings

    return get_current_settings().flows.heartbeat_frequency or 180


def wait_for_student_run(flow_run_id, *, silence: float, poll_interval: float = 5, deadline: float | None = None):
    """Poll a flow run until it is final (or `deadline`, a time.monotonic() value, passes) and return it.

    A RUNNING run that sent a heartbeat event and then no sign of life (its Running state or a heartbeat) for more
    than `silence` seconds is set Crashed (forced: nothing else will end it) and returned: detection comes at most
    `silence + poll_interval`
    after its last heartbeat. Times are compared with this machine's clock (keep the nodes' clocks synchronised).
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            state = run.state
            if state is not None and state.is_final():
                return run
            if state is not None and state.is_running():
                beat = last_heartbeat(client, run.id, state.timestamp)
                quiet = (_utcnow() - max(state.timestamp, beat or state.timestamp)).total_seconds()
                # Silence means death only for a run heard from once: its engine beats as it starts, so a run never
                # heard from is one whose events do not reach this server (event persister off), not a dead one.
                # Re-read first: a run that ended meanwhile must not be forced back to Crashed.
                if beat is not None and quiet > silence and client.read_flow_run(run.id).state.is_running():
                    client.set_flow_run_state(
                        run.id,
                        Crashed(
                            message=(
                                f"no heartbeat for {quiet:.1f}s (limit {silence:.0f}s): its worker or node is "
                                "presumed dead; "
                                "marked Crashed by mckd's dispatch_student"
                            )
                        ),
                        force=True,
                    )
                    return client.read_flow_run(run.id)
            if deadline is not None and time.monotonic() >= deadline:
                return run
            time.sleep(poll_interval)


def last_heartbeat(client, flow_run_id, since: datetime.datetime) -> datetime.datetime | None:
    """When the run's latest `prefect.flow-run.heartbeat` event since `since` occurred (None: none yet); `client`
    is a sync Prefect client."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    page = client.read_events(
        filter=EventFilter(
            occurred=EventOccurredFilter(since=since, until=_utcnow() + datetime.timedelta(days=1)),
            event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
        ),
        limit=1,
    )  # newest first
    return page.events[0].occurred if page.events else None


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _log(level: str, message: str, *args) -> None:
    """To the run's log when inside a flow or task, else to this module's logger."""
    try:
        logger = get_run_logger()
    except Exception:  # MissingContextError: called outside any run
        logger = logging.getLogger(__name__)
    getattr(logger, level)(message, *args)


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
            get_run_logger().info(
                "%s: run result not readable here (%s); using %s/metrics.json", what, type(exc).__name__, out_dir
            )
        except Exception:
            pass
    metrics_path = Path(out_dir) / "metrics.json"
    if not metrics_path.is_file():
        raise StudentDispatchError(
            f"{what}: the run completed but {metrics_path} is missing; "
            "out_dir must be on a filesystem shared by the worker and this process"
        )
    return StudentRef(dir=str(out_dir), metrics=json.loads(metrics_path.read_text()))


# The stage flow submits this when `stages.dispatch` is "deployment": each student is its own deployment run.
dispatch_student_task = task(dispatch_student, name="dispatch-student")
