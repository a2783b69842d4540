"""In-process progress listeners (the CLI registers rich progress bars here)."""

from __future__ import annotations

import contextlib
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
