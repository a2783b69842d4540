"""Helpers shared by integration tests."""

from __future__ import annotations

import asyncio
import time

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

from mckd_core.teacher.vllm_server import metrics

REQUESTS = "vllm:request_success_total"


def served_requests(server, at_least: float = 0.0, timeout_s: float = 5.0) -> float:
    """The server's finished-request counter (waits briefly for it to reach `at_least`: it is updated after responses
    go out)."""
    deadline = time.monotonic() + timeout_s
    while (count := metrics(server.base_url).get(REQUESTS, 0.0)) < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


async def final_task_runs(flow_run_id, timeout_s: float = 30.0):
    """Task runs of a flow run and of its subflow runs (the stages), once the API has recorded their final states.

    States arrive as events a moment after the flow returns, so read until every run is final and two reads agree.
    """
    deadline, seen = time.monotonic() + timeout_s, None
    async with get_client() as client:
        subflows = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
        ids = [flow_run_id] + [f.id for f in subflows]
        while True:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            now = sorted((r.name, r.state.name if r.state else None) for r in runs)
            if (now == seen and all(r.state and r.state.is_final() for r in runs)) or time.monotonic() > deadline:
                return runs
            seen = now
            await asyncio.sleep(0.5)


def final_states(flow_state) -> dict[str, list[str]]:
    """The final state names of a finished flow run's task runs (its subflows' too), by node (`annotate-6c6` →
    `annotate`), each list sorted."""
    runs = asyncio.run(final_task_runs(flow_state.state_details.flow_run_id))
    states: dict[str, list[str]] = {}
    for name, state in sorted((r.name, r.state.name if r.state else None) for r in runs):
        states.setdefault(name.rsplit("-", 1)[0], []).append(state)
    return states
