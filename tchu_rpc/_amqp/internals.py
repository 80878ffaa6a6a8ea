"""The py-amqp internals the fast path relies on, and the check that they are all there.

The fast path (`Settings.fast_path`) reads and writes frames below py-amqp (`frames`, `publisher`)
and settles calls as transactions whose `commit-ok` py-amqp has no public hook for. Each internal it
touches is named here; `missing` tells which of them a live connection lacks, so that an upgrade of
py-amqp that moves one makes the library fall back to py-amqp's and kombu's public reads and writes
(with one log line saying why) instead of failing in the middle of a call. A unit test names the
same list against the installed py-amqp, so such an upgrade also fails loudly in CI.
"""

from __future__ import annotations

import inspect
from typing import Any

from amqp import spec

from tchu_rpc.log import get_logger

logger = get_logger(__name__)

#: (what, attribute) pairs: the object a name lives on, and the name.
CONNECTION = ("on_inbound_frame", "bytes_sent", "frame_max", "_transport")
TRANSPORT = ("_read_buffer", "write")
CHANNEL = ("_callbacks", "channel_id")

_ABSENT = object()
_said: set[str] = set()  # reasons logged already: once per process each


def missing(connection: Any) -> list[str]:
    """Return the internals the fast path needs that py-amqp `connection` lacks.

    Channels are checked on the connection, py-amqp's channel 0: the same class of theirs.
    """
    channel = connection
    gone = [f"Connection.{name}" for name in CONNECTION if not _has(connection, name)]
    transport = getattr(connection, "_transport", None)
    gone += [f"Transport.{name}" for name in TRANSPORT if not _has(transport, name)]
    gone += [f"Channel.{name}" for name in CHANNEL if not _has(channel, name)]
    if not hasattr(getattr(spec, "Tx", None), "CommitOk"):
        gone.append("spec.Tx.CommitOk")
    return gone


def _has(obj: Any, name: str) -> bool:
    # Static: py-amqp's properties (`transport`, `on_inbound_frame`) connect when read too early.
    return obj is not None and inspect.getattr_static(obj, name, _ABSENT) is not _ABSENT


def usable(connection: Any) -> bool:
    """Tell whether the fast path can run on py-amqp `connection`; log once why not."""
    gone = missing(connection)
    if gone:
        reason = ", ".join(gone)
        if reason not in _said:
            _said.add(reason)
            logger.warning(
                "fast_path_disabled",
                missing=reason,
                hint="this py-amqp lacks internals the fast path uses; public reads and writes only",
            )
    return not gone
