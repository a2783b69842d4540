"""Fault injection for tests (off unless MCKD_FAULT is set). Not for production use.

MCKD_FAULT="<node>:<fault>:<attempts>[,...]", e.g. "train-student:cuda-oom:1" raises a CUDA OOM on the first
attempt of every train-student task. Faults: cuda-oom, cuda-error, value-error, teacher-503, and sleep-<seconds>
(no error: the node just takes that much longer; e.g. to hold a dispatched student RUNNING while a test kills
its worker). <attempts> is "1", "1-2" or "*" (every attempt).
"""

from __future__ import annotations

import os
import time

from .errors import TeacherTransportError
from .failures import GPUError, StudentOOM

FAULTS = {
    "cuda-oom": lambda: StudentOOM("CUDA out of memory. Tried to allocate 2.00 GiB (injected by MCKD_FAULT)"),
    "cuda-error": lambda: GPUError("CUDA error: an illegal memory access was encountered (injected by MCKD_FAULT)"),
    "value-error": lambda: ValueError("bad value (injected by MCKD_FAULT)"),
    "teacher-503": lambda: TeacherTransportError(
        "teacher answered HTTP 503 Service Unavailable (injected by MCKD_FAULT)"
    ),
}


def _attempt_matches(spec: str, attempt: int) -> bool:
    if spec == "*":
        return True
    low, _, high = spec.partition("-")
    return int(low) <= attempt <= int(high or low)


def maybe_inject(node: str, attempt: int) -> None:
    """Raise the configured fault when `node` runs its `attempt`-th time."""
    for entry in filter(None, os.environ.get("MCKD_FAULT", "").split(",")):
        name, fault, attempts = entry.split(":")
        if name == node and _attempt_matches(attempts, attempt):
            if fault.startswith("sleep-"):
                time.sleep(float(fault.removeprefix("sleep-")))
                continue
            raise FAULTS[fault]()
