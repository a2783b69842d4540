"""dispatch_student's crash watchdog (flows.train_student.wait_for_student_run) on the session's ephemeral API.

The real thing, a worker SIGKILLed mid-student on a PostgreSQL-backed server, is tests/test_two_workers.py.
"""

from __future__ import annotations

import datetime
import time

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Completed, Running

import flows.train_student as ts


@flow(name="watchdog-probe")
def _probe() -> None:
    pass


def _run_in(state):
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(_probe, state=state)
    return run.id


def _beat_once_at(moment: datetime.datetime):
    """A stand-in for the event query: the run beat once, at `moment`, and never again."""
    return lambda client, flow_run_id, since: moment


def test_a_silent_running_run_is_marked_crashed(monkeypatch):
    monkeypatch.setattr(ts, "last_heartbeat", _beat_once_at(datetime.datetime.now(datetime.timezone.utc)))
    run_id = _run_in(Running())
    started = time.monotonic()
    run = ts.wait_for_student_run(run_id, silence=1.5, poll_interval=0.2, deadline=time.monotonic() + 60)
    assert run.state.is_crashed() and "no heartbeat for" in run.state.message and "limit 2s" in run.state.message
    assert 1.5 <= time.monotonic() - started < 30


def test_a_run_with_recent_heartbeats_is_left_alone(monkeypatch):
    monkeypatch.setattr(
        ts, "last_heartbeat", lambda client, flow_run_id, since: datetime.datetime.now(datetime.timezone.utc)
    )
    run_id = _run_in(Running())
    run = ts.wait_for_student_run(run_id, silence=1, poll_interval=0.2, deadline=time.monotonic() + 2.5)
    assert run.state.is_running()  # the deadline passed, the run was never taken for dead


def test_a_run_never_heard_from_is_not_taken_for_dead():
    """No heartbeat event at all (on this API the runs emit none): events that do not reach the server are no death."""
    run_id = _run_in(Running())
    run = ts.wait_for_student_run(run_id, silence=0.5, poll_interval=0.2, deadline=time.monotonic() + 2.5)
    assert run.state.is_running()


def test_a_final_run_is_returned_as_it_is():
    run_id = _run_in(Completed())
    run = ts.wait_for_student_run(run_id, silence=0, poll_interval=0.2, deadline=time.monotonic() + 10)
    assert run.state.is_completed()


def test_heartbeat_period_is_this_process_setting():
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 45}):
        assert ts.heartbeat_seconds() == 45
