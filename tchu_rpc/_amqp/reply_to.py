"""Which RabbitMQ node a direct reply-to address lives on, and which node a connection reached.

A direct reply-to address names the caller's channel process: `amq.rabbitmq.reply-to.` + base64
of an Erlang external term (a pid) + `.` + a key. The pid's node is the node the caller is connected
to (RabbitMQ 3.10 writes `reply@<hash of the node name>` there, earlier versions the node name).
RabbitMQ 3.10 closes the whole *connection* that publishes to an address whose node is not running
(541 INTERNAL_ERROR, `{case_clause,error}` in `rabbit_channel:deliver_reply/2`, seen here): a worker
must not answer a caller on another node over the connection it consumes requests on
(`_worker.relay`). An address on the node the worker's own connection reached is safe: that node
is running while the connection is up.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import socket
import struct
import time
import uuid
from typing import Any

import amqp

from tchu_rpc.topology import DIRECT_REPLY_TO

_PREFIX = DIRECT_REPLY_TO + "."
_PIDS = (88, 103)  # NEW_PID_EXT, PID_EXT
#: Atom tags of the external term format: tag -> size of the length field.
_ATOMS = {118: 2, 100: 2, 119: 1, 115: 1}  # ATOM_UTF8_EXT, ATOM_EXT, SMALL_ATOM_UTF8_EXT, SMALL_ATOM_EXT


def node_of(address: str) -> str | None:
    """Return the node part of direct reply-to `address`, or None if it is not one we can read."""
    if not address.startswith(_PREFIX):
        return None
    pid, _, _ = address[len(_PREFIX) :].partition(".")
    try:
        term = base64.b64decode(pid, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(term) < 4 or term[0] != 131 or term[1] not in _PIDS or term[2] not in _ATOMS:
        return None
    size = _ATOMS[term[2]]
    (length,) = struct.unpack_from(">H" if size == 2 else ">B", term, 3)
    atom = term[3 + size : 3 + size + length]
    if len(atom) != length:
        return None
    return atom.decode("utf-8", "replace")


def own_node(conn: Any, timeout: float) -> str | None:
    """Return the node part of direct reply-to addresses on the node kombu `conn` reached.

    Publishes a `mandatory` message that no queue takes, with `reply_to` set to direct reply-to,
    and reads the address the broker wrote into it from its `basic.return` (one round trip, once
    per connection, on a channel of its own; no queue and no permission beyond writing to the
    default exchange, which a worker has). None on a broker without direct reply-to, or if the
    return does not come within `timeout` seconds.
    """
    channel = conn.channel()
    returned: list[Any] = []
    try:
        channel.events["basic_return"].add(lambda exc, exchange, key, message: returned.append(message))
        channel.basic_consume(DIRECT_REPLY_TO, no_ack=True, callback=lambda message: None)
        nowhere = f"tchu.nowhere.{uuid.uuid4().hex}"
        message = amqp.Message(b"", reply_to=DIRECT_REPLY_TO)
        channel.basic_publish(message, exchange="", routing_key=nowhere, mandatory=True)
        deadline = time.monotonic() + timeout
        while not returned and time.monotonic() < deadline:
            with contextlib.suppress(socket.timeout):
                conn.drain_events(timeout=max(0.001, deadline - time.monotonic()))
    finally:
        channel.close()
    reply_to = returned[0].properties.get("reply_to") if returned else None
    return node_of(reply_to) if isinstance(reply_to, str) else None
