"""Publish on one channel and call back once the broker has taken the messages.

On AMQP a channel is in one of two modes. In confirm mode (`publish`) confirms are pipelined:
`publish` returns at once and `on_confirm(True/False)` runs on the I/O thread when the broker's
`basic.ack`/`basic.nack` arrives, so many messages can await their confirms together. In transaction
mode (`transact`) a group of publishes and acks goes out with a `tx.commit` in one write: the broker
applies all of them or none, so an ack can never take effect without its reply, and no round trip
separates the reply from the ack. RabbitMQ refuses any method on a channel whose commit it is still
completing, so while one commit awaits its `commit-ok` later groups wait, then go out together with
one commit. On a kombu virtual transport (`memory://`) there are neither and a publish counts as done.

On AMQP, publishes, acks and commits are encoded here (`frames`) and written on py-amqp's transport:
kombu's `Producer.publish` wraps each message once more, py-amqp's `basic_publish` first tries a
zero-timeout read, and py-amqp's generic frame writer does several times the work for these fixed
layouts (benchmarks/RESULTS.md). py-amqp still parses and dispatches what arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import amqp
from amqp import spec
from kombu import Connection, Producer

from tchu_rpc._amqp.connection import is_amqp
from tchu_rpc._amqp.frames import ack_frame, commit_frame, publish_frames, requeue_frame

OnConfirm = Callable[[bool], None]
#: Called with (routing key, exchange, reply text, AMQP properties) for a returned mandatory message.
OnReturn = Callable[[str, str, str, dict[str, Any]], None]
#: A group of writes on the channel (publishes, acks) and what to run once they are committed.
_Group = tuple[Callable[[], None], Callable[[], None]]


class Publisher:
    """Publish messages on a channel and track the broker's confirms or commits.

    With `transactional`, the channel is in transaction mode (AMQP only): use `transact`, and
    `publish` commits each message by itself. Without `fast`, frames go out through py-amqp's public
    `basic_publish` and `basic_ack`, and the channel confirms instead of committing (py-amqp has no
    public hook for a commit-ok it did not wait for).
    """

    def __init__(
        self,
        conn: Connection,
        channel: Any,
        on_return: OnReturn,
        transactional: bool = False,
        fast: bool = True,
    ) -> None:
        self.channel = channel
        amqp_conn = is_amqp(conn)
        # Only a virtual transport publishes through kombu (no confirms, no transactions there).
        self._virtual = None if amqp_conn else Producer(channel, auto_declare=False)
        self._fast = fast
        self.transactional = amqp_conn and transactional and fast
        self._confirming = amqp_conn and not self.transactional
        self._seq = 0
        self._waiting: dict[int, OnConfirm] = {}
        #: The sequence number of the last publish the broker confirmed (acked) on this channel.
        self.last_acked = 0
        self._on_return = on_return
        self._committing: list[Callable[[], None]] | None = None  # the commit awaiting its commit-ok
        self._queued: list[_Group] = []
        self._between: list[Callable[[], None]] = []  # to run once no commit is under way
        self._batch: list[bytes] | None = None  # the frames of the transaction being written
        if amqp_conn:
            channel.events["basic_return"].add(self._returned)
        if self._confirming:
            channel.confirm_select()
            channel.events["basic_ack"].add(self._acked)
            channel.events["basic_nack"].add(self._nacked)
        elif self.transactional:
            channel.tx_select()
            # py-amqp has no public hook for an unawaited commit-ok; it dispatches by method.
            channel._callbacks[spec.Tx.CommitOk] = self._committed

    def publish(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        on_confirm: OnConfirm | None = None,
        **properties: Any,
    ) -> None:
        """Publish `body`; `on_confirm` runs once the broker answers for it.

        `properties` are kombu's `Producer.publish` arguments: `mandatory`, `headers`,
        `expiration` (seconds) and the AMQP message properties.
        """
        if self._virtual is not None:
            self._virtual.publish(body, exchange=exchange, routing_key=routing_key, **properties)
            _confirm(on_confirm)
            return
        if self.transactional and self._batch is None:
            send = {"body": body, "exchange": exchange, "routing_key": routing_key, **properties}
            self.transact(partial(self.publish, **send), partial(_confirm, on_confirm))
            return
        mandatory = properties.pop("mandatory", False)
        expiration = properties.pop("expiration", None)
        if expiration is not None:
            properties["expiration"] = str(int(expiration * 1000))
        properties["application_headers"] = properties.pop("headers", None)
        channel = self.channel
        if self._fast:
            frame_max = channel.connection.frame_max
            frames = publish_frames(
                channel.channel_id, frame_max, exchange, routing_key, mandatory, body, properties
            )
            self._write(frames)
        else:
            message = amqp.Message(body, **{k: v for k, v in properties.items() if v is not None})
            channel.basic_publish(message, exchange=exchange, routing_key=routing_key, mandatory=mandatory)
        if self._confirming:
            self._seq += 1
            if on_confirm is not None:
                self._waiting[self._seq] = on_confirm

    def transact(self, writes: Callable[[], None], on_committed: Callable[[], None]) -> None:
        """Run `writes` (publishes and acks on this channel) as one transaction.

        `on_committed` runs once the broker committed it (at once without transactions). If the
        channel fails first, it never runs: the broker applied none of the writes.
        """
        if not self.transactional:
            writes()
            on_committed()
            return
        if self._committing is not None or self._batch is not None:
            self._queued.append((writes, on_committed))
            return
        self._commit([(writes, on_committed)])

    def ack(self, message: Any) -> None:
        """Ack `message`, a delivery on this publisher's channel (with its transaction's frames)."""
        if self._virtual is not None or not self._fast:
            message.ack()
        else:
            self._write(ack_frame(message.channel.channel_id, message.delivery_tag))

    def requeue(self, message: Any) -> None:
        """Give `message`, a delivery on this channel, back to its queue (with its transaction's frames).

        On a transactional channel it takes effect at a commit, as an ack does: `transact` it.
        """
        if self._virtual is not None or not self._fast:
            message.reject(requeue=True)
        else:
            self._write(requeue_frame(message.channel.channel_id, message.delivery_tag))

    def _commit(self, groups: list[_Group]) -> None:
        # The publishes, acks and commit go out in one write; nothing if one fails (the loop then
        # drops the connection, and the broker redelivers).
        self._batch = batch = []
        try:
            for writes, _ in groups:
                writes()
        finally:
            self._batch = None
        batch.append(commit_frame(self.channel.channel_id))
        self._write(b"".join(batch))
        self._committing = [on_committed for _, on_committed in groups]

    def _write(self, frames: bytes) -> None:
        if self._batch is not None:
            self._batch.append(frames)
            return
        connection = self.channel.connection
        connection.transport.write(frames)
        connection.bytes_sent += 1  # for py-amqp's heartbeats: the connection is not idle

    def between_commits(self, command: Callable[[], None]) -> None:
        """Run `command` (a method outside transactions, such as `basic.cancel`) between commits."""
        if self._committing is None and self._batch is None:
            command()
        else:
            self._between.append(command)

    def _committed(self, *args: Any) -> None:
        done, self._committing = self._committing or [], None
        between, self._between = self._between, []
        for command in between:
            command()  # may wait for its answer, and commit what arrives meanwhile
        queued, self._queued = self._queued, []
        if queued and self._committing is None:
            self._commit(queued)
        else:
            self._queued[:0] = queued
        for on_committed in done:
            on_committed()

    def _acked(self, delivery_tag: int, multiple: bool) -> None:
        self.last_acked = delivery_tag
        self._settle(delivery_tag, multiple, True)

    def _nacked(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, False)

    def _settle(self, tag: int, multiple: bool, ok: bool) -> None:
        waiting = self._waiting
        tags = [t for t in waiting if t <= tag] if multiple else [tag]
        for t in tags:
            callback = waiting.pop(t, None)
            if callback is not None:
                callback(ok)

    def _returned(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        self._on_return(routing_key, exchange, str(getattr(exc, "reply_text", exc)), message.properties)


def _confirm(on_confirm: OnConfirm | None) -> None:
    if on_confirm is not None:
        on_confirm(True)
