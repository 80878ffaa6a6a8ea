"""Make the test-only venvs that hold a real tchu-tchu (never a dependency of tchu_rpc).

Each venv is made once and kept (git-ignored, `.venv-test-tchu-tchu-<major>` at the repository's root),
remade only when its pinned requirements change. Every step is bounded by a timeout, and a failure
raises `RuntimeError` naming the install log kept beside the venv.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]
_CELERY = ("celery==5.7.0", "kombu==5.7.0", "amqp==5.4.2")
#: The tchu-tchu releases the interop tests speak to, with the Celery they run on.
REQUIREMENTS = {
    "2": ("tchu-tchu==2.2.21", *_CELERY),
    "3": ("tchu-tchu==3.0.4", *_CELERY),
}
_STAMP = ".test-requirements"
_VENV_TIMEOUT = 120
_INSTALL_TIMEOUT = 300


def venv_dir(major: str) -> Path:
    """Return where the venv of tchu-tchu `major` lives."""
    return ROOT / f".venv-test-tchu-tchu-{major}"


def ensure_venv(major: str) -> Path:
    """Create the venv of tchu-tchu `major` unless it holds its pinned requirements; return its python."""
    venv, requirements = venv_dir(major), REQUIREMENTS[major]
    python, stamp = venv / "bin" / "python", venv / _STAMP
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    base = shutil.which("python3.11") or sys.executable
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


if __name__ == "__main__":
    for name in sys.argv[1:] or sorted(REQUIREMENTS):
        print(ensure_venv(name))
