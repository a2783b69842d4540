"""Faults through the real flow (tiny models): GPU failures retried, data errors fail fast, a teacher down past
its retries, a SIGKILLed CLI resumed from the cache, a deleted student retrained, the teacher key kept secret."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from test_teacher_http import FakeEndpoint, completion
from tests_support import final_states, final_task_runs
from toy_data import PAIRS, toy_config

from flows import mckd_flow
from mckd_core.config import parse_config
from mckd_core.student import holds_student

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


def run(tmp_path, tiny_models, name, **overrides):
    cfg = parse_config(
        toy_config(
            tmp_path,
            tiny_models,
            run_name=name,
            **{"stages": {"num_stages": 1, "partitions": 2}, "student": {"epochs": 2}, **overrides},
        )
    )
    return mckd_flow(cfg, return_state=True)


@pytest.fixture
def endpoint():
    """A loopback OpenAI-style teacher: `endpoint(replies)` (see FakeEndpoint), closed after the test."""
    opened = []
    yield lambda replies: opened.append(FakeEndpoint(replies)) or opened[-1]
    for fake in opened:
        fake.close()


def toy_answer(body: dict) -> dict:
    """The toy mapping of the prompt's last input (completion prompts end with `Input: <x>\nOutput:`)."""
    query = body["prompt"].rsplit("Input: ", 1)[1].split("\nOutput:")[0]
    return completion(" ".join(PAIRS.get(word, word) for word in query.split()))


def served_teacher(fake: FakeEndpoint, **extra) -> dict:
    # One request at a time: the annotate task caches every 4 * concurrency rows.
    return {
        "backend": "vllm-server",
        "base_url": fake.base_url,
        "model": "toy-teacher",
        "concurrency": 1,
        "max_retries": 0,
        "api_key_env": "MCKD_TEST_NO_SUCH_VARIABLE",
        **extra,
    }


def cached_responses(runs_root: Path) -> int:
    with sqlite3.connect(runs_root / ".teacher-cache.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


async def _history(flow_run_id, prefix):
    """The state names of the first task run named `prefix…`, once the API has its final state (`final_task_runs`)."""
    run = next(r for r in await final_task_runs(flow_run_id) if r.name.startswith(prefix))
    async with get_client() as client:
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
    # On CPU the slot is a share of the cores (cpu[0]) or the whole process (cpu).
    assert re.search(r"attempt 1 on cpu(\[[0-9,]+\])?, micro-batch 4 x grad-accum 1", logs)
    assert re.search(r"attempt 2 on cpu(\[[0-9,]+\])?, micro-batch 2 x grad-accum 2", logs)


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


def test_teacher_down_past_the_retry_budget_fails_clearly_and_keeps_answered_rows(tmp_path, tiny_models, endpoint):
    # Four answers (one cached chunk), then HTTP 503 for good: the HTTP client and the annotate task both give up.
    fake = endpoint([(200, toy_answer)] * 4 + [(503, {"error": {"message": "teacher overloaded"}})])
    state = run(tmp_path, tiny_models, "down", teacher=served_teacher(fake))
    assert state.is_failed()
    assert "failed after 1 attempt: HTTP 503: teacher overloaded" in state.message, state.message
    history = asyncio.run(_history(state.state_details.flow_run_id, "annotate"))
    assert history.count("Retrying") == 3 and history[-1] == "Failed"
    assert cached_responses(tmp_path / "runs") == 4
    answered = {r["json"]["prompt"] for r in fake.requests[:4]}
    assert not answered & {r["json"]["prompt"] for r in fake.requests[4:]}, "a retry asked again for a cached row"

    # Back up: the re-run sends only the rows that were never answered.
    fake.replies = [(200, toy_answer)]
    sent_before = len(fake.requests)
    assert run(tmp_path, tiny_models, "down", teacher=served_teacher(fake)).is_completed()
    resent = {r["json"]["prompt"] for r in fake.requests[sent_before:]}
    assert resent and not answered & resent


def test_teacher_key_from_a_secret_block_is_sent_but_never_stored(tmp_path, tiny_models, endpoint):
    key = f"sk-mckd-{uuid.uuid4().hex}"
    Secret(value=key).save("mckd-test-teacher-key", overwrite=True)
    fake = endpoint([(200, toy_answer)])
    state = run(tmp_path, tiny_models, "secret", teacher=served_teacher(fake, api_key_secret="mckd-test-teacher-key"))
    assert state.is_completed()
    headers = [{k.lower(): v for k, v in r["headers"].items()} for r in fake.requests]
    assert headers and all(h["authorization"] == f"Bearer {key}" for h in headers)
    flow_run_id = state.state_details.flow_run_id
    assert key not in asyncio.run(_logs(flow_run_id))
    assert key not in json.dumps(asyncio.run(_flow_run_parameters(flow_run_id)))
    written = [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert written == []  # report.json/md, labels, the teacher cache, Prefect results and cache records


def test_unknown_secret_block_fails_fast_naming_it(tmp_path, tiny_models, endpoint):
    fake = endpoint([(200, toy_answer)])
    state = run(tmp_path, tiny_models, "nosecret", teacher=served_teacher(fake, api_key_secret="mckd-no-such-block"))
    assert (
        state.is_failed()
        and "teacher.api_key_secret: no Prefect Secret block named 'mckd-no-such-block'" in state.message
    )
    assert "Retrying" not in asyncio.run(_history(state.state_details.flow_run_id, "annotate"))
    assert fake.requests == []


async def _flow_run_parameters(flow_run_id) -> dict:
    async with get_client() as client:
        return (await client.read_flow_run(flow_run_id)).parameters


def test_deleted_or_altered_student_is_trained_again(tmp_path, tiny_models):
    first = run(tmp_path, tiny_models, "gone")
    student = Path(first.result()["final_student"]["dir"])

    shutil.rmtree(student)
    states = final_states(run(tmp_path, tiny_models, "gone"))
    assert states["train-student"] == ["Completed"] and states["annotate"] == ["Cached", "Cached"], states
    assert holds_student(student, json.loads((student / "metrics.json").read_text()))

    weights = student / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the last tensor
    weights.write_bytes(bytes(data))
    states = final_states(run(tmp_path, tiny_models, "gone"))
    assert states["train-student"] == ["Completed"] and states["annotate"] == ["Cached", "Cached"], states

    # The retrained student's record is found again: everything is Cached.
    states = final_states(run(tmp_path, tiny_models, "gone"))
    assert {name: set(s) for name, s in states.items() if name != "report"} == {
        "annotate": {"Cached"},
        "partition": {"Cached"},
        "train-student": {"Cached"},
        "relabel": {"Cached"},  # the final student's labels of U (mckd suggest)
        "evaluate-student": {"Cached"},
        "score-labels": {"Cached"},
    }, states


def _start_cli(config: Path, output: Path, fault: str = "") -> subprocess.Popen:
    """`mckd run <config>` as its own process group, on this session's Prefect API, output to `output`.

    The test harness's API (not a per-process ephemeral server): no server start-up per run, and a killed run
    cannot leave a half-written API database behind. The cache under test lives in files either way.
    """
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "300", "MCKD_FAULT": fault}
    with output.open("wb") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("mckd")), "run", str(config)],
            cwd=config.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _comparable(report: dict, runs_root: Path) -> dict:
    """report.json without what differs between two identical runs: wall-clock times, speeds and the runs root; of
    the teacher's tokens, which rows were sent and which came from the cache, not what they cost."""
    from mckd_core.report import SPEED_KEYS

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("seconds", "timings", *SPEED_KEYS)}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return (
            value.replace(str(runs_root.resolve()), "<runs>").replace(str(runs_root), "<runs>")
            if isinstance(value, str)
            else value
        )

    comparable = strip(report)
    comparable["teacher"]["tokens"] = {
        name: {key: entry[key] + entry[f"cached_{key}"] for key in ("prompt_tokens", "completion_tokens", "metered")}
        for name, entry in comparable["teacher"]["tokens"].items()
    }
    return comparable


