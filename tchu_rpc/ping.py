"""`tchu-rpc ping TOPIC`: a call that its worker answers without running the handler, and its time."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from tchu_rpc import wire
from tchu_rpc._client.arguments import checked_timeout
from tchu_rpc.client import Client
from tchu_rpc.config import Settings
from tchu_rpc.errors import NoRoute


@dataclass(frozen=True, slots=True)
class Pong:
    """Who answered a ping (service, host, process id) and the round trip in milliseconds."""

    topic: str
    service: str
    host: str
    pid: int
    ms: float


def ping(client: Client, topic: str, timeout: float = 5.0) -> Pong:
    """Send a call to `topic` that the worker serving it answers at once, without running the handler.

    Raises:
        NoRoute: no queue is bound for `topic` (no worker serves it).
        CallTimeout: no answer within `timeout` (a worker is bound, but not consuming or stuck).
        RemoteError: the worker has no handler for it (`UnknownTopic`, a binding left over).
    """
    began = time.perf_counter()
    pending = client._submit(
        "call", topic, None, checked_timeout(timeout, timeout), False, extra={wire.HEADER_PING: 1}
    )
    answer: dict[str, Any] = client._wait(pending)
    ms = round((time.perf_counter() - began) * 1000, 3)
    return Pong(topic, str(answer.get("service")), str(answer.get("host")), int(answer.get("pid", 0)), ms)


def run(topic: str, settings: Settings, timeout: float, as_json: bool = False) -> int:
    """Ping `topic` and print the answer; return the exit code (1 when nothing serves it)."""
    with Client(settings=settings) as client:
        try:
            pong = ping(client, topic, timeout)
        except NoRoute:
            print(f"tchu-rpc ping: nothing is bound for {topic!r}: no worker serves it", file=sys.stderr)
            return 1
    if as_json:
        print(json.dumps(asdict(pong)))
    else:
        print(f"{topic}: answered by {pong.service} on {pong.host} (pid {pong.pid}) in {pong.ms:.1f} ms")
    return 0
