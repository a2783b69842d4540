"""A full MCKD run with `stages.dispatch: deployment` over two process workers, one of them killed mid-student.

On the session's PostgreSQL-backed `prefect server start` (tests/prefect_server.py), two `prefect worker start
--pool mckd-process --limit 1` processes play two nodes with one device each (`node-a`, `node-b`); the runs root
is shared (one filesystem). Students get `stages.gpus: ["0", "1"]` as job variables and log the worker and
CUDA_VISIBLE_DEVICES their flow-run process saw. `mckd run` (the parent MCKD flow, in its own process) runs 3
stages (2 intermediate, K=2) on tiny random-init models:

- stage 1: its two students run at once, one on each worker (their RUNNING intervals, read from the API, overlap);
- stage 2: as soon as a student is RUNNING (its log line is in the API), its worker and flow-run process are
  SIGKILLed. dispatch_student finds the run silent (no heartbeat for 3 periods), marks it Crashed and submits it
  again; the surviving worker trains it; the MCKD run completes;
- its report equals a local run's (`dispatch: local`, run meanwhile) on every metric, and a re-run of the same
  config finds every node Cached, including the students the workers trained.

Every student sleeps 10 s on its worker (MCKD_FAULT=train-student:sleep-10:*) so that overlap and kill do not
depend on luck; the cost is the heartbeat bound (90 s here), not training.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prefect_server import PREFECT, REPO, Server, stop_process_group
from tests_support import final_task_runs
from toy_data import toy_config

pytestmark = pytest.mark.integration

HEARTBEAT_S = 30  # the parent's PREFECT_FLOWS_HEARTBEAT_FREQUENCY (Prefect's minimum); workers keep the default 180
POLL_S = 5  # dispatch_student's poll interval as stage_flow calls it
STUDENT_SLEEP_S = 10
SLOT_LINE = re.compile(r"worker (\S+), CUDA_VISIBLE_DEVICES=(\S*), heartbeat every (\d+)s")


@dataclass
class StudentRun:
    name: str
    id: str
    state: str
    message: str | None
    start: datetime.datetime | None
    end: datetime.datetime | None
    requested_gpu: str | None  # job variable
    worker: str | None = None  # as the flow-run process saw it
    gpu: str | None = None
    heartbeat: int | None = None
    last_heartbeat: datetime.datetime | None = None  # as dispatch_student's watchdog reads it


@dataclass
class TwoWorkerRun:
    config: dict
    local_config: dict
    report: dict
    local_report: dict
    students: list[StudentRun]
    killed: dict  # name, id, worker, at (UTC), pids
    logs: Path
    retry_warnings: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


# ---- the run ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _api(server: Server):
    """A sync client of the session's Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server.api}), get_client(sync_client=True) as client:
        yield client


def _student_runs(client, since: datetime.datetime) -> list:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["mckd-train-student"])),
        flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
    )


def _slot_line(client, flow_run_id) -> tuple[str, str, int] | None:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    for log in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))):
        if match := SLOT_LINE.search(log.message):
            return match.group(1), match.group(2), int(match.group(3))
    return None


def _processes_of_flow_run(flow_run_id) -> list[int]:
    """PIDs whose environment names this flow run (the worker's flow-run process and its children)."""
    needle = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:  # gone, or not ours
                pass
    return pids


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode(errors="replace").split("=", 1) for p in pairs if b"=" in p)


def _start(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path} missing)"


