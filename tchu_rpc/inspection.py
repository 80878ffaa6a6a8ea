"""`tchu-rpc inspect SERVICE`: a service's queues as the broker sees them (depths, consumers, bindings).

Over AMQP a queue can only be looked up by name (a passive declare): the service's call, event and
dead-letter queues are. Its delay queues (named by its handlers' retry policies) and every queue's
bindings are listed by RabbitMQ's management API only (`management_url`, the plugin
`rabbitmq_management`).
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from amqp.exceptions import NotFound

from tchu_rpc._dead.queue import open_first, translated
from tchu_rpc.config import Settings
from tchu_rpc.errors import ConfigError, ConnectionLost
from tchu_rpc.log import mask_url
from tchu_rpc.topology import check_service

_TIMEOUT = 10.0


@dataclass(slots=True)
class QueueState:
    """One queue of a service: messages ready, consumers, and bindings (None: not known)."""

    name: str
    role: str  # calls, events, dead letters, delay
    exists: bool = True
    messages: int | None = None
    consumers: int | None = None
    bindings: list[str] | None = None


@dataclass(slots=True)
class ServiceState:
    """What the broker holds for a service, and what could not be seen (`notes`)."""

    service: str
    queues: list[QueueState] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def inspect_service(service: str, settings: Settings, management_url: str | None = None) -> ServiceState:
    """Return the state of `service`'s queues, from the management API if given, else over AMQP."""
    service = check_service(service)
    if management_url:
        return _from_management(service, settings, management_url)
    state = ServiceState(service, _from_amqp(service, settings))
    state.notes.append("delay queues and bindings: give --management-url (RabbitMQ's management API)")
    return state


def _roles(service: str) -> dict[str, str]:
    return {f"{service}.calls": "calls", f"{service}.events": "events", f"{service}.dead": "dead letters"}


def _from_amqp(service: str, settings: Settings) -> list[QueueState]:
    with translated(f"cannot open {mask_url(settings.broker_url)}"):
        conn, _ = open_first(settings)
    try:
        return [_declared(conn, name, role) for name, role in _roles(service).items()]
    finally:
        conn.release()


def _declared(conn: Any, name: str, role: str) -> QueueState:
    # A passive declare of a missing queue closes its channel (404): each gets its own.
    with translated(f"cannot look up {name}"):
        channel = conn.connection.channel()
        try:
            ok = channel.queue_declare(name, passive=True)
            return QueueState(name, role, messages=int(ok.message_count), consumers=int(ok.consumer_count))
        except NotFound:
            return QueueState(name, role, exists=False)
        finally:
            if channel.is_open:
                channel.close()


def _from_management(service: str, settings: Settings, url: str) -> ServiceState:
    api = _Api(url, settings.broker_url)
    roles = _roles(service)
    delay = re.compile(re.escape(service) + r"\.retry\.\d+m?s$")
    state = ServiceState(service)
    listed = api.get(f"queues/{api.vhost}?columns=name,messages_ready,consumers")
    found = {q["name"]: q for q in listed if q["name"] in roles or delay.match(q["name"])}
    for name in [*roles, *sorted(n for n in found if n not in roles)]:
        queue = found.get(name)
        if queue is None:
            state.queues.append(QueueState(name, roles[name], exists=False))
            continue
        bindings = api.get(f"queues/{api.vhost}/{urllib.parse.quote(name, safe='')}/bindings")
        state.queues.append(
            QueueState(
                name,
                roles.get(name, "delay"),
                messages=queue.get("messages_ready"),
                consumers=queue.get("consumers"),
                bindings=[f"{b['source']}:{b['routing_key']}" for b in bindings if b.get("source")],
            )
        )
    return state


class _Api:
    """RabbitMQ's management HTTP API, with the broker URL's login unless the API's URL has one."""

    def __init__(self, url: str, broker_url: str) -> None:
        api, broker = urllib.parse.urlsplit(url), urllib.parse.urlsplit(broker_url.split(";")[0])
        login = api if api.username else broker
        user = urllib.parse.unquote(login.username or "guest")
        password = urllib.parse.unquote(login.password or "guest")
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._base = urllib.parse.urlunsplit((api.scheme, api.hostname or "", api.path.rstrip("/"), "", ""))
        if api.port:
            self._base = self._base.replace(api.hostname or "", f"{api.hostname}:{api.port}", 1)
        vhost = urllib.parse.unquote(broker.path[1:]) if len(broker.path) > 1 else "/"
        self.vhost = urllib.parse.quote(vhost, safe="")

    def get(self, path: str) -> Any:
        request = urllib.request.Request(f"{self._base}/api/{path}", headers={"Authorization": self._auth})
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            said = f"{exc.code} {exc.reason}"
            raise ConfigError(f"management API {self._base}: {said} for /api/{path}") from exc
        except (OSError, ValueError) as exc:
            raise ConnectionLost(f"management API {self._base}: {exc}") from exc


def run(service: str, settings: Settings, management_url: str | None = None, as_json: bool = False) -> int:
    """Print the state of `service`'s queues; return the exit code (1 when it has no queue at all)."""
    state = inspect_service(service, settings, management_url)
    if as_json:
        print(json.dumps(asdict(state)))
    else:
        print(_text(state))
    return 0 if any(q.exists for q in state.queues) else 1


def _text(state: ServiceState) -> str:
    lines = [f"service {state.service}"]
    for q in state.queues:
        if not q.exists:
            lines.append(f"  {q.name:<40} {q.role:<13} (no such queue)")
            continue
        lines.append(f"  {q.name:<40} {q.role:<13} messages={q.messages} consumers={q.consumers}")
        lines.extend(f"      bound: {b}" for b in q.bindings or ())
    lines.extend(f"  note: {note}" for note in state.notes)
    return "\n".join(lines)
