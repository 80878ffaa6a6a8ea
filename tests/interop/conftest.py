"""Interop fixtures: a real tchu-tchu, from a test-only venv made on first use, run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tchu_tchu_venvs as venvs

_SCRIPT = Path(__file__).with_name("tchu_tchu_script.py")
_SCRIPT_TIMEOUT = 60

TchuTchu = Callable[[str, list[list[Any]]], list[dict[str, Any]]]


@pytest.fixture(scope="session", params=["2", "3"], ids=["tchu-tchu-2.2.21", "tchu-tchu-3.0.4"])
def tchu_tchu_python(request: pytest.FixtureRequest) -> Path:
    """Return the python of a venv holding tchu-tchu 2.x or 3.x; fail (never skip) if it cannot be made."""
    try:
        return venvs.ensure_venv(request.param)
    except RuntimeError as exc:
        pytest.fail(
            f"cannot make the tchu-tchu {request.param}.x test venv ({exc}); it needs PyPI (or a pip "
            f"cache holding {', '.join(venvs.REQUIREMENTS[request.param])}); delete "
            f"{venvs.venv_dir(request.param)} to start over",
            pytrace=False,
        )


@pytest.fixture
def run_tchu_tchu(tchu_tchu_python: Path) -> Callable[..., list[dict[str, Any]]]:
    """Return a function running ops (`[op, topic, data]`) through tchu-tchu; one JSON result per op."""

    def run(broker: str, exchange: str, prefix: str, ops: list[list[Any]]) -> list[dict[str, Any]]:
        spec = json.dumps({"broker": broker, "exchange": exchange, "prefix": prefix, "ops": ops})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
        done = subprocess.run(
            [str(tchu_tchu_python), str(_SCRIPT), spec],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=_SCRIPT_TIMEOUT,
        )
        lines = done.stdout.splitlines()
        if done.returncode != 0 or len(lines) != len(ops):
            tail = "\n".join(done.stderr.splitlines()[-20:])
            raise AssertionError(f"tchu-tchu script exited with {done.returncode}; stderr:\n{tail}")
        return [json.loads(line) for line in lines]

    return run
