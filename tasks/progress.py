"""Progress for long nodes: a Prefect progress artifact (UI) plus any in-process listeners (the CLI's bars)."""

from __future__ import annotations

import contextlib
import time

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from mckd_core import progress as listeners


@contextlib.contextmanager
def progress_reporter(description: str, min_interval_s: float = 1.0):
    """Yields a callback(done, total) that updates a progress artifact at most every `min_interval_s`."""
    artifact_id = create_progress_artifact(progress=0.0, description=description)
    last = [0.0]

    def report(done: int, total: int) -> None:
        listeners.emit(description, done, total)
        now = time.monotonic()
        if now - last[0] >= min_interval_s or done >= total:
            last[0] = now
            update_progress_artifact(artifact_id=artifact_id, progress=100.0 * done / max(total, 1))

    with listeners.started(description):
        yield report
