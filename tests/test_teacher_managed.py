"""The managed vLLM server (teacher.backend=vllm-server without base_url) against a fake server process that
starts in milliseconds (tests/fake_vllm_server.py): lazy start, stop at the end and on failure, a SIGKILL
mid-annotation (permanent failure or restart on retry), and the flow around it. The same paths with a real
vLLM server: tests/test_vllm_managed.py. Also: vllm-offline where vLLM is not installed."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3

import pandas as pd
import pytest
from fake_vllm_server import fake_vllm_python
from tests_support import final_states
from toy_data import PAIRS, toy_config

from flows import mckd_flow
from mckd_core.config import TeacherConfig, parse_config
from mckd_core.data import write_parquet
from mckd_core.errors import MckdInputError, TeacherTransportError
from mckd_core.failures import is_transient
from mckd_core.jobs import AnnotateJob
from mckd_core.steps import annotate_rows, teacher_backend, teacher_session
from mckd_core.teacher.vllm_server import VLLMServerError, metrics

ROWS = 8


@pytest.fixture
def fake(tmp_path):
    """Paths and settings of one fake-server setup: its python, the start log, a model dir."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return {
        "python": fake_vllm_python(tmp_path),
        "starts": tmp_path / "starts.txt",
        "died": tmp_path / "died",
        "model": str(model),
        "cache": tmp_path / "teacher.sqlite",
        "out": tmp_path / "out",
    }


def teacher_cfg(fake, die_after: int = 0, **vllm) -> TeacherConfig:
    env = {
        "FAKE_VLLM_STARTS": str(fake["starts"]),
        "FAKE_VLLM_DIE_AFTER": str(die_after),
        "FAKE_VLLM_DIED": str(fake["died"]),
    }
    # concurrency 1 → 4 rows per backend call; one HTTP retry keeps a dead server's failure quick.
    return TeacherConfig(
        backend="vllm-server",
        model=fake["model"],
        num_demos=2,
        concurrency=1,
        max_retries=1,
        vllm={"python": fake["python"], "env": env, "startup_timeout_s": 30, **vllm},
    )


def refs(fake):
    words = list(PAIRS)
    demos = pd.DataFrame({"id": [f"l{i}" for i in range(len(words))], "input": words, "target": list(PAIRS.values())})
    rows = pd.DataFrame(
        {
            "id": [f"u{i}" for i in range(ROWS)],
            "input": [f"{words[i]} {words[(i + 3) % 8]}" for i in range(ROWS)],
            "target": [None] * ROWS,
        }
    )
    return write_parquet(rows, fake["out"], "rows"), write_parquet(demos, fake["out"], "demos")


def annotate(fake, cfg):
    rows, demos = refs(fake)
    job = AnnotateJob(
        examples=rows,
        demos=demos,
        teacher=cfg,
        task="text",
        seed=0,
        out_dir=str(fake["out"]),
        cache_path=str(fake["cache"]),
    )
    return annotate_rows(job)[1]


def recorded_cost(cfg) -> dict[str, list]:
    """The usage the teacher cache recorded for each row of each set the run's teacher labels (and of all of them)."""
    from mckd_core.plan import RunPlan
    from mckd_core.steps import prepare_inputs, teacher_requests
    from mckd_core.teacher import ResponseCache

    plan = RunPlan(cfg, prepare_inputs(cfg))
    cache = ResponseCache(plan.teacher_cache)
    costs = {}
    for which, rows in plan.teacher_sets().items():
        _, keys, _ = teacher_requests(plan.annotate(rows, which))
        usage = cache.usage_of(keys)
        costs[which] = [usage[key] for key in keys]  # row by row: rows that share a key each cost it
    cache.close()
    return {**costs, "total": [u for rows in costs.values() for u in rows]}


def starts(fake) -> list[int]:
    return [int(pid) for pid in fake["starts"].read_text().split()] if fake["starts"].exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def cached_rows(fake) -> int:
    with sqlite3.connect(fake["cache"]) as conn:
        return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def test_server_starts_on_the_first_uncached_row_and_stops_with_the_session(fake):
    cfg = teacher_cfg(fake)
    assert teacher_backend(cfg).server is None  # building the backend starts nothing
    with teacher_session():
        stats = annotate(fake, cfg)
        server, pid = teacher_backend(cfg).server, teacher_backend(cfg).server.pid
        assert alive(pid) and metrics(server.base_url)["vllm:request_success_total"] == ROWS
    assert (stats["requested"], stats["valid"]) == (ROWS, ROWS)
    assert teacher_backend(cfg).server is None and not alive(pid)

    with teacher_session():  # every row cached: no server at all
        stats = annotate(fake, cfg)
    assert (stats["requested"], stats["cached"]) == (0, ROWS)
    assert len(starts(fake)) == 1