@pytest.fixture(scope="module")
def two_worker_run(deployed, tiny_models, tmp_path_factory) -> TwoWorkerRun:
    server = deployed
    tmp = tmp_path_factory.mktemp("two-workers")
    logs = tmp_path_factory.mktemp("two-workers-logs")
    overrides = dict(student={"epochs": 4}, stages={"num_stages": 3, "partitions": 2}, run_name="two-workers")
    config = toy_config(tmp / "dispatched", tiny_models, **overrides)
    config["stages"].update({"dispatch": "deployment", "gpus": ["0", "1"]})
    local = toy_config(tmp / "local", tiny_models, **overrides)
    for cfg, name in ((config, "dispatched"), (local, "local")):
        (tmp / f"{name}.yaml").write_text(json.dumps(cfg))  # JSON is YAML
    mckd = str(Path(PREFECT).parent / "mckd")

    # Each worker is a node: its own process (group), one run at a time. A dispatched student trains in its flow-run
    # process with this env's single thread, as a local CPU slot student does (1 thread each on 2 cores), so the
    # float rounding and therefore every metric match the local run's.
    worker_env = {
        **server.env,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MCKD_FAULT": f"train-student:sleep-{STUDENT_SLEEP_S}:*",
    }
    workers = {
        name: _start(
            [PREFECT, "worker", "start", "--pool", "mckd-process", "--name", name, "--limit", "1"],
            worker_env,
            logs / f"{name}.log",
        )
        for name in ("node-a", "node-b")
    }
    parent_env = {**server.env, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}
    parent = reference = None
    killed: dict = {}
    since = datetime.datetime.now(datetime.timezone.utc)
    started = time.monotonic()
    try:
        parent = _start([mckd, "run", str(tmp / "dispatched.yaml")], parent_env, logs / "parent.log")
        with _api(server) as client:
            while parent.poll() is None and time.monotonic() - started < 600:
                if not killed:
                    for run in _student_runs(client, since):
                        if run.name.startswith("stage-2/") and run.state.is_running() and _slot_line(client, run.id):
                            pids = _processes_of_flow_run(run.id)
                            assert pids, f"no process of flow run {run.id} found"
                            worker = run.labels.get("prefect.worker.name") or _environ(pids[0]).get(
                                "PREFECT__WORKER_NAME"
                            )
                            assert worker in workers, (worker, run.labels)
                            os.killpg(workers[worker].pid, signal.SIGKILL)  # the worker and its process group
                            for pid in pids:  # the flow-run process runs in a session of its own
                                with contextlib.suppress(ProcessLookupError):
                                    os.killpg(os.getpgid(pid), signal.SIGKILL)
                                with contextlib.suppress(ProcessLookupError):
                                    os.kill(pid, signal.SIGKILL)
                            killed = {
                                "name": run.name,
                                "id": run.id,
                                "worker": worker,
                                "pids": pids,
                                "at": datetime.datetime.now(datetime.timezone.utc),
                            }
                            workers[worker].wait(timeout=30)
                            # The local reference run, meanwhile: the dispatched run now waits out the heartbeat bound.
                            reference = _start([mckd, "run", str(tmp / "local.yaml")], server.env, logs / "local.log")
                            break
                time.sleep(1)
        assert parent.poll() is not None, f"the MCKD run did not finish in 600 s:\n{_tail(logs / 'parent.log')}"
        seconds = {"dispatched_run_s": time.monotonic() - started}
        assert parent.returncode == 0, (
            f"mckd run exited {parent.returncode}:\n{_tail(logs / 'parent.log')}\n"
            + "\n".join(f"--- {w}:\n{_tail(logs / f'{w}.log', 3000)}" for w in workers)
        )
        assert killed, "no stage-2 student was seen RUNNING: nothing was killed"
        assert reference is not None
        reference.wait(timeout=600)
        seconds["until_reference_done_s"] = time.monotonic() - started
        assert reference.returncode == 0, f"local mckd run exited {reference.returncode}:\n{_tail(logs / 'local.log')}"
    finally:
        for proc in [*workers.values(), parent, reference]:
            if proc is not None:
                stop_process_group(proc, grace=20)

    from flows.train_student import last_heartbeat

    students = []
    with _api(server) as client:
        for run in _student_runs(client, since):
            env = (run.job_variables or {}).get("env", {})
            students.append(
                StudentRun(
                    run.name,
                    str(run.id),
                    run.state.type.value,
                    run.state.message,
                    run.start_time,
                    run.end_time or (run.state.timestamp if run.state.is_final() else None),
                    env.get("CUDA_VISIBLE_DEVICES"),
                )
            )
            seen = _slot_line(client, run.id)
            if seen:
                students[-1].worker, students[-1].gpu, students[-1].heartbeat = seen
            if run.start_time:
                students[-1].last_heartbeat = last_heartbeat(client, run.id, run.start_time)
            assert env.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY") == str(HEARTBEAT_S), env
        retry_warnings = [log.message for log in _logs_with(client, "submitting it again", since)]
        workers_seen = {
            w.name: w.status.value for w in client.read_workers_for_work_pool("mckd-process") if w.name in workers
        }
    crashed = [r for r in students if r.state == "CRASHED"]
    if crashed:
        seconds["kill_to_crashed_s"] = (crashed[0].end - killed["at"]).total_seconds()
    report = json.loads((Path(config["runs_root"]) / "two-workers" / "report.json").read_text())
    local_report = json.loads((Path(local["runs_root"]) / "two-workers" / "report.json").read_text())
    print(
        f"\ntwo-worker run: {seconds}; killed {killed['name']} on {killed['worker']}; workers at the end: "
        f"{workers_seen}"
    )
    return TwoWorkerRun(config, local, report, local_report, students, killed, logs, retry_warnings, seconds)


