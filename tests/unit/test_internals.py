"""The py-amqp internals the fast path uses are all in the installed py-amqp (a canary for upgrades).

If this fails after an upgrade of py-amqp, the library falls back to the public path by itself
(`fast_path_disabled`); the fast path needs mending before the new version is allowed in
pyproject.toml.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace

import amqp

from tchu_rpc._amqp import internals
from tchu_rpc.testing import capture_logs

ROOT = Path(__file__).resolve().parents[2]


def _unconnected() -> amqp.Connection:
    conn = amqp.Connection(host="127.0.0.1:1")
    conn.transport = conn.Transport("127.0.0.1:1", connect_timeout=1)  # made, never connected
    return conn


def test_every_internal_the_fast_path_uses_is_in_the_installed_py_amqp() -> None:
    assert internals.missing(_unconnected()) == []
    # and each is named, so a reader of this test knows what an upgrade must keep
    named = set(internals.CONNECTION) | set(internals.TRANSPORT) | set(internals.CHANNEL)
    assert {"on_inbound_frame", "_read_buffer", "_callbacks", "bytes_sent", "frame_max", "write"} <= named


def test_a_missing_internal_is_named_and_the_fast_path_turned_off_with_one_log_line() -> None:
    # Given a py-amqp connection whose transport has no read buffer (an upgrade moved it)
    conn = SimpleNamespace(
        on_inbound_frame=None,
        bytes_sent=0,
        frame_max=4096,
        _callbacks={},
        channel_id=0,
        _transport=SimpleNamespace(write=None),
    )

    # When the fast path is checked twice
    with capture_logs() as logs:
        first, second = internals.usable(conn), internals.usable(conn)

    # Then it is off, and said once, with the missing name
    assert (first, second) == (False, False)
    said = [e for e in logs if e["event"] == "fast_path_disabled"]
    assert len(said) == 1 and said[0]["missing"] == "Transport._read_buffer"


def test_kombu_and_py_amqp_are_direct_dependencies_pinned_to_what_the_suite_runs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {re.split(r"[<>=!~ ]", dep, maxsplit=1)[0]: dep for dep in project["dependencies"]}
    for name in ("amqp", "kombu"):
        assert name in pins, f"{name} is not a direct dependency"
        low, high = re.findall(r">=([\d.]+),<([\d.]+)", pins[name])[0]
        installed = tuple(int(p) for p in importlib.metadata.version(name).split(".")[:2])
        assert tuple(int(p) for p in low.split(".")[:2]) <= installed < tuple(int(p) for p in high.split("."))
