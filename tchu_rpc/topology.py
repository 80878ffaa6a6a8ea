"""Names and kombu declarations: the two exchanges, a service's call, event and dead-letter queues.

A service `users` has up to three durable queues:

- `users.calls`  bound to the calls exchange (`tchu_rpc`) with the service's call patterns;
- `users.events` bound to the events exchange (`tchu_events`) with its event patterns;
- `users.dead`   where messages that cannot be handled are kept, with the reason in a header.

and, if some of its event handlers have a `Retry`, one delay queue per retry delay, `users.retry.200ms`,
`users.retry.4s`, ...: a failed handler's copy of the event waits there (the queue's `x-message-ttl`
is its delay, a copy's own `expiration` may be shorter) and the broker dead-letters it back into
`users.events` through the default exchange (`_worker.retries`).

Calls and events have separate queues (lanes) so that a backlog of events never delays a call.
Exchanges are durable topic exchanges without arguments, the same as existing deployments declare.
Bindings are only ever added, never removed: a worker binds its patterns again on every connection
(`_worker.consumers` sends them without waiting for each), so a pattern dropped from the code stays
bound until someone unbinds it.

`service_topology` lists all of a service's exchanges, queues and bindings: what a worker declares
(or, with `Settings.declare = "passive"`, only checks), and what `tchu_rpc.definitions` writes out
as a RabbitMQ definitions document. One list, so the two cannot drift apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from kombu import Exchange, Queue, binding

from tchu_rpc.config import Settings
from tchu_rpc.errors import ConfigError
from tchu_rpc.registry import Kind, Registry

DIRECT_REPLY_TO: Final = "amq.rabbitmq.reply-to"
#: Prefix of a client's private reply queue (brokers without direct reply-to).
REPLY_QUEUE_PREFIX: Final = "tchu.reply."


def events_exchange(settings: Settings) -> Exchange:
    """Return the durable topic exchange that carries events."""
    return Exchange(settings.events_exchange, "topic", durable=True)


def calls_exchange(settings: Settings) -> Exchange:
    """Return the durable topic exchange that carries RPC requests."""
    return Exchange(settings.calls_exchange, "topic", durable=True)


def check_service(service: str) -> str:
    """Return `service` if it can name queues, else raise `ConfigError`."""
    if not service or len(service.encode()) > 200 or service.startswith("amq."):
        raise ConfigError(f"service queue name {service!r} must be 1-200 bytes and not start with 'amq.'")
    return service


def call_queue(
    service: str, settings: Settings, patterns: tuple[str, ...], event_patterns: tuple[str, ...] = ()
) -> Queue:
    """Return the service's call queue, bound to the calls exchange with `patterns`.

    With `accept_tchu_tchu` it is bound with them on the events exchange too: tchu-tchu sends its
    calls there (`_worker.legacy`); but not with the service's `event_patterns`, which bind the
    event queue there already: its copy runs the call handlers (`legacy.event`), and a second copy
    would run them twice.
    """
    queue = _bound_queue(f"{service}.calls", calls_exchange(settings), patterns, settings)
    if settings.accept_tchu_tchu and not settings.legacy_queue:  # else bound to the legacy queue
        events = events_exchange(settings)
        queue.bindings |= {binding(events, routing_key=p) for p in patterns if p not in event_patterns}
    return queue


def event_queue(service: str, settings: Settings, patterns: tuple[str, ...]) -> Queue:
    """Return the service's event queue, bound to the events exchange with `patterns`.

    With `legacy_queue` it is bound with nothing (`legacy_queue` takes the patterns): two queues
    bound with the same pattern would each get a copy of every event, handled twice.
    """
    patterns = () if settings.legacy_queue else patterns
    return _bound_queue(f"{service}.events", events_exchange(settings), patterns, settings)


def legacy_queue(settings: Settings, patterns: tuple[str, ...]) -> Queue:
    """Return the tchu-tchu service queue `settings.legacy_queue`, bound to the events exchange.

    It is declared as tchu-tchu's `setup_celery_queue` declares it (durable, not auto-delete, no
    arguments), but only passively (`_worker.consumers`): it must exist, and a queue that exists with
    other arguments is taken as it is rather than refused with 406. `patterns` (the service's event
    and call patterns) are bound in addition to the bindings tchu-tchu made, which stay.
    """
    name = settings.legacy_queue
    if not name:
        raise ConfigError("legacy_queue is not set")
    exchange = events_exchange(settings)
    bindings = [binding(exchange, routing_key=p) for p in patterns]
    return Queue(name, bindings=bindings, durable=True, auto_delete=False)


def lane_queue(kind: Kind, service: str, settings: Settings, registry: Registry) -> Queue:
    """Return the service's queue of `kind`: its call queue or its event queue, bound with its patterns."""
    if kind == "call":
        return call_queue(service, settings, registry.patterns("call"), registry.patterns("event"))
    return event_queue(service, settings, registry.patterns("event"))


