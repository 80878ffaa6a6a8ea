"""Start server subprocesses, wait until each prints `ready`, and stop them all, also on errors."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

READY_LINE = "ready"


class ServerGroup:
    """Subprocesses, each in its own session so that stopping one also ends its children."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[subprocess.Popen[str]] = []
        self._ready: list[threading.Event] = []
        self._threads: list[threading.Thread] = []

    def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        """Start `argv`; its stdout is read for the ready line, its stderr goes to a log file."""
        index = len(self._procs)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"server-{index}.err", "w") as err:
            proc = subprocess.Popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                text=True,
                start_new_session=True,
            )
        ready = threading.Event()
        out_path = self.log_dir / f"server-{index}.out"
        assert proc.stdout is not None
        thread = threading.Thread(target=_pump, args=(proc.stdout, out_path, ready), daemon=True)
        thread.start()
        self._procs.append(proc)
        self._ready.append(ready)
        self._threads.append(thread)

    def wait_ready(self, timeout: float) -> None:
        """Return once every process printed the ready line; raise if one exits or time runs out."""
        deadline = time.monotonic() + timeout
        for index, (proc, ready) in enumerate(zip(self._procs, self._ready, strict=True)):
            while not ready.wait(timeout=0.05):
                if proc.poll() is not None:
                    raise RuntimeError(f"server {index} exited with {proc.returncode}; {self._tail(index)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server {index} not ready after {timeout:.0f} s; {self._tail(index)}")

    def stop(self, grace: float = 10.0) -> list[int | None]:
        """SIGTERM every process group, SIGKILL what is left after `grace`; return the exit codes."""
        for proc in self._procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
            # Children of a killed leader (Celery's prefork pool) may outlive it: end the group too.
            _signal_group(proc, signal.SIGKILL)
        for thread in self._threads:
            thread.join(timeout=2)
        codes = [proc.returncode for proc in self._procs]
        self._procs, self._ready, self._threads = [], [], []
        return codes

    def _tail(self, index: int) -> str:
        path = self.log_dir / f"server-{index}.err"
        lines = path.read_text(errors="replace").splitlines()[-15:] if path.exists() else []
        return f"stderr ({path}):\n" + "\n".join(lines)


def _pump(stream: IO[str], out_path: Path, ready: threading.Event) -> None:
    # Keep draining after `ready` so that a chatty server never blocks on a full pipe.
    with stream, open(out_path, "w") as out:  # closing the pipe at EOF: no ResourceWarning
        for line in stream:
            out.write(line)
            out.flush()
            if line.strip() == READY_LINE:
                ready.set()


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
