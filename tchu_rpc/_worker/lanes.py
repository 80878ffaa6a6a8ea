"""Handler threads: a lane is a fixed set of daemon threads that run handlers off the I/O thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from tchu_rpc.log import get_logger

logger = get_logger(__name__)


class Lane:
    """Run submitted jobs on `size` daemon threads, in arrival order."""

    def __init__(self, name: str, size: int, run: Callable[[Any], None]) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._run = run
        self._name = name
        self._size = size
        self._spawned = 0
        self._lock = threading.Lock()
        self._busy: dict[threading.Thread, Any] = {}
        self._abandoned: set[threading.Thread] = set()
        for _ in range(size):
            self._spawn()

    def submit(self, job: Any) -> None:
        """Queue `job` for the next free thread."""
        self._jobs.put(job)

    def abandon(self, job: Any) -> bool:
        """Give up on the thread running `job`: a new thread takes its place in the lane.

        A Python thread cannot be stopped, so the abandoned one runs its job to the end and then
        exits. Returns False when no thread runs `job` (any more).
        """
        with self._lock:
            thread = next((t for t, running in self._busy.items() if running is job), None)
            if thread is None:
                return False
            self._abandoned.add(thread)
            abandoned = len(self._abandoned)
            self._spawn()
        logger.warning("handler_thread_abandoned", thread=thread.name, still_running=abandoned)
        return True

    def close(self) -> None:
        """Let each thread finish its current job and exit; do not wait for them."""
        for _ in range(self._size):
            self._jobs.put(_STOP)

    def _spawn(self) -> None:
        self._spawned += 1
        name = f"{self._name}-{self._spawned - 1}"
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        me = threading.current_thread()
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            with self._lock:
                self._busy[me] = job
            try:
                self._run(job)
            except BaseException as exc:  # a bug in the worker itself; keep the thread alive
                logger.exception("lane_job_crashed", error=str(exc))
            with self._lock:
                del self._busy[me]
                if me in self._abandoned:
                    self._abandoned.discard(me)
                    return  # another thread has taken this one's place


_STOP = object()
