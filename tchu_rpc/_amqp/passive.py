"""Check that exchanges and queues exist without declaring them (`Settings.declare = "passive"`).

A passive declare needs no permission at all (RabbitMQ checks none for it), so a user without the
right to configure anything can still make sure that what it will use is there, and say at once,
by name, what is missing. Bindings cannot be checked this way (AMQP has no passive bind): they are
the operator's, part of the definitions document (`tchu_rpc.definitions`).
"""

from __future__ import annotations

from collections.abc import Iterable

from amqp.exceptions import NotFound
from kombu import Connection, Exchange, Queue

from tchu_rpc.errors import ConfigError

#: What to run to create what is missing.
HOW_TO_CREATE = (
    "declare='passive' only checks that they exist: an administrator creates them (`tchu-rpc topology "
    "MODULE... --queue SERVICE > definitions.json` then `rabbitmqctl import_definitions definitions.json`), "
    "or one worker runs once with declare='declare' (TCHU_RPC_DECLARE=declare) as a user that may configure"
)


def missing(conn: Connection, exchanges: Iterable[Exchange], queues: Iterable[Queue]) -> list[str]:
    """Return what of `exchanges` and `queues` does not exist, as "exchange 'x'" and "queue 'y'"."""
    channel = conn.channel()
    gone: list[str] = []
    wanted = [("exchange", e.name) for e in exchanges] + [("queue", q.name) for q in queues]
    for kind, name in wanted:
        try:
            if kind == "exchange":
                channel.exchange_declare(exchange=name, type="topic", passive=True)
            else:
                channel.queue_declare(queue=name, passive=True)
        except NotFound:
            gone.append(f"{kind} {name!r}")
            channel = conn.channel()  # the 404 closed the channel
    channel.close()
    return gone


def check(conn: Connection, exchanges: Iterable[Exchange], queues: Iterable[Queue], who: str) -> None:
    """Raise `ConfigError` naming everything of `exchanges` and `queues` that does not exist."""
    gone = missing(conn, exchanges, queues)
    if gone:
        raise ConfigError(f"{who}: missing on the broker: {', '.join(gone)}; {HOW_TO_CREATE}")
