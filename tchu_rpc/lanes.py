"""Handler threads: a lane is a fixed set of daemon threads that run handlers off the I/O thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from tchu_rpc.log import logger


class Lane:
    """Run submitted jobs on `size` daemon threads, in arrival order."""

    def __init__(self, name: str, size: int, run: Callable[[Any], None]) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._run = run
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True) for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Any) -> None:
        """Queue `job` for the next free thread."""
        self._jobs.put(job)

    def close(self) -> None:
        """Let each thread finish its current job and exit; do not wait for them."""
        for _ in self._threads:
            self._jobs.put(_STOP)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            try:
                self._run(job)
            except BaseException as exc:  # a bug in the worker itself; keep the thread alive
                logger.exception("lane_job_crashed", error=str(exc))


_STOP = object()
