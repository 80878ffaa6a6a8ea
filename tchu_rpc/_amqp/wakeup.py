"""A wake-up pipe: any thread interrupts the I/O thread's `select()`; safe against a closed pipe."""

from __future__ import annotations

import os
import select
import threading


class WakeUp:
    """A non-blocking pipe whose read end a `select()` waits on, with the writes made safe to race `close`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a wake-up never writes on a pipe `close` has closed (its fd reused)
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write_fd, False)

    def wake(self) -> None:
        """Make the next (or current) wait on `fd` return; nothing once closed."""
        with self._lock:
            if self._write_fd < 0:
                return  # closed: nothing waits any more
            try:
                os.write(self._write_fd, b"x")
            except BlockingIOError:
                pass  # the pipe is full: a wake-up is pending already

    def drain(self) -> None:
        """Forget the wake-ups received so far."""
        try:
            while os.read(self.fd, 4096):
                pass
        except OSError:  # BlockingIOError: nothing more; EBADF: closed
            pass

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a wake-up; return whether one came (and forget it)."""
        readable = select.select([self.fd], [], [], max(0.0, timeout))[0]
        self.drain()
        return bool(readable)

    def close(self) -> None:
        """Close the pipe; safe to call twice and while other threads wake it."""
        with self._lock:
            for fd in (self.fd, self._write_fd):
                if fd >= 0:
                    os.close(fd)
            self.fd = self._write_fd = -1
