"""Run the user's callbacks on a thread of their own, never on a thread that serves the connection.

A future's done-callbacks run on the thread that settles it, and that thread reads the client's
connection (its I/O thread, or a caller reading its own reply). A callback that blocks there (a
call on the same client, a slow write) would stall every call of the client. So the futures a
`Client` returns hand their done-callbacks to a `Callbacks` thread, as `on_progress` callbacks are:
callbacks run one at a time, in the order their futures settled; one that blocks delays later ones,
never the connection.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

from tchu_rpc.log import get_logger

logger = get_logger(__name__)


class Callbacks:
    """Run callbacks in order on one daemon thread, started on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def run(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the callback thread; an exception it raises is logged.

        Once closed (its client is), on a thread of its own: a done-callback added to a future the
        close failed still runs.
        """
        with self._lock:
            if not self._closed:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                    self._thread.start()
                self._jobs.put((fn, args))
                return
        threading.Thread(target=_call, args=(fn, args), name=self._name, daemon=True).start()

    def close(self) -> None:
        """Let the thread run what is queued, then exit; do not wait for it."""
        with self._lock:
            self._closed = True
            if self._thread is not None:
                self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            _call(*job)


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception as exc:  # the user's code: report it, serve the next one
        name = getattr(fn, "__qualname__", repr(fn))
        logger.warning("callback_failed", callback=name, error_type=type(exc).__name__, error=str(exc))


class CallFuture(futures.Future[Any]):
    """A future whose done-callbacks run on its client's callback thread (see `Callbacks`)."""

    callbacks: Callbacks  # set by the client that makes it

    def add_done_callback(self, fn: Callable[[futures.Future[Any]], object]) -> None:
        """Run `fn(future)` on the client's callback thread once the future is done."""
        super().add_done_callback(lambda future: self.callbacks.run(fn, future))