def _flat(text: str) -> str:
    # Console log lines may be wrapped: compare without whitespace.
    return "".join(text.split())


def test_sigkill_mid_stage_then_rerun_resumes_from_cache_with_the_same_report(tmp_path, tiny_models):
    # One student at a time: the kill must land between the two students of stage 1, a window that two students
    # training at once (the CPU default) close in milliseconds. Resuming from the cache is the same in both modes.
    cfg = toy_config(
        tmp_path,
        tiny_models,
        run_name="crash",
        student={"epochs": 2},
        stages={"num_stages": 2, "partitions": 2, "evaluate_students": False, "cpu_students": 1},
    )
    config = tmp_path / "crash.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run_dir, runs_root = Path(cfg["runs_root"]) / "crash", Path(cfg["runs_root"])

    # Kill the whole process group once stage 1 has a relabelled part (its student's result is committed), and
    # before the stage is over: the first run's merge of the stage's relabels sleeps, so the kill never races the
    # other part's relabel and the merge (fast students closed that window in milliseconds).
    first = _start_cli(config, tmp_path / "first.log", fault="merge-labels:sleep-120:1")
    relabelled = run_dir / "stage-1" / "partition-0"
    assert _wait_for(lambda: any(relabelled.glob("relabels-*.parquet")) or first.poll() is not None, 240)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL
    assert not any((run_dir / "stage-1").glob("labels-*.parquet")) and not (run_dir / "final").exists()
    assert not (run_dir / "report.json").exists()
    before = _flat((tmp_path / "first.log").read_text())
    assert "stage-1/student-0:attempt1oncpu" in before
    teacher_rows = cached_responses(runs_root)

    second = _start_cli(config, tmp_path / "second.log")
    assert second.wait(240) == 0, (tmp_path / "second.log").read_text()[-3000:]
    after = _flat((tmp_path / "second.log").read_text())
    assert "teacheronunlabeled" not in after and "teacherontest" not in after  # both annotate runs came from cache
    assert cached_responses(runs_root) == teacher_rows
    assert "stage-1/student-0:attempt" not in after  # the finished student came from cache
    assert "final/student:attempt1oncpu" in after
    assert after.count("Finishedinstate" + "Cached") >= 4  # 2 annotate, partition, student-0 at least

    # The same config, uninterrupted (in this process: the same flow, without another interpreter start-up),
    # in another runs root.
    assert mckd_flow(parse_config({**cfg, "runs_root": str(tmp_path / "reference")}), return_state=True).is_completed()
    resumed = json.loads((run_dir / "report.json").read_text())
    uninterrupted = json.loads((tmp_path / "reference" / "crash" / "report.json").read_text())
    assert _comparable(resumed, runs_root) == _comparable(uninterrupted, tmp_path / "reference")
    # Toy F1s are mostly 0, so also compare what every bit of training shows in: the weights and the labels.
    for student in ("stage-1/student-0", "stage-1/student-1", "final/student"):
        ours, theirs = (
            json.loads((root / "crash" / student / "metrics.json").read_text())
            for root in (runs_root, tmp_path / "reference")
        )
        assert ours["weights_sha256"] == theirs["weights_sha256"], student
    assert {p.name for p in (run_dir / "stage-1").glob("labels-*.parquet")} == {
        p.name for p in (tmp_path / "reference" / "crash" / "stage-1").glob("labels-*.parquet")
    }
