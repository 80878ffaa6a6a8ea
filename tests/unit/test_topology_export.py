"""The definitions document and permissions of a service (`tchu_rpc.definitions`, `tchu-rpc topology`)."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from amqp import exceptions as amqp_errors

from tchu_rpc import cli, definitions, demo, topology
from tchu_rpc._amqp.connection import access_refused, login
from tchu_rpc.config import Settings
from tchu_rpc.errors import AccessRefused, ConfigError, ConnectionLost
from tchu_rpc.registry import Registry, default_registry
from tchu_rpc.retry import Retry
from tchu_rpc.topics import topic_matches

SETTINGS = Settings(events_exchange="ev", calls_exchange="rpc")


def _registry(retry: bool = False) -> Registry:
    registry = Registry()
    registry.subscribe("rpc.users.get")(lambda data: data)
    registry.subscribe("rpc.users.*")(lambda data: data)
    policy = Retry(attempts=3, first_delay=0.5, backoff=2.0, jitter=False) if retry else None
    registry.subscribe("user.#", retry=policy)(lambda data: None)
    return registry


def _doc(registry: Registry | None = None, settings: Settings = SETTINGS, **users: Any) -> dict[str, Any]:
    return definitions.document({"users": registry or _registry()}, settings, "v1", **users)


# -- topic patterns as permission regexps -----------------------------------------------------------
_WORDS = ["a", "b", "", "*", "#"]
_PATTERNS = sorted({".".join(p) for n in (1, 2, 3) for p in itertools.product(_WORDS, repeat=n)} - {""})
_KEYS = [
    "",
    *sorted({".".join(k) for n in (1, 2, 3, 4) for k in itertools.product(["a", "b", ""], repeat=n)}),
]


@pytest.mark.parametrize("pattern", _PATTERNS)
def test_pattern_regexp_matches_exactly_the_keys_the_broker_routes(pattern: str) -> None:
    # Given the permission regexp of one binding pattern (RabbitMQ matches it with PCRE, as `re` does here)
    regex = re.compile(definitions.patterns_regex([pattern]))

    # Then it matches a routing key exactly when the topic exchange would route that key by the pattern
    wrong = [key for key in _KEYS if bool(regex.match(key)) != topic_matches(pattern, key)]
    assert wrong == []


def test_patterns_regexp_of_several_patterns_matches_any_of_them() -> None:
    regex = re.compile(definitions.patterns_regex(["rpc.users.*", "rpc.admin.#"]))
    assert regex.match("rpc.users.get") and regex.match("rpc.admin") and regex.match("rpc.admin.a.b")
    assert not regex.match("rpc.billing.charge") and not regex.match("rpc.users.get.x")


def test_no_patterns_allow_no_routing_key_but_the_empty_one() -> None:
    assert definitions.patterns_regex([]) == "^$"


def test_names_regexp_matches_exactly_the_names_escaped() -> None:
    regex = re.compile(definitions.names_regex(["users.calls", "amq.default"]))
    assert regex.match("users.calls") and regex.match("amq.default")
    assert not regex.match("usersxcalls") and not regex.match("users.calls.x") and not regex.match("amq")


# -- the document ------------------------------------------------------------------------------------
def test_document_has_both_exchanges_as_declared() -> None:
    exchanges = _doc()["exchanges"]
    assert exchanges == [
        {"name": n, "vhost": "v1", "type": "topic", "durable": True, "auto_delete": False, "internal": False}
        | {"arguments": {}}
        for n in ("rpc", "ev")
    ]


def test_document_queues_are_those_a_worker_declares_with_their_arguments() -> None:
    # Given a service with calls, events with a retry policy, on quorum queues
    settings = SETTINGS.replace(queue_type="quorum")
    registry = _registry(retry=True)
    doc = _doc(registry, settings)

    # Then its queues are the lane, dead-letter and delay queues of `service_topology`, argument for argument
    plan = topology.service_topology("users", settings, registry, [500, 1000])
    assert [(q["name"], q["arguments"]) for q in doc["queues"]] == [
        (q.name, q.queue_arguments or {}) for q in plan.queues()
    ]
    names = [q["name"] for q in doc["queues"]]
    assert names == ["users.calls", "users.events", "users.dead", "users.retry.500ms", "users.retry.1s"]
    delay = doc["queues"][3]["arguments"]
    assert delay["x-message-ttl"] == 500 and delay["x-dead-letter-routing-key"] == "users.events"
    assert all(q["durable"] and not q["auto_delete"] and q["vhost"] == "v1" for q in doc["queues"])


def test_document_binds_each_pattern_of_each_lane() -> None:
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in _doc()["bindings"]}
    assert bindings == {
        ("rpc", "users.calls", "rpc.users.get"),
        ("rpc", "users.calls", "rpc.users.*"),
        ("ev", "users.events", "user.#"),
    }


def test_document_of_a_legacy_queue_binds_both_kinds_to_it() -> None:
    doc = _doc(settings=SETTINGS.replace(legacy_queue="old_service", accept_tchu_tchu=True))
    legacy = {b["routing_key"] for b in doc["bindings"] if b["destination"] == "old_service"}
    assert legacy == {"rpc.users.get", "rpc.users.*", "user.#"}
    assert "old_service" in [q["name"] for q in doc["queues"]]


def test_worker_role_configures_nothing_writes_the_default_exchange_and_reads_its_queues() -> None:
    worker = _doc()["tchu_rpc"]["roles"]["worker"]
    assert worker["configure"] == "^$"
    assert re.fullmatch(worker["write"], "amq.default") and not re.fullmatch(worker["write"], "rpc")
    assert {q for q in ("users.calls", "users.events", "users.dead") if re.fullmatch(worker["read"], q)} == {
        "users.calls",
        "users.events",
    }
    assert worker["topics"] == []


def test_caller_role_writes_both_exchanges_and_only_the_services_topics() -> None:
    caller = _doc()["tchu_rpc"]["roles"]["caller"]
    assert (caller["configure"], caller["read"]) == ("^$", "^$")
    assert re.fullmatch(caller["write"], "rpc") and re.fullmatch(caller["write"], "ev")
    topics = {t["exchange"]: re.compile(t["write"]) for t in caller["topics"]}
    assert topics["rpc"].match("rpc.users.get") and not topics["rpc"].match("rpc.billing.charge")
    assert topics["ev"].match("user.created") and not topics["ev"].match("order.created")


def test_users_named_get_the_roles_permissions_in_the_document() -> None:
    doc = _doc(worker_user="w", caller_user="c")
    roles = doc["tchu_rpc"]["roles"]
    assert doc["permissions"] == [
        {"user": "w", "vhost": "v1", **{k: roles["worker"][k] for k in ("configure", "write", "read")}},
        {"user": "c", "vhost": "v1", **{k: roles["caller"][k] for k in ("configure", "write", "read")}},
    ]
    assert [(t["user"], t["exchange"]) for t in doc["topic_permissions"]] == [("c", "rpc"), ("c", "ev")]


def test_document_without_users_grants_nothing() -> None:
    doc = _doc()
    assert doc["permissions"] == [] and doc["topic_permissions"] == []


def test_vhost_defaults_to_the_broker_urls() -> None:
    assert definitions.vhost_of(Settings(broker_url="amqp://u:p@h:5672/prod")) == "prod"
    assert definitions.vhost_of(Settings(broker_url="amqp://u:p@h:5672//")) == "/"


def test_demo_document_covers_both_demo_services() -> None:
    doc = json.loads(demo.definitions("v1"))
    assert doc["tchu_rpc"]["services"] == list(demo.SERVICES)
    assert {q["name"] for q in doc["queues"]} == {
        "tchu_demo.users.calls",
        "tchu_demo.users.events",
        "tchu_demo.users.dead",
        "tchu_demo.mailer.events",
        "tchu_demo.mailer.dead",
    }


# -- the command --------------------------------------------------------------------------------------
@pytest.fixture
def handlers_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    saved = default_registry.handlers
    for name in [n for n in os.environ if n.startswith("TCHU_RPC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(cli, "configure", lambda level="info", json=False: None)
    path = tmp_path / "export_handlers.py"
    path.write_text(
        "from tchu_rpc import subscribe\n\n@subscribe('rpc.export.get')\ndef get(data):\n    return data\n"
    )
    yield str(path)
    default_registry.clear()
    for handler in saved:
        default_registry.add(handler.pattern, handler.fn, kind=handler.kind)
    sys.modules.pop("export_handlers", None)


def test_topology_command_prints_the_document(
    handlers_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["topology", handlers_module, "--queue", "export", "--vhost", "v9", "--worker-user", "w"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert ("rpc.export.get", "export.calls") in {
        (b["routing_key"], b["destination"]) for b in doc["bindings"]
    }
    assert {q["vhost"] for q in doc["queues"]} == {"v9"}
    assert doc["permissions"][0]["user"] == "w"


def test_declare_flags_parse() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["worker", "m", "--queue", "q", "--passive-declare"]).declare == "passive"
    assert parser.parse_args(["worker", "m", "--queue", "q", "--declare", "declare"]).declare == "declare"
    assert parser.parse_args(["call", "rpc.a", "1", "--declare", "passive"]).declare == "passive"
    assert parser.parse_args(["worker", "m", "--queue", "q"]).declare is None


# -- the setting and the error ------------------------------------------------------------------------
def test_declare_setting_reads_the_environment_and_refuses_other_words() -> None:
    assert Settings().declare == "declare"
    assert Settings.from_env({"TCHU_RPC_DECLARE": "passive"}).declare == "passive"
    with pytest.raises(ConfigError, match="declare must be 'declare' or 'passive'"):
        Settings(declare="check")  # type: ignore[arg-type]


def test_a_403_becomes_access_refused_naming_operation_resource_and_user() -> None:
    # Given py-amqp's 403 for a publish, wrapped as a lost connection would be
    text = "ACCESS_REFUSED - access to topic 'rpc.billing.charge' in exchange 'rpc' in vhost 'v' refused "
    text += "for user 'u'"
    cause = amqp_errors.AccessRefused(text, (60, 40))
    wrapped = ConnectionLost("cannot connect")
    wrapped.__cause__ = cause

    # When it is translated
    refused = access_refused(wrapped, "u")

    # Then it is an AccessRefused (a PermissionError, not a ConnectionError) that says what and who
    assert isinstance(refused, AccessRefused) and isinstance(refused, PermissionError)
    assert not isinstance(refused, ConnectionError)
    assert (refused.operation, refused.user) == ("Basic.publish", "u")
    assert "rpc.billing.charge" in str(refused) and "'u'" in str(refused)
    copy = pickle.loads(pickle.dumps(refused))
    assert (str(copy), copy.operation, copy.user) == (str(refused), "Basic.publish", "u")


def test_other_errors_are_not_access_refused() -> None:
    assert access_refused(amqp_errors.NotFound("no queue", (50, 10)), "u") is None
    assert access_refused(ConnectionLost("gone"), "u") is None
    assert access_refused(None, "u") is None


def test_login_is_the_urls_user_and_never_its_password() -> None:
    assert login("amqp://alice:secret@h:5672/v") == "alice"
    assert login("amqps://h:5671/v") is None


def test_demo_definitions_command_prints_the_demo_document(
    handlers_module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["demo", "--definitions", "--vhost", "demo"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tchu_rpc"]["services"] == list(demo.SERVICES)
    assert {e["vhost"] for e in doc["exchanges"]} == {"demo"}