def dead_letter_queue(service: str, settings: Settings) -> Queue:
    """Return the service's dead-letter queue (filled through the default exchange)."""
    return Queue(f"{service}.dead", durable=True, auto_delete=False, queue_arguments=_arguments(settings))


def retry_queue_name(service: str, delay_ms: int) -> str:
    """Return the name of `service`'s delay queue for retries waiting up to `delay_ms` ms."""
    whole, rest = divmod(delay_ms, 1000)
    return f"{service}.retry.{whole}s" if not rest else f"{service}.retry.{delay_ms}ms"


def retry_queue(service: str, settings: Settings, delay_ms: int) -> Queue:
    """Return a delay queue: it keeps a message up to `delay_ms` ms, then moves it to the event queue.

    Nobody consumes it: the broker dead-letters each message whose time is up into
    `<service>.events` through the default exchange (so that the worker can trust the retry's
    headers, see `_worker.dispatch`). A quorum delay queue dead-letters at least once (the message
    stays until the event queue has taken it), which needs `x-overflow: reject-publish`.
    """
    arguments: dict[str, Any] = {
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": f"{service}.events",
    }
    if settings.queue_type == "quorum":
        arguments.update(
            {
                "x-queue-type": "quorum",
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
        )
    name = retry_queue_name(service, delay_ms)
    return Queue(name, durable=True, auto_delete=False, queue_arguments=arguments)


def reply_queue() -> Queue:
    """Return a private reply queue for brokers without direct reply-to."""
    return Queue(f"{REPLY_QUEUE_PREFIX}{uuid.uuid4().hex}", exclusive=True, auto_delete=True, durable=False)


def lanes(registry: Registry, settings: Settings) -> list[Kind]:
    """Return the lanes a worker opens, calls first: its registry's kinds, and events for a legacy queue."""
    kinds: set[Kind] = set(registry.kinds())
    if settings.legacy_queue:
        kinds.add("event")  # the legacy queue is consumed on the events lane
    return sorted(kinds)


def service_legacy_queue(settings: Settings, registry: Registry) -> list[Queue]:
    """Return the tchu-tchu queue the service takes over, bound with both kinds' patterns (or none)."""
    if not settings.legacy_queue:
        return []
    # tchu-tchu sends events and calls alike to the events exchange: both kinds' patterns.
    patterns = tuple(sorted({*registry.patterns("event"), *registry.patterns("call")}))
    return [legacy_queue(settings, patterns)]


@dataclass(frozen=True, slots=True)
class ServiceTopology:
    """Everything a service needs on the broker, as kombu declarations."""

    lanes: tuple[Queue, ...]  # its call and event queues, with their bindings
    legacy: tuple[Queue, ...]  # a tchu-tchu queue it takes over: never declared, only checked
    dead: Queue
    retries: tuple[Queue, ...]  # delay queues, after the event queue they dead-letter to

    def queues(self) -> list[Queue]:
        """Return every queue, in the order they are declared."""
        return [*self.lanes, *self.legacy, self.dead, *self.retries]

    def exchanges(self) -> list[Exchange]:
        """Return the exchanges the queues are bound to, once each."""
        found = {b.exchange.name: b.exchange for q in self.queues() for b in sorted_bindings(q)}
        return list(found.values())


def service_topology(
    service: str, settings: Settings, registry: Registry, delays: Sequence[int]
) -> ServiceTopology:
    """Return what `service` needs: lane queues, legacy queue, dead-letter queue, `delays`' delay queues."""
    return ServiceTopology(
        lanes=tuple(lane_queue(kind, service, settings, registry) for kind in lanes(registry, settings)),
        legacy=tuple(service_legacy_queue(settings, registry)),
        dead=dead_letter_queue(service, settings),
        retries=tuple(retry_queue(service, settings, delay) for delay in delays),
    )


def sorted_bindings(queue: Queue) -> list[Any]:
    """Return `queue`'s bindings by exchange and pattern (kombu keeps them in a set)."""
    return sorted(queue.bindings, key=lambda b: (b.exchange.name, b.routing_key))


#: How every caller's reply address begins: direct reply-to, or a client's own reply queue.
REPLY_ADDRESSES: Final = (DIRECT_REPLY_TO, REPLY_QUEUE_PREFIX)


def _bound_queue(name: str, exchange: Exchange, patterns: tuple[str, ...], settings: Settings) -> Queue:
    bindings: list[Any] = [binding(exchange, routing_key=p) for p in patterns]
    return Queue(
        name, bindings=bindings, durable=True, auto_delete=False, queue_arguments=_arguments(settings)
    )


def _arguments(settings: Settings) -> dict[str, Any] | None:
    # Classic queues get no arguments, so they match queues that existing deployments declared.
    return {"x-queue-type": "quorum"} if settings.queue_type == "quorum" else None