def _logs_with(client, text: str, since: datetime.datetime) -> list:
    from prefect.client.schemas.filters import LogFilter, LogFilterTextSearch, LogFilterTimestamp

    logs = client.read_logs(
        log_filter=LogFilter(text=LogFilterTextSearch(query=f'"{text}"'), timestamp=LogFilterTimestamp(after_=since))
    )
    return [log for log in logs if text in log.message]


# ---- what it shows ---------------------------------------------------------------------------------------


def _by_name(run: TwoWorkerRun, name: str) -> list[StudentRun]:
    return [s for s in run.students if s.name == name]


def test_students_of_a_stage_overlap_on_two_workers(two_worker_run):
    (a,) = _by_name(two_worker_run, "stage-1/student-0")
    (b,) = _by_name(two_worker_run, "stage-1/student-1")
    assert a.state == b.state == "COMPLETED"
    assert {a.worker, b.worker} == {"node-a", "node-b"}, (a, b)
    overlap = (min(a.end, b.end) - max(a.start, b.start)).total_seconds()
    assert overlap > 0, f"stage-1 students did not run at the same time: {a.start}..{a.end} vs {b.start}..{b.end}"


def test_no_slot_is_double_booked(two_worker_run):
    """Each flow-run process saw the device its job variables asked for (stages.gpus[k % 2]); no two runs held the
    same slot at the same time. A node here has one device (`--limit 1`), so a slot is a worker: runs on one worker
    never overlap, whatever CUDA_VISIBLE_DEVICES they got."""
    runs = two_worker_run.students
    assert len(runs) == 5  # 2 students x 2 stages + the retry of the killed one
    for run in runs:
        k = int(run.name.rsplit("-", 1)[1])
        assert run.requested_gpu == ["0", "1"][k % 2], run
        if run.worker is not None:  # the killed run may have died before its log line reached the API
            assert run.gpu == run.requested_gpu, run
            assert run.heartbeat == HEARTBEAT_S, run  # the parent's setting, through the job variables
    killed = two_worker_run.killed
    slot = {r.id: r.worker or killed["worker"] for r in runs}
    assert set(slot.values()) == {"node-a", "node-b"}
    for i, x in enumerate(runs):
        for y in runs[i + 1 :]:
            if slot[x.id] == slot[y.id]:
                assert x.end <= y.start or y.end <= x.start, f"slot {slot[x.id]} double-booked: {x} and {y}"


def test_killed_worker_student_is_detected_and_retried(two_worker_run):
    killed = two_worker_run.killed
    runs = _by_name(two_worker_run, killed["name"])
    crashed = [r for r in runs if r.state == "CRASHED"]
    retried = [r for r in runs if r.state == "COMPLETED"]
    assert len(crashed) == 1 and len(retried) == 1, runs
    assert crashed[0].id == str(killed["id"]) and "no heartbeat" in crashed[0].message
    survivor = ({"node-a", "node-b"} - {killed["worker"]}).pop()
    assert retried[0].worker == survivor and retried[0].start >= crashed[0].end
    # Detected within HEARTBEAT_MISSES x the heartbeat period + one poll of the last heartbeat, which came before the
    # kill; 30 s of slack for a loaded machine. Not before two periods: a live run is never taken for dead.
    delay = (crashed[0].end - killed["at"]).total_seconds()
    assert 2 * HEARTBEAT_S - 15 <= delay <= 3 * HEARTBEAT_S + POLL_S + 30, delay
    assert any(killed["name"] in w and "retry 1 of 2" in w for w in two_worker_run.retry_warnings), (
        two_worker_run.retry_warnings
    )
    # The watchdog's view of heartbeats is real: it finds the heartbeat events every student run sent.
    assert all(
        r.last_heartbeat is not None and r.start <= r.last_heartbeat <= r.end for r in two_worker_run.students
    ), [(r.name, r.start, r.last_heartbeat, r.end) for r in two_worker_run.students]
    # Every other student ran once, to completion.
    others = [r for r in two_worker_run.students if r.name != killed["name"]]
    assert all(r.state == "COMPLETED" for r in others) and len({r.name for r in others}) == len(others) == 3


