"""A Client made before fork() works in the child on a connection of its own; the parent's keeps working.

Issue 11 (C): the child inherited the parent's socket and I/O state (but not its I/O thread), so its
calls wrote on, and read from, the parent's connection.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tchu_rpc import Client, Registry
from tchu_rpc.testing import TchuFactory

CHILD_CALLS = 5
CHILD_CALL_TIMEOUT = 2.0
CHILD_BOUND = 30  # seconds: SIGALRM ends a child stuck anyhow; the parent kills it a little later
PARENT_WAIT = CHILD_BOUND + 5


def broker_ports(pid: int, broker_port: int) -> set[int]:
    """Return the local ports of the TCP connections `pid` has open to `broker_port` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == broker_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def run_child(client: Client, out: int, broker_port: int) -> None:
    """In the forked child: make calls on the inherited client, report them on `out`, never return."""
    code = 1
    try:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not pytest-timeout's handler: just die
        signal.alarm(CHILD_BOUND)
        report: dict[str, Any] = {"results": []}
        try:
            for i in range(CHILD_CALLS):
                report["results"].append(
                    client.call("rpc.fork.echo", f"child-{i}", timeout=CHILD_CALL_TIMEOUT)
                )
            code = 0
        except Exception as exc:
            report["error"] = f"{type(exc).__name__}: {exc}"
        report["ports"] = sorted(broker_ports(os.getpid(), broker_port))
        os.write(out, json.dumps(report).encode())
    finally:
        os._exit(code)


def wait_for_child(pid: int, client: Client) -> tuple[int, list[Any]]:
    """Call from the parent until the child exits (killed after `PARENT_WAIT`); return its status and answers.

    A failed call is recorded as its error's text, so that the child is always reaped.
    """
    deadline = time.monotonic() + PARENT_WAIT
    answers: list[Any] = []
    try:
        while True:
            try:
                answers.append(client.call("rpc.fork.echo", f"parent-{len(answers)}", timeout=5))
            except Exception as exc:
                answers.append(f"{type(exc).__name__}: {exc}")
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status, answers
            if time.monotonic() > deadline:
                raise AssertionError(f"the child did not exit within {PARENT_WAIT} s")
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise


@pytest.mark.timeout(90)
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_client_made_before_fork_works_in_the_child_and_the_parent_keeps_working(tchu: TchuFactory) -> None:
    registry = Registry()
    registry.add("rpc.fork.echo", lambda data: data)
    tchu.worker(registry, call_concurrency=2)
    broker_port = urlsplit(tchu.broker_url).port or 5672

    # Given a client that made calls, so it has a connection (and an I/O thread) when the process forks
    client = tchu.client()
    assert [client.call("rpc.fork.echo", i, timeout=5) for i in range(3)] == [0, 1, 2]
    parent_ports = broker_ports(os.getpid(), broker_port)
    read_end, write_end = os.pipe()

    # When the child makes calls on the same Client object while the parent keeps calling
    pid = os.fork()
    if pid == 0:
        run_child(client, write_end, broker_port)
    os.close(write_end)
    status, during = wait_for_child(pid, client)
    with os.fdopen(read_end, "rb") as pipe:
        report = json.loads(pipe.read() or b"{}")

    # Then the child got every answer and exited cleanly
    seen = f"child reported {report}; parent got {during}"
    assert report.get("results") == [f"child-{i}" for i in range(CHILD_CALLS)], seen
    assert os.waitstatus_to_exitcode(status) == 0
    # And it used a connection of its own, not one of the parent's
    assert set(report["ports"]) - parent_ports, f"child ports {report['ports']}, parent's {parent_ports}"
    # And the parent was answered during the child's calls and after them
    assert during == [f"parent-{i}" for i in range(len(during))], seen
    assert [client.call("rpc.fork.echo", f"after-{i}", timeout=5) for i in range(3)] == [
        f"after-{i}" for i in range(3)
    ]
