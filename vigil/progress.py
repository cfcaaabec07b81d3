"""Progress of the pipeline's long steps, for whoever listens: the CLI draws it with rich; flows and
tests run the same code with nobody listening."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[[str, int, int, str], None]  # step, done, total, what is being done
_listeners: list[Listener] = []


@contextmanager
def listen(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def report(step: str, done: int, total: int, detail: str = "") -> None:
    for listener in list(_listeners):
        listener(step, done, total, detail)
