"""A service's topology as a RabbitMQ definitions document, and the least permissions of its users.

`document()` writes what `topology.service_topology` lists, the list a worker declares from (or,
with `declare="passive"`, checks), as the JSON that `rabbitmqctl import_definitions` and the
management API's definitions import take: both exchanges, the service's queues with their arguments
(call and event queues, dead-letter queue, retry delay queues, a tchu-tchu queue it takes over), and
their bindings. Each object names its vhost, as RabbitMQ's import wants. The document also carries,
under the key `tchu_rpc` (ignored by the import), the permissions of the service's two roles:

- worker: configure nothing; write the default exchange (replies, progress, dead letters, retry
  copies all go through it); read the queues it consumes. No topic permission is needed.
- caller: configure nothing; write both exchanges, and on each a topic permission that allows only
  the service's patterns (its calls on the calls exchange, its events on the events exchange).

With `worker_user` or `caller_user`, they are in the document's own `permissions` and
`topic_permissions` too, which the import applies to those users (they must exist). Passive declares
need no permission at all, and a worker in passive mode binds nothing: the bindings are here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kombu import Exchange, Queue
from kombu.utils.url import parse_url

from tchu_rpc import topology
from tchu_rpc._amqp.connection import Hosts
from tchu_rpc._worker import retries
from tchu_rpc.config import Settings
from tchu_rpc.registry import Registry
from tchu_rpc.topics import words

#: A regular expression that no resource name matches but the empty one, which names nothing.
NOTHING = "^$"
DEFAULT_EXCHANGE = "amq.default"


@dataclass(frozen=True, slots=True)
class TopicPermission:
    """What a user may publish (`write`) and bind (`read`) on one topic exchange, by routing key."""

    exchange: str
    write: str
    read: str = NOTHING


@dataclass(frozen=True, slots=True)
class Permission:
    """A user's permission regexps in the vhost, and its topic permissions."""

    configure: str
    write: str
    read: str
    topics: tuple[TopicPermission, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Return the permission as plain data (JSON)."""
        topics = [{"exchange": t.exchange, "write": t.write, "read": t.read} for t in self.topics]
        return {"configure": self.configure, "write": self.write, "read": self.read, "topics": topics}


def worker_permission(plans: Iterable[topology.ServiceTopology]) -> Permission:
    """Return the least a worker needs with passive declares: publish to the default exchange, consume."""
    consumed = [queue.name for plan in plans for queue in [*plan.lanes, *plan.legacy]]
    return Permission(configure=NOTHING, write=names_regex([DEFAULT_EXCHANGE]), read=names_regex(consumed))


def caller_permission(settings: Settings, registries: Iterable[Registry]) -> Permission:
    """Return the least a caller-only user needs: publish the services' calls and events, nothing else."""
    exchanges = [settings.calls_exchange, settings.events_exchange]
    registries = list(registries)
    calls = [p for registry in registries for p in registry.patterns("call")]
    events = [p for registry in registries for p in registry.patterns("event")]
    topics = (
        TopicPermission(settings.calls_exchange, patterns_regex(calls)),
        TopicPermission(settings.events_exchange, patterns_regex(events)),
    )
    return Permission(configure=NOTHING, write=names_regex(exchanges), read=NOTHING, topics=topics)


def service_plan(service: str, registry: Registry, settings: Settings) -> topology.ServiceTopology:
    """Return what `service` serving `registry` needs (what its worker declares, or checks)."""
    delays = retries.delays(registry.handlers)
    return topology.service_topology(topology.check_service(service), settings, registry, delays)


def document(
    services: Mapping[str, Registry],
    settings: Settings,
    vhost: str,
    *,
    worker_user: str | None = None,
    caller_user: str | None = None,
) -> dict[str, Any]:
    """Return the definitions document of `services` (name -> the registry it serves) in `vhost`."""
    plans = [service_plan(service, registry, settings) for service, registry in services.items()]
    queues = [queue for plan in plans for queue in plan.queues()]
    exchanges = [topology.calls_exchange(settings), topology.events_exchange(settings)]
    roles = {"worker": worker_permission(plans), "caller": caller_permission(settings, services.values())}
    users = {"worker": worker_user, "caller": caller_user}
    granted = [(user, roles[role]) for role, user in users.items() if user]
    return {
        "tchu_rpc": {
            "services": list(services),
            "vhost": vhost,
            "roles": {role: permission.as_dict() for role, permission in roles.items()},
        },
        "exchanges": [_exchange(exchange, vhost) for exchange in exchanges],
        "queues": [_queue(queue, vhost) for queue in queues],
        "bindings": [_binding(b, queue, vhost) for queue in queues for b in topology.sorted_bindings(queue)],
        "permissions": [_permission(user, vhost, permission) for user, permission in granted],
        "topic_permissions": [
            {"user": user, "vhost": vhost, "exchange": t.exchange, "write": t.write, "read": t.read}
            for user, permission in granted
            for t in permission.topics
        ],
    }


def vhost_of(settings: Settings) -> str:
    """Return the vhost of the first broker URL of `settings` ("/" when it names none)."""
    try:
        vhost = parse_url(Hosts(settings.broker_url).current).get("virtual_host")
    except Exception:
        return "/"
    return str(vhost) if vhost else "/"


def render(
    services: Mapping[str, Registry],
    settings: Settings,
    vhost: str | None = None,
    *,
    worker_user: str | None = None,
    caller_user: str | None = None,
) -> str:
    """Return the definitions document as JSON text (`tchu-rpc topology`); `vhost` defaults to the URL's."""
    vhost = vhost or vhost_of(settings)
    doc = document(services, settings, vhost, worker_user=worker_user, caller_user=caller_user)
    return json.dumps(doc, indent=2)


def names_regex(names: Iterable[str]) -> str:
    """Return a regexp that matches exactly `names` (resource names), or nothing."""
    escaped = sorted({re.escape(name) for name in names})
    return f"^({'|'.join(escaped)})$" if escaped else NOTHING


def patterns_regex(patterns: Iterable[str]) -> str:
    """Return a regexp that matches the routing keys that one of the topic `patterns` matches.

    RabbitMQ matches a topic permission's regexp against a published message's routing key; the
    regexp matches exactly the keys the patterns bind, as the broker's topic matching does (`*` one
    word, `#` zero or more, the empty key has no words).
    """
    alternatives = sorted({_pattern_regex(pattern) for pattern in patterns})
    return f"^(?:{'|'.join(alternatives)})$" if alternatives else NOTHING


def _pattern_regex(pattern: str) -> str:
    parts: list[str] = []
    previous = None
    for word in words(pattern):
        if word == "#" and previous == "#":
            continue  # `#.#` matches what `#` matches
        parts.append(word)
        previous = word
    if parts == ["#"]:
        return ".*"
    # The empty key has no words: a pattern of one `*` (and `#`s) must not match it, as `[^.]*` would.
    lone = [word for word in parts if word != "#"]
    regex = "(?!$)" if len(lone) == 1 and lone[0] in ("*", "") else ""
    joined = False  # whether the next word needs a `.` before it
    for index, word in enumerate(parts):
        if word == "#":
            regex += r"(?:[^.]*\.)*" if index == 0 else r"(?:\.[^.]*)*"
            joined = index != 0
            continue
        regex += (r"\." if joined else "") + ("[^.]*" if word == "*" else re.escape(word))
        joined = True
    return regex


def _exchange(exchange: Exchange, vhost: str) -> dict[str, Any]:
    return {
        "name": exchange.name,
        "vhost": vhost,
        "type": exchange.type,
        "durable": bool(exchange.durable),
        "auto_delete": bool(exchange.auto_delete),
        "internal": False,
        "arguments": dict(exchange.arguments or {}),
    }


def _queue(queue: Queue, vhost: str) -> dict[str, Any]:
    return {
        "name": queue.name,
        "vhost": vhost,
        "durable": bool(queue.durable),
        "auto_delete": bool(queue.auto_delete),
        "arguments": dict(queue.queue_arguments or {}),
    }


def _binding(binding: Any, queue: Queue, vhost: str) -> dict[str, Any]:
    return {
        "source": binding.exchange.name,
        "vhost": vhost,
        "destination": queue.name,
        "destination_type": "queue",
        "routing_key": binding.routing_key,
        "arguments": {},
    }


def _permission(user: str, vhost: str, permission: Permission) -> dict[str, Any]:
    rights = {"configure": permission.configure, "write": permission.write, "read": permission.read}
    return {"user": user, "vhost": vhost, **rights}
