"""`tchu-rpc inspect SERVICE`: the service's queues from the broker, over AMQP or the management API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tchu_rpc import Registry, cli
from tchu_rpc.inspection import QueueState, inspect_service
from tchu_rpc.testing import TchuFactory


def test_inspect_shows_depths_and_consumers_over_amqp(tchu: TchuFactory) -> None:
    # Given a worker with a call and an event handler, and two events it cannot take yet
    registry = Registry()
    registry.subscribe("rpc.ins.get")(print)
    gate = threading.Event()
    registry.subscribe("ins.happened")(lambda data: gate.wait(10))
    worker = tchu.worker(registry, event_prefetch=1)
    client = tchu.client()
    for n in range(3):
        client.publish("ins.happened", {"n": n})
    try:
        # When the service is inspected
        state = inspect_service(worker.service, tchu.settings)
    finally:
        gate.set()
    # Then each of its queues is shown with its consumers and the events waiting
    calls, events, dead = state.queues
    assert calls == QueueState(f"{worker.service}.calls", "calls", messages=0, consumers=1)
    assert (events.name, events.consumers) == (f"{worker.service}.events", 1)
    assert events.messages is not None and 1 <= events.messages <= 2  # one is with the handler
    assert dead == QueueState(f"{worker.service}.dead", "dead letters", messages=0, consumers=0)
    assert state.notes == ["delay queues and bindings: give --management-url (RabbitMQ's management API)"]


def test_inspect_command_fails_for_a_service_without_queues(
    tchu: TchuFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "configure", lambda level="info", json=False: None)
    assert cli.main(["inspect", tchu.service("nothing"), "--broker", tchu.broker_url, "--json"]) == 1
    shown = json.loads(capsys.readouterr().out)
    assert [q["exists"] for q in shown["queues"]] == [False, False, False]


class _Api(BaseHTTPRequestHandler):
    """RabbitMQ's management API as it answers for a service `svc` on the vhost `/`."""

    def do_GET(self) -> None:
        assert self.headers["Authorization"] == "Basic dXNlcjpzZWNyZXQ="  # user:secret, from the broker URL
        answers: dict[str, Any] = {
            "/api/queues/%2F?columns=name,messages_ready,consumers": [
                {"name": "svc.calls", "messages_ready": 0, "consumers": 2},
                {"name": "svc.events", "messages_ready": 5, "consumers": 2},
                {"name": "svc.retry.30s", "messages_ready": 1, "consumers": 0},
                {"name": "other.calls", "messages_ready": 9, "consumers": 1},
            ],
            "/api/queues/%2F/svc.calls/bindings": [
                {"source": "", "routing_key": "svc.calls"},
                {"source": "tchu_rpc", "routing_key": "rpc.svc.#"},
            ],
            "/api/queues/%2F/svc.events/bindings": [{"source": "tchu_events", "routing_key": "order.*"}],
            "/api/queues/%2F/svc.retry.30s/bindings": [],
        }
        body = json.dumps(answers[self.path]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_inspect_lists_delay_queues_and_bindings_from_the_management_api(
    tchu: TchuFactory, api_url: str
) -> None:
    settings = tchu.settings.replace(broker_url="amqp://user:secret@127.0.0.1:5672//")
    state = inspect_service("svc", settings, management_url=api_url)
    assert state.queues == [
        QueueState("svc.calls", "calls", messages=0, consumers=2, bindings=["tchu_rpc:rpc.svc.#"]),
        QueueState("svc.events", "events", messages=5, consumers=2, bindings=["tchu_events:order.*"]),
        QueueState("svc.dead", "dead letters", exists=False),
        QueueState("svc.retry.30s", "delay", messages=1, consumers=0, bindings=[]),
    ]
    assert state.notes == []
