"""Per-device slots: one student per GPU at a time; on CPU one after another."""

from __future__ import annotations

import contextlib
import os
import queue
import threading

_slots: queue.Queue | None = None
_lock = threading.Lock()


def _devices() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return ["cpu"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(torch.cuda.device_count())]
    return ids or ["cpu"]


@contextlib.contextmanager
def device_slot():
    """Hold one device for the duration of the block; yields 'cpu' or a CUDA device id string."""
    global _slots
    with _lock:
        if _slots is None:
            _slots = queue.Queue()
            for device in _devices():
                _slots.put(device)
    device = _slots.get()
    try:
        yield device
    finally:
        _slots.put(device)
