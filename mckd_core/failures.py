"""Classify failures as transient (worth a retry: GPU/transport) or permanent (data/config errors)."""

from __future__ import annotations

import re

from .errors import MckdInputError, TeacherTransportError

_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED", re.I)
_CUDA = re.compile(
    r"CUDA error|CUDNN_STATUS|cuDNN error|NCCL error|CUBLAS_STATUS|device-side assert|an illegal memory access", re.I
)


class StudentOOM(RuntimeError):
    """Training ran out of GPU memory (also raised from a child process, as text)."""


class GPUError(RuntimeError):
    """A CUDA / NCCL runtime failure (also raised from a child process, as text)."""


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, StudentOOM) or type(exc).__name__ == "OutOfMemoryError" or bool(_OOM.search(str(exc)))


def is_transient(exc: BaseException) -> bool:
    """True for failures a retry can fix: CUDA OOM / CUDA / NCCL errors, teacher 5xx / timeouts / refused
    connections."""
    if isinstance(exc, MckdInputError):
        return False
    if isinstance(exc, (StudentOOM, GPUError, TeacherTransportError, TimeoutError, ConnectionError)):
        return True
    if is_oom(exc):
        return True
    return isinstance(exc, RuntimeError) and bool(_CUDA.search(str(exc)))
