"""Helpers shared by integration tests."""

from __future__ import annotations

import time

from mckd_core.teacher.vllm_server import metrics

REQUESTS = "vllm:request_success_total"


def served_requests(server, at_least: float = 0.0, timeout_s: float = 5.0) -> float:
    """The server's finished-request counter (waits briefly for it to reach `at_least`: it is updated after responses go out)."""
    deadline = time.monotonic() + timeout_s
    while (count := metrics(server.base_url).get(REQUESTS, 0.0)) < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
    return count
