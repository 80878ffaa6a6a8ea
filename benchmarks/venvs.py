"""The baselines run from venvs of their own (`.venv-bench-*`): make them, run their drivers, clean up.

A baseline whose framework must not enter the main venv runs its servers and its driver from a venv
of its own; this makes it (and remakes it when the pinned requirements change), runs its driver and
reads the `RunResult` it prints, and deletes what its servers declared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from kombu import Connection

from benchmarks.loadgen import RunResult

_ROOT = Path(__file__).resolve().parent.parent  # the repository: the drivers import `benchmarks`
_STAMP = ".bench-requirements"
_VENV_TIMEOUT = 120
_INSTALL_TIMEOUT = 600


def ensure_venv(venv: Path, requirements: Sequence[str]) -> Path:
    """Create or update `venv` when its pinned `requirements` changed; return its python.

    Raises RuntimeError (the install log kept beside the venv) when it cannot be made.
    """
    python = venv / "bin" / "python"
    stamp = venv / _STAMP
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    base = shutil.which("python3.11") or sys.executable
    print(f"installing {' '.join(requirements)} into {venv} ...", file=sys.stderr, flush=True)
    log = venv.parent / f"{venv.name}-install.log"
    with open(log, "w") as out:
        if not python.exists():
            _run([base, "-m", "venv", str(venv)], out, _VENV_TIMEOUT, f"making {venv}", log)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements]
        _run(pip, out, _INSTALL_TIMEOUT, f"installing {' '.join(requirements)} into {venv}", log)
    log.unlink()
    stamp.write_text(wanted)
    return python


def _run(argv: list[str], out: IO[str], timeout: float, what: str, log: Path) -> None:
    try:
        done = subprocess.run(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{what} timed out after {timeout:.0f} s; see {log}") from exc
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed; see {log}")


def child_env(root: Path, **extra: str) -> dict[str, str]:
    """Return the environment of a process run from a baseline's venv.

    It is this process's, less the variables of the harness's own venv and Python, with `root` (the
    repository) on PYTHONPATH, plus `extra`.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(PYTHONPATH=str(root), **extra)
    return env


def run_driver(name: str, argv: list[str], env: dict[str, str], log_dir: Path, calls: int) -> RunResult:
    """Run a baseline's driver (`calls` calls, warm-up included) and parse the `RunResult` it prints.

    Its stderr goes to a new `driver-N.err` in `log_dir`, whose tail a failure quotes.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    err_path = log_dir / f"driver-{len(list(log_dir.glob('driver-*.err'))) + 1}.err"
    with open(err_path, "w") as err:
        done = subprocess.run(
            argv,
            env=env,
            cwd=_ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=120 + 2 * calls,
        )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(err_path.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{name} driver exited with {done.returncode}; {err_path}:\n{tail}")
    return RunResult.from_json(lines[-1])


def delete_topology(broker_url: str, queue: str, exchange: str) -> None:
    """Delete a run's queue and exchange (a no-op for those already gone)."""
    with Connection(broker_url, connect_timeout=5) as conn:
        channel = conn.channel()
        channel.queue_delete(queue)
        channel.exchange_delete(exchange)
