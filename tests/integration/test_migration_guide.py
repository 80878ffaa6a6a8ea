"""docs/migrating-from-tchu-tchu.md, step 2, run as written: its blocks are read from the guide.

The subscribers block becomes `myapp/subscribers.py`, the shell block runs (the `tchu-rpc` command,
its queue renamed for this test only), and the client block runs in this process, with the
broker and the test's exchanges given as `TCHU_RPC_*` variables as the guide says.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tchu_rpc import Client, NoRoute
from tchu_rpc.compat import client as compat_client
from tchu_rpc.compat import set_default_client
from tchu_rpc.testing import TchuFactory

GUIDE = Path(__file__).parents[2] / "docs" / "migrating-from-tchu-tchu.md"
_BLOCK = re.compile(r"<!-- guide-test: ([\w-]+) -->\n```\w+\n(.*?)```", re.S)


def guide_blocks() -> dict[str, str]:
    """Return the guide's tested blocks by name."""
    return dict(_BLOCK.findall(GUIDE.read_text()))


def _until(check: Callable[[], Any], what: str, within: float = 30.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        try:
            result = check()
        except NoRoute:  # not bound yet
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        time.sleep(0.05)


@pytest.fixture
def guide_worker(tchu: TchuFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    """Run the guide's worker command on its subscribers module; yield a client once it answers."""
    blocks = guide_blocks()
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "subscribers.py").write_text(blocks["subscribers"])
    env = {
        "TCHU_RPC_BROKER_URL": tchu.settings.broker_url,
        "TCHU_RPC_EVENTS_EXCHANGE": tchu.settings.events_exchange,
        "TCHU_RPC_CALLS_EXCHANGE": tchu.settings.calls_exchange,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command = shlex.split(blocks["worker"].strip())
    assert command[0] == "tchu-rpc"
    command[command.index("--queue") + 1] = tchu.service("myapp")
    command[:1] = [sys.executable, "-m", "tchu_rpc"]
    log = (tmp_path / "worker.log").open("w")
    child_env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen(command, cwd=tmp_path, env=child_env, stdout=log, stderr=subprocess.STDOUT)
    client = tchu.client(tchu_tchu_format=True)
    try:
        _until(lambda: proc.poll() is not None or client.call("rpc.myapp.seen", {}) == [], "worker up")
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()
        yield client
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_the_guides_compat_client_calls_and_publishes_to_its_tchu_rpc_worker(
    guide_worker: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the guide's worker (--accept-tchu-tchu) and TchuClient's shared client made as the guide says
    # (outside Django: not a factory a Django test set up earlier in this process)
    monkeypatch.setattr(compat_client, "_factory", None)
    previous = set_default_client(None)
    try:
        # When the guide's client block runs (its asserts check the calls' answers)
        exec(compile(guide_blocks()["client"], str(GUIDE), "exec"), {})
        # then its event is handled once: a later event, on the same queue, is handled after it.
        from tchu_rpc.compat import TchuClient

        TchuClient().publish("user.created", {"user_id": 999})
    finally:
        made = set_default_client(previous)
    assert made is not None
    made.close()
    seen = _until(lambda: 999 in (s := guide_worker.call("rpc.myapp.seen", {})) and s, "second event")
    assert seen == [123, 999]