def test_server_is_stopped_when_the_session_fails(fake):
    cfg = teacher_cfg(fake)
    with pytest.raises(RuntimeError, match="student crashed"):
        with teacher_session():
            annotate(fake, cfg)
            pid = teacher_backend(cfg).server.pid
            raise RuntimeError("student crashed")
    assert not alive(pid)


def test_killed_server_without_restarts_fails_permanently_and_keeps_the_rows_before(fake):
    cfg = teacher_cfg(fake, die_after=4, max_restarts=0)
    with teacher_session(), pytest.raises(VLLMServerError) as failure:
        annotate(fake, cfg)
    message = str(failure.value)
    assert "was killed by SIGKILL during annotation" in message and "max_restarts=0" in message, message
    assert not is_transient(failure.value)  # the task's retries could not bring it back
    assert cached_rows(fake) == 4  # the first call's 4 rows; the call the kill hit cached nothing
    assert not alive(starts(fake)[0])


def test_killed_server_is_restarted_by_the_retry_which_sends_only_the_missing_rows(fake):
    cfg = teacher_cfg(fake, die_after=4, max_restarts=1)
    with teacher_session():
        with pytest.raises(TeacherTransportError, match="a retry restarts it") as failure:
            annotate(fake, cfg)
        assert is_transient(failure.value)
        stats = annotate(fake, cfg)  # what the annotate task's retry does
        server = teacher_backend(cfg).server
        assert metrics(server.base_url)["vllm:request_success_total"] == ROWS - 4
    assert (stats["requested"], stats["cached"]) == (ROWS - 4, 4)
    assert len(starts(fake)) == 2 and not any(alive(pid) for pid in starts(fake))


def test_flow_restarts_a_killed_server_on_retry_and_a_rerun_starts_none(fake, tmp_path, tiny_models, monkeypatch):
    from tasks.annotate import annotate_task

    monkeypatch.setattr(annotate_task, "retry_delay_seconds", 0)
    teacher = teacher_cfg(fake, die_after=4).model_dump(mode="json")
    cfg = parse_config(
        toy_config(
            tmp_path, tiny_models, teacher=teacher, stages={"num_stages": 1, "partitions": 2}, student={"epochs": 1}
        )
    )
    first = mckd_flow(cfg, return_state=True)
    assert first.is_completed()
    assert len(starts(fake)) == 2 and not any(alive(pid) for pid in starts(fake))  # stopped with the teacher phase

    report = json.loads((cfg.run_dir / "report.json").read_text())
    tokens, paid = report["teacher"]["tokens"], recorded_cost(cfg)
    assert set(tokens) == {"unlabeled", "test", "total"}
    # Every row of U and T cost what the server said once; the rows the killed attempt had cached are the retry's
    # rows from the cache, with the cost they were recorded with.
    for name, entry in tokens.items():
        assert entry["sent"] == entry["metered"] and entry["from_cache"] == entry["cached_metered"]
        assert entry["sent"] + entry["from_cache"] == len(paid[name])
        both = [entry[k] + entry[f"cached_{k}"] for k in ("prompt_tokens", "completion_tokens")]
        assert both == [sum(u.prompt_tokens for u in paid[name]), sum(u.completion_tokens for u in paid[name])]
    assert tokens["total"]["sent"] > 0

    second = mckd_flow(cfg, return_state=True)  # same config: the ephemeral port is in no cache key
    assert second.is_completed()
    assert final_states(second)["annotate"] == ["Cached", "Cached"]
    assert len(starts(fake)) == 2
    again = json.loads((cfg.run_dir / "report.json").read_text())["teacher"]["tokens"]["total"]
    assert (again["sent"], again["prompt_tokens"], again["completion_tokens"]) == (0, 0, 0)  # nothing new was asked
    assert again["cached_prompt_tokens"] == sum(u.prompt_tokens for u in paid["total"])


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_offline_without_vllm_fails_with_how_to_get_it(fake):
    backend = teacher_backend(TeacherConfig(backend="vllm-offline", model=fake["model"]))
    with pytest.raises(MckdInputError, match=r"needs vLLM in this environment \(pip install -e '.\[vllm\]'\)"):
        backend.generate([], None)
