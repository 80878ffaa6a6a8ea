"""A service's dead-letter queue on one transactional channel: get letters, move each once, or keep it.

Exactly once, without a ledger: a letter is got without an ack (`basic.get`), and its copy's publish
and the letter's ack go to the broker as one AMQP transaction (`tx.commit`), which the broker
applies whole or not at all. A replay killed before the commit leaves the letter in the queue (the
broker requeues what a closed channel held) and its copy nowhere; killed after, the copy is in the
service's queue and the letter gone. RabbitMQ keeps that promise when the client dies; a *broker*
failure during a commit that touches two queues may apply it to one of them only (RabbitMQ's
"Broker Semantics").

A letter looked at and left (`keep`) is never given back to the queue (a requeue): a quorum queue
counts each return as a delivery, and drops or dead-letters a letter past its delivery limit (20 by
default from RabbitMQ 4.0). It is moved to the end of its own queue instead, the same way: its
exact copy published there and the letter acked, in one transaction. A listing or replay goes
through every letter that was in the queue when it began, so the queue ends in its order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import amqp
from amqp.exceptions import AMQPError, ChannelError, NotFound
from kombu import Connection

from tchu_rpc._amqp.connection import Hosts, access_refused, is_amqp, open_connection, refusal
from tchu_rpc._worker.outgoing import carried, encodable
from tchu_rpc.config import Settings
from tchu_rpc.errors import AccessRefused, ConfigError, ConnectionLost, PublishFailed, TchuError
from tchu_rpc.log import mask_url
from tchu_rpc.topics import Kind
from tchu_rpc.topology import check_service

#: The queue each kind of message is replayed to, by its suffix.
LANES: dict[Kind, str] = {"call": "calls", "event": "events"}
#: Letters kept in one transaction, at most: what a killed listing leaves to be requeued.
_KEPT_PER_COMMIT = 100


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
        self._kept = 0  # letters kept since the last commit
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
        """Get the next letter without taking it (None when no letter is ready): `move` or `keep` it."""
        with translated(f"cannot read {self.name}"):
            return self._channel.basic_get(self.name, no_ack=False)

    def keep(self, letter: Any) -> None:
        """Put `letter` at the end of the queue as it is (`_kept`), committed with the next."""
        with translated(f"cannot put a letter back in {self.name}", PublishFailed):
            self._publish(letter.body, _kept(letter.properties), self.name)
            self._channel.basic_ack(letter.delivery_info["delivery_tag"])
            self._kept += 1
            if self._kept >= _KEPT_PER_COMMIT:
                self._commit()

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
        if queue in self._returned:
            # The broker routes in the commit and returns what it could not route (the queue was
            # deleted meanwhile): the letter's ack is committed too, so the letter goes back, as it
            # was, at the end of the queue (a kill at this very moment would lose it).
            self._put_back(letter)
            raise PublishFailed(f"{queue} is gone: the letter was put back in {self.name}")

    def release(self) -> None:
        """Commit the letters kept since the last commit."""
        if self._kept:
            with translated(f"cannot put letters back in {self.name}", PublishFailed):
                self._commit()

    def _publish(self, body: bytes, properties: dict[str, Any], queue: str) -> None:
        # RabbitMQ refuses a `user_id` other than the publisher's login: a letter's is the worker's.
        message = amqp.Message(body, **{**properties, "user_id": self._conn.userid})
        self._channel.basic_publish(message, exchange="", routing_key=queue, mandatory=True)

    def _commit(self) -> None:
        self._channel.tx_commit()
        self._kept = 0

    def _put_back(self, letter: Any) -> None:
        with translated(f"cannot put a returned letter back in {self.name}", PublishFailed):
            self._publish(letter.body, _kept(letter.properties), self.name)
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


def _kept(properties: dict[str, Any]) -> dict[str, Any]:
    """Return a letter's AMQP `properties` for its copy back in its queue.

    Its headers less what a copy never carries (`outgoing.carried`): the broker's delivery count (of
    the letter, not of its copy), and `CC`/`BCC`, which would send the copy to other queues as well.
    What the letter claims (topic, counts) is kept as it is: a replay trusts only a worker's letters.
    """
    headers = properties.get("application_headers")
    if not headers:
        return properties
    return {**properties, "application_headers": encodable(carried(headers, trusted=True))}


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
        denied = access_refused(exc, None)  # the broker's text names the user
        if denied is not None:
            raise AccessRefused(f"{what}: {denied}", operation=denied.operation) from exc
        raise refused(f"{what}: the broker refused: {exc}") from exc
    except (AMQPError, OSError) as exc:
        raise ConnectionLost(f"{what}: {exc or type(exc).__name__}") from exc
