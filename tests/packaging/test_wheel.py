"""The package as users get it: a wheel built from the tree, installed alone in a fresh venv.

The venv is kept per wheel content (`.venv-test-wheel-<hash>/`, gitignored), so a rerun without
changes to the package only builds the wheel again (a few seconds). Its dependencies come from PyPI
through pip's cache. Nothing of the source tree is on the venv's path: the demo runs and mypy
type-checks from a folder outside the tree.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.packaging, pytest.mark.timeout(600)]

SAMPLE = """\
import msgspec

from tchu_rpc import Client, Topic


class GetUser(msgspec.Struct):
    id: int


class User(msgspec.Struct):
    id: int
    name: str


get_user = Topic("rpc.users.get", request=GetUser, response=User)


def use(client: Client) -> None:
    reveal_type(client.call(get_user, GetUser(id=1), timeout=5))
"""


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _content_hash(wheel: Path) -> str:
    """Return a hash of the wheel's files (a zip's own timestamps change with every build)."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0" + archive.read(name))
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)], out)
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("tchu_rpc-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path) -> Path:
    """Return a venv with the wheel and its runtime dependencies only, made once per wheel content."""
    home = ROOT / f".venv-test-wheel-{_content_hash(wheel)}"
    if (home / "installed").exists():
        return home
    for old in ROOT.glob(".venv-test-wheel-*"):  # older wheels' venvs, or this one half made
        shutil.rmtree(old, ignore_errors=True)
    # In place: a venv's scripts name its interpreter by absolute path, so it cannot be moved.
    made = _run([sys.executable, "-m", "venv", str(home)], ROOT)
    assert made.returncode == 0, made.stderr
    pip = [str(home / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    installed = _run([*pip, str(wheel)], ROOT)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    (home / "installed").touch()
    return home


def test_wheel_ships_the_type_marker_and_the_license(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "tchu_rpc/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), names


def test_installed_package_needs_no_test_tools(venv: Path, tmp_path: Path) -> None:
    # Given the wheel installed with its runtime dependencies alone
    probe = "import importlib.util as u; print([m for m in ('pytest', 'hypothesis', 'testcontainers', "
    probe += "'mypy') if u.find_spec(m)])"
    # When the CLI, the demo, the test broker and the contract export are imported
    code = f"import tchu_rpc.cli, tchu_rpc.demo, tchu_rpc.testing, tchu_rpc.contrib.asyncapi; {probe}"
    done = _run([str(venv / "bin" / "python"), "-c", code], tmp_path)
    # Then they import, and no test tool came with them
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_demo_runs_from_the_installed_package(venv: Path, tmp_path: Path) -> None:
    done = _run([str(venv / "bin" / "tchu-rpc"), "demo"], tmp_path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rpc.users.get {'id': 1} -> {'id': 1, 'name': 'Ada'}" in done.stdout
    assert "RemoteError RpcError code=not_found" in done.stdout
    assert "reached services 'users' and 'mailer': True" in done.stdout


def test_mypy_sees_the_response_type_through_the_installed_package(venv: Path, tmp_path: Path) -> None:
    # Given a module outside the source tree that uses a typed topic of the installed package
    (tmp_path / "sample.py").write_text(textwrap.dedent(SAMPLE))
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    # When mypy (this project's) checks it against the venv's site-packages
    args = [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--cache-dir", str(venv / "mypy")]
    done = _run([*args, "--python-executable", str(venv / "bin" / "python"), "sample.py"], tmp_path)
    # Then the call's result is the topic's response type, not Any
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'Revealed type is "sample.User"' in done.stdout, done.stdout
