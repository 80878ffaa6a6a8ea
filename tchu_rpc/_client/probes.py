"""A topic's first message on a connection goes out on a channel of its own: a refusal stays there.

RabbitMQ answers a publish that the user's permissions (or topic permissions) refuse by closing the
channel it came on with 403 ACCESS_REFUSED. On the client's request channel that would end every call
in flight on it, whoever made them: direct reply-to delivers a reply only on the channel its request
left from, and drops it once that channel is gone. So a topic not yet *proven* on this connection
(published and confirmed) is published on a probe channel, with a reply consumer of its own, that
carries nothing else until that call or publish has settled. Once the broker confirmed it (it checks
permissions before it routes), the topic is proven and its later messages take the request channel:
the hot path costs one set lookup more. A refused probe fails its own call or publish, at once, with
`AccessRefused`, and its channel is let go; no other call is touched and nothing is retried.

A proven topic refused later (permissions changed while connected) still closes the request channel;
the client then drops the connection, as for any channel error, and fails that topic's call with
`AccessRefused` (`Client._lost`). Topics are proven again on each connection.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Final

from amqp import spec
from amqp.exceptions import ChannelError, error_for_code
from kombu import Connection

from tchu_rpc._amqp.connection import access_refused
from tchu_rpc._amqp.publisher import OnConfirm, OnReturn, Publisher
from tchu_rpc._client.inflight import Pending
from tchu_rpc.errors import PublishFailed, TchuError
from tchu_rpc.log import get_logger

logger = get_logger(__name__)

#: Idle probe channels kept for the next unproven topics; more are closed.
_KEEP: Final = 4
#: Proven topics remembered per kind; past this many, they are all forgotten (and proven again).
_PROVEN_MAX: Final = 4096


class Probe:
    """A channel that carries one unsettled call or publish of an unproven topic."""

    __slots__ = ("answered", "channel", "closed", "message_id", "publisher", "released")

    def __init__(self, channel: Any, publisher: Publisher) -> None:
        self.channel = channel
        self.publisher = publisher
        self.message_id = ""
        self.closed = False
        self.answered = False  # the broker confirmed (or nacked) what it carries
        self.released = False  # what it carries settled before the broker answered for it


class Probes:
    """The proven topics of one connection, and its probe channels.

    `consume(channel)` starts the reply consumer on a new probe channel; `refused(message_id, error)`
    fails what a probe carried when the broker closed its channel. Used on the thread serving the
    connection only.
    """

    def __init__(
        self,
        conn: Connection,
        *,
        on_return: OnReturn,
        consume: Callable[[Any], None],
        refused: Callable[[str, TchuError], None],
        fast: bool,
        user: str | None,
    ) -> None:
        self.proven: dict[str, set[str]] = {"call": set(), "event": set()}
        self.gone = False  # its connection is: what is released then is dropped
        self._conn = conn
        self._on_return = on_return
        self._consume = consume
        self._refused = refused
        self._fast = fast
        self._user = user
        self._free: list[Probe] = []

    def take(
        self, message_id: str, pending: Pending, on_confirm: OnConfirm
    ) -> tuple[Probe, Publisher, OnConfirm]:
        """Return a probe for `pending`, its publisher, and the confirm callback that proves the topic."""
        probe = self._free.pop() if self._free else self._open()
        probe.message_id, probe.answered, probe.released = message_id, False, False
        return (
            probe,
            probe.publisher,
            partial(self._confirmed, probe, pending.kind, pending.topic, on_confirm),
        )

    def release(self, probe: Probe) -> None:
        """Take `probe` back once what it carried has settled: keep it for the next, or close it."""
        if self.gone or probe.closed:
            return
        probe.message_id = ""  # a refusal from now on fails nobody
        if not probe.answered:
            # Kept once the broker has answered for what it carried (`_confirmed`): until then, a
            # refusal of that message could still close the channel, and must not fail the next one.
            probe.released = True
            return
        self._keep(probe)

    def _keep(self, probe: Probe) -> None:
        self._free.append(probe)
        while len(self._free) > _KEEP:  # a command of the loop's: it may wait for the close-ok
            extra = self._free.pop(0)
            extra.closed = True
            try:
                extra.channel.close()
            except Exception as exc:  # the connection fails: the loop notices on its next turn
                logger.debug("probe_close_failed", error=str(exc))

    def _open(self) -> Probe:
        channel = self._conn.channel()
        probe = Probe(channel, Publisher(self._conn, channel, on_return=self._on_return, fast=self._fast))
        self._consume(channel)
        # In place of py-amqp's handler, which reopens the channel and raises: that would end the turn
        # of the thread reading the connection, and the loop would drop the connection.
        channel._callbacks[spec.Channel.Close] = partial(self._closed_by_broker, probe)
        return probe

    def _confirmed(self, probe: Probe, kind: str, topic: str, on_confirm: OnConfirm, ok: bool) -> None:
        probe.answered = True
        if ok:
            proven = self.proven[kind]
            if len(proven) >= _PROVEN_MAX:
                proven.clear()
            proven.add(topic)
        on_confirm(ok)
        if probe.released and not (self.gone or probe.closed):
            probe.released = False
            self._free.append(probe)  # not `_keep`: no waiting for a close-ok inside a read

    def _closed_by_broker(
        self, probe: Probe, reply_code: int, reply_text: str, class_id: int, method_id: int
    ) -> None:
        channel = probe.channel
        probe.closed = True
        channel.send_method(spec.Channel.CloseOk)
        channel.collect()
        cause = error_for_code(reply_code, reply_text, (class_id, method_id), ChannelError)
        error: TchuError | None = access_refused(cause, self._user)
        if error is None:
            error = PublishFailed(f"the broker closed the channel: {cause}")
        error.__cause__ = cause
        logger.warning("publish_refused", error=str(error), error_type=type(error).__name__)
        if probe.message_id:
            self._refused(probe.message_id, error)
