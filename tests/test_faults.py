"""Fault injection through the real flow (tiny models): GPU failures retried, data errors fail fast."""

from __future__ import annotations

import asyncio

import pytest
from prefect.client.orchestration import get_client

from flows import mckd_flow
from mckd_core.config import parse_config
from toy_data import toy_config

pytestmark = pytest.mark.faults


@pytest.fixture
def fault(monkeypatch):
    return lambda spec: monkeypatch.setenv("MCKD_FAULT", spec)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    from tasks.annotate import annotate_task
    from tasks.train_student import train_student_task

    for task in (annotate_task, train_student_task):
        monkeypatch.setattr(task, "retry_delay_seconds", 0)


def run(tmp_path, tiny_models, name):
    cfg = parse_config(toy_config(tmp_path, tiny_models, run_name=name, stages={"num_stages": 1, "partitions": 2},
                                  student={"epochs": 2}))
    return mckd_flow(cfg, return_state=True)


async def _history(flow_run_id, prefix):
    async with get_client() as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        run = next(r for r in runs if r.name.startswith(prefix))
        return [s.name for s in await client.read_task_run_states(run.id)]


async def _logs(flow_run_id) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    async with get_client() as client:
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs)


def test_cuda_oom_is_retried_with_half_the_micro_batch(tmp_path, tiny_models, fault):
    fault("train-student:cuda-oom:1")
    state = run(tmp_path, tiny_models, "oom")
    assert state.is_completed()
    history = asyncio.run(_history(state.state_details.flow_run_id, "train-student"))
    assert "Retrying" in history and history[-1] == "Completed"
    logs = asyncio.run(_logs(state.state_details.flow_run_id))
    assert "attempt 1 on cpu, micro-batch 4 x grad-accum 1" in logs
    assert "attempt 2 on cpu, micro-batch 2 x grad-accum 2" in logs


def test_cuda_error_is_retried(tmp_path, tiny_models, fault):
    fault("train-student:cuda-error:1")
    state = run(tmp_path, tiny_models, "cuda")
    assert state.is_completed()
    assert "Retrying" in asyncio.run(_history(state.state_details.flow_run_id, "train-student"))


def test_value_error_fails_fast_without_retry(tmp_path, tiny_models, fault):
    fault("train-student:value-error:*")
    state = run(tmp_path, tiny_models, "value")
    assert state.is_failed()
    history = asyncio.run(_history(state.state_details.flow_run_id, "train-student"))
    assert "Retrying" not in history and history[-1] == "Failed"


def test_teacher_503_then_success(tmp_path, tiny_models, fault):
    fault("annotate:teacher-503:1")
    state = run(tmp_path, tiny_models, "t503")
    assert state.is_completed()
    assert "Retrying" in asyncio.run(_history(state.state_details.flow_run_id, "annotate"))
