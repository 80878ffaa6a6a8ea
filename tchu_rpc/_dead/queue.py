"""A service's dead-letter queue on one transactional channel: get letters, move each once, put back.

Exactly once, without a ledger: a letter is got without an ack (`basic.get`), and its copy's publish
and the letter's ack go to the broker as one AMQP transaction (`tx.commit`), which the broker
applies whole or not at all. A replay killed before the commit leaves the letter in the queue (the
broker requeues what a closed channel held) and its copy nowhere; killed after, the copy is in the
service's queue and the letter gone. RabbitMQ keeps that promise when the client dies; a *broker*
failure during a commit that touches two queues may apply it to one of them only (RabbitMQ's
"Broker Semantics"). Letters got and not moved are held unacked, so that the next `basic.get` reaches
the next letter, and are requeued together at the end (`release`): on a classic queue a requeued
message goes back to its place, so reading the queue does not reorder it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import amqp
from amqp.exceptions import AMQPError, ChannelError, NotFound
from kombu import Connection

from tchu_rpc._amqp.connection import Hosts, is_amqp, open_connection, refusal
from tchu_rpc.config import Settings
from tchu_rpc.errors import ConfigError, ConnectionLost, PublishFailed, TchuError
from tchu_rpc.log import mask_url
from tchu_rpc.topics import Kind
from tchu_rpc.topology import check_service

#: The queue each kind of message is replayed to, by its suffix.
LANES: dict[Kind, str] = {"call": "calls", "event": "events"}


class DeadQueue:
    """The dead-letter queue `<service>.dead`, read and emptied on one transactional channel."""

    def __init__(self, service: str, settings: Settings) -> None:
        self.service = check_service(service)
        self.name = f"{service}.dead"
        with translated(f"cannot open {mask_url(settings.broker_url)}"):
            self._conn, url = open_first(settings)
        self._where = mask_url(url)
        if not is_amqp(self._conn):
            self._conn.release()
            raise ConfigError(f"dead letters need an AMQP broker, not {self._where}")
        self._returned: list[str] = []  # routing keys of copies the broker could not route
        #: Delivery tags of letters got and not moved, in queue order (a dict: moves delete at once).
        self._held: dict[int, None] = {}
        try:
            with translated(f"cannot open a channel on {self._where}"):
                self._channel = self._conn.connection.channel()
                self._channel.auto_decode = False  # the body as it came: its copy must be the same bytes
                self._channel.events["basic_return"].add(self._on_return)
                self._channel.tx_select()
        except TchuError:
            self.close()
            raise

    def __enter__(self) -> DeadQueue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; the broker requeues every letter still held."""
        try:
            self._conn.release()
        except Exception:
            pass  # gone already: what it held is requeued either way

    def depth(self) -> int:
        """Return how many letters the queue holds ready; raise `ConfigError` if it does not exist."""
        depth = self._depth(self.name)
        if depth is None:
            raise ConfigError(
                f"service {self.service!r} has no dead-letter queue {self.name!r} on {self._where} "
                "(a worker of the service declares it when it starts: check the name and the vhost)"
            )
        return depth

    def lanes(self) -> tuple[Kind, ...]:
        """Return the kinds of message the service has a queue for (`<service>.calls`, `.events`)."""
        found = {kind: self._depth(f"{self.service}.{suffix}") for kind, suffix in LANES.items()}
        return tuple(kind for kind, depth in found.items() if depth is not None)

    def get(self) -> Any | None:
        """Get the next letter without taking it (None when no letter is ready); it stays held."""
        with translated(f"cannot read {self.name}"):
            letter = self._channel.basic_get(self.name, no_ack=False)
        if letter is not None:
            self._held[letter.delivery_info["delivery_tag"]] = None
        return letter

    def move(self, letter: Any, kind: Kind, body: bytes, properties: dict[str, Any]) -> None:
        """Publish a copy of `letter` to the service's queue of `kind` and ack it, in one transaction.

        Raises:
            PublishFailed: the broker refused the transaction (the letter stays), or could not route
                the copy (it is put back in the dead-letter queue).
        """
        queue = f"{self.service}.{LANES[kind]}"
        self._returned.clear()
        with translated(f"cannot move a letter from {self.name} to {queue}", PublishFailed):
            self._publish(body, properties, queue)
            tag = letter.delivery_info["delivery_tag"]
            self._channel.basic_ack(tag)
            self._commit()
        del self._held[tag]
        if self._returned:
            # The broker routes in the commit and returns what it could not route (the queue was
            # deleted meanwhile): the letter's ack is committed too, so the letter goes back, as it
            # was, at the end of the queue (a kill at this very moment would lose it).
            self._put_back(letter)
            raise PublishFailed(f"{queue} is gone: the letter was put back in {self.name}")

    def release(self) -> None:
        """Requeue every letter still held, in its place."""
        with translated(f"cannot put letters back in {self.name}"):
            for tag in self._held:  # py-amqp has no basic.nack to requeue them all in one
                self._channel.basic_reject(tag, requeue=True)
            self._commit()  # rejects are transactional on RabbitMQ
        self._held.clear()

    def _publish(self, body: bytes, properties: dict[str, Any], queue: str) -> None:
        message = amqp.Message(body, **properties)
        self._channel.basic_publish(message, exchange="", routing_key=queue, mandatory=True)

    def _commit(self) -> None:
        self._channel.tx_commit()

    def _put_back(self, letter: Any) -> None:
        with translated(f"cannot put a returned letter back in {self.name}", PublishFailed):
            self._publish(letter.body, letter.properties, self.name)
            self._commit()

    def _depth(self, queue: str) -> int | None:
        # A passive declare of a missing queue closes its channel (404): each gets its own.
        with translated(f"cannot look up {queue}"):
            channel = self._conn.connection.channel()
            try:
                return int(channel.queue_declare(queue, passive=True).message_count)
            except NotFound:
                return None
            finally:
                channel.close()

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self._returned.append(routing_key)


def open_first(settings: Settings) -> tuple[Connection, str]:
    """Return a connection to the first node of the failover list that takes one, and its URL.

    Each URL is tried once, in the order the I/O loop tries them (`failover_strategy`): one node
    down must not make the command fail. A refusal no other node changes (a login, a vhost) ends it.
    """
    hosts = Hosts(settings.broker_url, settings.failover_strategy)
    failures: list[str] = []
    last: ConnectionLost | None = None
    for _ in hosts.urls:
        url = hosts.take()
        try:
            return open_connection(settings.replace(broker_url=url)), url
        except ConnectionLost as exc:
            if refusal(exc):
                raise
            failures.append(str(exc))
            last = exc
    raise ConnectionLost("; ".join(failures)) from last


@contextmanager
def translated(what: str, refused: type[TchuError] = ConnectionLost) -> Iterator[None]:
    """Turn py-amqp's and the socket's errors into ours: `refused` for a channel error."""
    try:
        yield
    except TchuError:
        raise  # ours already (a `ConnectionLost` is also an `OSError`)
    except ChannelError as exc:
        raise refused(f"{what}: the broker refused: {exc}") from exc
    except (AMQPError, OSError) as exc:
        raise ConnectionLost(f"{what}: {exc or type(exc).__name__}") from exc
