"""Make the test-only venvs that hold a real tchu-tchu (never a dependency of tchu_rpc).

Each venv is made once and kept (git-ignored, `.venv-test-tchu-tchu-<major>` at the repository's root),
remade only when its pinned requirements change. Every step is bounded by a timeout, and a failure
raises `RuntimeError` naming the install log kept beside the venv.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks import venvs

ROOT = Path(__file__).resolve().parents[2]
_CELERY = ("celery==5.7.0", "kombu==5.7.0", "amqp==5.4.2")
#: The tchu-tchu releases the interop tests speak to, with the Celery they run on.
REQUIREMENTS = {
    "2": ("tchu-tchu==2.2.21", *_CELERY),
    "3": ("tchu-tchu==3.0.4", *_CELERY),
}


def venv_dir(major: str) -> Path:
    """Return where the venv of tchu-tchu `major` lives."""
    return ROOT / f".venv-test-tchu-tchu-{major}"


def ensure_venv(major: str) -> Path:
    """Create the venv of tchu-tchu `major` unless it holds its pinned requirements; return its python.

    Made as the benchmarks make their baselines' venvs (`benchmarks.venvs.ensure_venv`).
    """
    return venvs.ensure_venv(venv_dir(major), REQUIREMENTS[major])


if __name__ == "__main__":
    for name in sys.argv[1:] or sorted(REQUIREMENTS):
        print(ensure_venv(name))
