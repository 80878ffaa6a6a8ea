"""Publish on one channel in confirm mode and call back when the broker confirms or refuses.

Confirms are pipelined: `publish` returns at once and `on_confirm(True/False)` runs on the I/O thread
when the broker's `basic.ack`/`basic.nack` arrives, so many messages can await their confirms together.
On a kombu virtual transport (`memory://`) there are no confirms and a publish counts as confirmed.
On AMQP, messages go to py-amqp's `basic_publish` directly: kombu's `Producer.publish` wraps each
message once more, which cost about 15 us of CPU per message here (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import amqp
from kombu import Connection, Producer

from tchu_rpc.connection import is_amqp

OnConfirm = Callable[[bool], None]
#: Called with (routing key, exchange, reply text, AMQP properties) for a returned mandatory message.
OnReturn = Callable[[str, str, str, dict[str, Any]], None]


class Publisher:
    """Publish messages on a channel and track the broker's confirms."""

    def __init__(self, conn: Connection, channel: Any, on_return: OnReturn) -> None:
        self.channel = channel
        self.producer = Producer(channel, auto_declare=False)
        self.confirming = is_amqp(conn)
        self._seq = 0
        self._waiting: dict[int, OnConfirm] = {}
        self._on_return = on_return
        if self.confirming:
            channel.confirm_select()
            channel.events["basic_ack"].add(self._acked)
            channel.events["basic_nack"].add(self._nacked)
            channel.events["basic_return"].add(self._returned)

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
        if not self.confirming:
            self.producer.publish(body, exchange=exchange, routing_key=routing_key, **properties)
            if on_confirm is not None:
                on_confirm(True)
            return
        mandatory = properties.pop("mandatory", False)
        expiration = properties.pop("expiration", None)
        if expiration is not None:
            properties["expiration"] = str(int(expiration * 1000))
        headers = properties.pop("headers", None)
        message = amqp.Message(body, application_headers=headers, **properties)
        self.channel.basic_publish(message, exchange=exchange, routing_key=routing_key, mandatory=mandatory)
        self._seq += 1
        if on_confirm is not None:
            self._waiting[self._seq] = on_confirm

    @property
    def unconfirmed(self) -> int:
        """Count the publishes still waiting for their confirm."""
        return len(self._waiting)

    def _acked(self, delivery_tag: int, multiple: bool) -> None:
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
