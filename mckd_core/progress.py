"""Progress of long nodes: in-process listeners (the CLI registers rich progress bars here), and a file a child
process writes its steps to for its parent to forward (`FileProgress`)."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Protocol


class Listener(Protocol):
    def start(self, description: str) -> None: ...
    def update(self, description: str, done: int, total: int) -> None: ...
    def finish(self, description: str) -> None: ...


_listeners: list[Listener] = []


def add_listener(listener: Listener) -> Callable[[], None]:
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def emit(description: str, done: int, total: int) -> None:
    for listener in list(_listeners):
        listener.update(description, done, total)


@contextlib.contextmanager
def started(description: str):
    for listener in list(_listeners):
        listener.start(description)
    try:
        yield
    finally:
        for listener in list(_listeners):
            listener.finish(description)


class FileProgress:
    """A progress callback that a child process can be handed (it pickles): it writes "done total" to `path`, at
    most every `min_interval_s` (and always the last step), replacing the file whole so a reader never sees half a
    line. The parent reads it back with `forward_file_progress`."""

    def __init__(self, path: str, min_interval_s: float = 0.25):
        self.path, self.min_interval_s, self._last = path, min_interval_s, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < self.min_interval_s and done < total:
            return
        self._last = now
        partial = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(partial, "w") as out:
                out.write(f"{done} {total}")
            os.replace(partial, self.path)
        except OSError:  # the reader is gone (its folder removed): progress is a display, never the job's failure
            pass


def forward_file_progress(path: str, progress: Callable[[int, int], None], last: tuple | None) -> tuple | None:
    """Call `progress` with what a `FileProgress` at `path` last wrote, when it changed since `last`; returns what it
    read (pass it back as `last` next time)."""
    try:
        with open(path) as file:
            done, total = (int(x) for x in file.read().split())
    except (FileNotFoundError, ValueError):
        return last
    if (done, total) != last:
        progress(done, total)
    return done, total
