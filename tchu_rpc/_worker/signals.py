"""Wait for SIGTERM or SIGINT (or another way to stop) without a lock in the signal handler."""

from __future__ import annotations

import signal
import threading


def wait_for_stop(requested: threading.Event, poll: float = 0.2) -> None:
    """Return once SIGTERM or SIGINT arrived (signals are caught on the main thread only) or `requested`."""
    signalled = False

    def on_signal(signum: int, frame: object) -> None:
        # No lock here (not even Event.set): a second signal could interrupt this handler.
        nonlocal signalled
        signalled = True

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
    while not signalled and not requested.wait(poll):
        pass