def _metrics(report: dict) -> dict:
    """What a run learned and scored: no timings, paths or seconds."""

    def student(entry: dict) -> dict:
        return {k: entry.get(k) for k in ("partition", "train_rows", "gold_rows", "dev_f1", "epochs", "test")}

    return {
        "counts": report["counts"],
        # Of the teacher's tokens what its rows cost, not which of them this run's cache already held.
        "teacher": {
            **report["teacher"],
            "tokens": {
                name: {key: entry[key] + entry[f"cached_{key}"] for key in ("prompt_tokens", "completion_tokens")}
                for name, entry in report["teacher"].get("tokens", {}).items()
            },
        },
        "stages": [
            {
                "stage": s["stage"],
                "pseudolabel_f1": s["pseudolabel_f1"],
                "changed_fraction": s["changed_fraction"],
                "students": [student(x) for x in s["students"]],
            }
            for s in report["stages"]
        ],
        "final_student": student(report["final_student"]),
        "baselines": {name: b.get("test") for name, b in report.get("baselines", {}).items()},
        "comparisons": report.get("comparisons"),
    }


def _learned(run_dir: Path) -> dict:
    """Each student's weights hash and loss curve, and every Parquet file (named by its content hash)."""
    students = {
        str(m.parent.relative_to(run_dir)): json.loads(m.read_text()) for m in run_dir.glob("*/student*/metrics.json")
    }
    return {
        "students": {k: (m["weights_sha256"], [h["loss"] for h in m["history"]]) for k, m in sorted(students.items())},
        "parquet": sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.parquet")),
    }


def test_report_equals_the_local_run(two_worker_run):
    """Same metrics in report.json; and more than that (tiny random-init students score 0 F1): every student's weights
    are bit-identical to the local run's, and so are the teacher's, every relabel's and every stage's label files."""
    dispatched, local = _metrics(two_worker_run.report), _metrics(two_worker_run.local_report)
    assert [s["stage"] for s in dispatched["stages"]] == [1, 2]
    assert dispatched == local
    run_dir = lambda cfg: Path(cfg["runs_root"]) / "two-workers"  # noqa: E731
    learned, reference = _learned(run_dir(two_worker_run.config)), _learned(run_dir(two_worker_run.local_config))
    assert len(learned["students"]) == 5 and len(learned["parquet"]) >= 12
    assert learned == reference


def test_finished_nodes_stay_cached(two_worker_run):
    """The same config again (in this process, students local): every node comes back Cached from the runs root,
    the students the workers trained and the one retried after the kill included; the report is the same."""
    from flows import mckd_flow
    from mckd_core.config import parse_config

    config = {**two_worker_run.config, "stages": {**two_worker_run.config["stages"], "dispatch": "local"}}
    state = mckd_flow(parse_config(config), return_state=True)
    assert state.is_completed(), state.message
    assert _metrics(state.result()) == _metrics(two_worker_run.report)
    tasks = asyncio.run(final_task_runs(state.state_details.flow_run_id))
    nodes = [
        t
        for t in tasks
        if t.name.startswith(
            ("annotate", "partition", "train-student", "relabel", "merge-labels", "evaluate-student", "score-labels")
        )
    ]
    # The SFT student (first, for first_labels: auto), 2 x 2 stage students, the final student.
    assert len([t for t in nodes if t.name.startswith("train-student")]) == 6
    assert all(t.state.name == "Cached" for t in nodes), [
        (t.name, t.state.name) for t in nodes if t.state.name != "Cached"
    ]
