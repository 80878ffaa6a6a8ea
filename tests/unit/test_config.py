"""Settings: defaults, `from_env` parsing and precedence, validation, immutability."""

from __future__ import annotations

import dataclasses
import math

import pytest

from tchu_rpc.config import DEFAULT_BROKER_URL, Settings
from tchu_rpc.errors import ConfigError
from tchu_rpc.testing import capture_logs


def test_defaults() -> None:
    settings = Settings()
    assert settings.broker_url == DEFAULT_BROKER_URL
    assert (settings.events_exchange, settings.calls_exchange) == ("tchu_events", "tchu_rpc")
    assert settings.serializer == "json"
    assert settings.call_timeout == 30.0
    assert settings.publish_timeout == 10.0
    assert settings.call_concurrency == settings.event_concurrency == 1
    assert settings.event_prefetch == 10
    assert settings.max_message_bytes == 8 * 1024 * 1024


def test_from_env_with_an_empty_mapping_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_from_env_parses_floats_ints_and_strings() -> None:
    settings = Settings.from_env(
        {
            "TCHU_RPC_CALL_TIMEOUT": "2.5",
            "TCHU_RPC_EVENT_PREFETCH": "3",
            "TCHU_RPC_BROKER_URL": "amqp://u:p@rabbit:5672/vh",
            "TCHU_RPC_SERIALIZER": "msgpack",
        }
    )
    assert settings.call_timeout == 2.5
    assert isinstance(settings.call_timeout, float)
    assert settings.event_prefetch == 3
    assert isinstance(settings.event_prefetch, int)
    assert settings.broker_url == "amqp://u:p@rabbit:5672/vh"
    assert settings.serializer == "msgpack"


def test_from_env_accepts_an_int_for_a_float_setting() -> None:
    assert Settings.from_env({"TCHU_RPC_HEARTBEAT": "0"}).heartbeat == 0.0


def test_from_env_ignores_empty_and_unrelated_variables() -> None:
    env = {"TCHU_RPC_CALL_TIMEOUT": "", "CALL_TIMEOUT": "1", "TCHU_RPC_NO_SUCH_SETTING": "x"}
    assert Settings.from_env(env) == Settings()


def test_from_env_warns_about_an_unknown_variable_naming_the_nearest_known_one() -> None:
    env = {"TCHU_RPC_CALL_TIMOUT": "5", "TCHU_RPC_ZZZ": "1", "TCHU_RPC_TCHU_TCHU_FORMAT": "false"}
    with capture_logs() as logs:
        assert Settings.from_env(env) == Settings()
    warned = [(e["variable"], e["nearest"]) for e in logs if e["event"] == "unknown_variable"]
    assert warned == [("TCHU_RPC_CALL_TIMOUT", "TCHU_RPC_CALL_TIMEOUT"), ("TCHU_RPC_ZZZ", None)]
    assert {e["log_level"] for e in logs} == {"warning"}


def test_from_env_is_silent_about_known_variables() -> None:
    with capture_logs() as logs:
        Settings.from_env({"TCHU_RPC_CALL_TIMEOUT": "5", "TCHU_RPC_SUBSCRIBERS_MODULE": "handlers"})
    assert logs == []


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCHU_RPC_CALL_CONCURRENCY", "7")
    assert Settings.from_env().call_concurrency == 7


def test_explicit_overrides_win_over_the_environment() -> None:
    env = {"TCHU_RPC_CALL_TIMEOUT": "2.5", "TCHU_RPC_BROKER_URL": "amqp://env//"}
    settings = Settings.from_env(env, call_timeout=9.0, broker_url="amqp://explicit//")
    assert (settings.call_timeout, settings.broker_url) == (9.0, "amqp://explicit//")


def test_none_overrides_are_ignored() -> None:
    env = {"TCHU_RPC_CALL_TIMEOUT": "2.5"}
    settings = Settings.from_env(env, call_timeout=None, broker_url=None, event_prefetch=None)
    assert settings.call_timeout == 2.5
    assert settings.broker_url == DEFAULT_BROKER_URL
    assert settings.event_prefetch == 10


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("TCHU_RPC_CALL_TIMEOUT", "soon"),
        ("TCHU_RPC_EVENT_PREFETCH", "2.5"),
        ("TCHU_RPC_MAX_MESSAGE_BYTES", "1MB"),
        ("TCHU_RPC_HEARTBEAT", "thirty"),
    ],
)
def test_bad_numbers_raise_config_error_naming_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=variable) as info:
        Settings.from_env({variable: raw})
    assert repr(raw) in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.parametrize(
    "changes",
    [
        {"call_timeout": -1.0},
        {"call_timeout": 0},
        {"publish_timeout": -0.5},
        {"connect_timeout": 0},
        {"max_message_bytes": 0},
        {"event_prefetch": 0},
        {"call_concurrency": 0},
        {"event_concurrency": -1},
        {"heartbeat": -1.0},
        {"shutdown_grace": -1.0},
        {"serializer": "pickle"},
        {"broker_url": ""},
        {"calls_exchange": ""},
        {"calls_exchange": "amq.topic"},
        {"events_exchange": "e" * 256},
    ],
    ids=lambda c: next(f"{k}={str(v)[:20]!r}" for k, v in c.items()),
)
def test_invalid_values_raise_config_error(changes: dict[str, object]) -> None:
    name = next(iter(changes))
    with pytest.raises(ConfigError, match=name):
        Settings(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("TCHU_RPC_CALL_TIMEOUT", "-1"), ("TCHU_RPC_EVENT_PREFETCH", "0"), ("TCHU_RPC_SERIALIZER", "xml")],
)
def test_invalid_values_from_the_environment_raise_config_error(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError):
        Settings.from_env({variable: raw})


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Settings(event_prefetch=0)


@pytest.mark.parametrize("name", ["call_timeout", "publish_timeout", "connect_timeout"])
def test_nan_timeouts_raise_config_error(name: str) -> None:
    with pytest.raises(ConfigError):
        Settings(**{name: math.nan})  # type: ignore[arg-type]


@pytest.mark.parametrize("changes", [{"reconnect_delay": 0.0}, {"reconnect_delay": -1.0}])
def test_non_positive_reconnect_delay_raises_config_error(changes: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        Settings(**changes)  # type: ignore[arg-type]


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.call_timeout = 1.0  # type: ignore[misc]


def test_settings_have_no_instance_dict() -> None:
    with pytest.raises((AttributeError, TypeError)):
        Settings().not_a_setting = 1  # type: ignore[attr-defined]


def test_settings_are_hashable_and_compare_by_value() -> None:
    assert Settings(call_timeout=2.0) == Settings(call_timeout=2.0)
    assert hash(Settings(call_timeout=2.0)) == hash(Settings(call_timeout=2.0))


def test_replace_returns_a_changed_copy() -> None:
    original = Settings()
    changed = original.replace(call_timeout=1.5, serializer="msgpack")
    assert (changed.call_timeout, changed.serializer) == (1.5, "msgpack")
    assert (original.call_timeout, original.serializer) == (30.0, "json")
    assert changed.replace(call_timeout=30.0, serializer="json") == original


def test_replace_validates_the_copy() -> None:
    with pytest.raises(ConfigError, match="event_prefetch"):
        Settings().replace(event_prefetch=0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("Yes", True), ("on", True), ("0", False), ("FALSE", False), ("no", False)],
)
def test_from_env_parses_booleans(raw: str, expected: bool) -> None:
    assert Settings.from_env({"TCHU_RPC_TLS_VERIFY": raw}).tls_verify is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "tru", "y es"])
def test_from_env_rejects_a_bad_boolean_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="TCHU_RPC_TLS_VERIFY") as info:
        Settings.from_env({"TCHU_RPC_TLS_VERIFY": raw})
    assert repr(raw) in str(info.value)


def test_from_env_reads_tls_settings() -> None:
    settings = Settings.from_env(
        {
            "TCHU_RPC_TLS_CA_FILE": "/etc/ca.pem",
            "TCHU_RPC_TLS_CERT_FILE": "/etc/client.pem",
            "TCHU_RPC_TLS_KEY_FILE": "/etc/client.key",
            "TCHU_RPC_TLS_SERVER_HOSTNAME": "rabbit.internal",
        }
    )
    assert (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file) == (
        "/etc/ca.pem",
        "/etc/client.pem",
        "/etc/client.key",
    )
    assert settings.tls_server_hostname == "rabbit.internal"
    assert settings.tls_verify is True


def test_optional_limits_read_none_from_the_environment() -> None:
    env = {"TCHU_RPC_HANDLER_TIME_LIMIT": "none", "TCHU_RPC_BROKER_CONSUMER_TIMEOUT": "None"}
    settings = Settings.from_env(env)
    assert settings.handler_time_limit is None
    assert settings.broker_consumer_timeout is None


def test_optional_limits_read_numbers_from_the_environment() -> None:
    settings = Settings.from_env({"TCHU_RPC_HANDLER_TIME_LIMIT": "60", "TCHU_RPC_REPLY_CACHE_TTL": "90.5"})
    assert settings.handler_time_limit == 60.0
    assert settings.reply_cache_ttl == 90.5


def test_time_limit_defaults_below_the_broker_consumer_timeout() -> None:
    settings = Settings()
    assert settings.handler_time_limit is not None
    assert settings.broker_consumer_timeout is not None
    assert settings.handler_time_limit < settings.broker_consumer_timeout


@pytest.mark.parametrize(
    "changes",
    [
        {"handler_time_limit": 0},
        {"handler_time_limit": -1.0},
        {"handler_time_limit": math.inf},
        {"broker_consumer_timeout": 0},
        {"reply_cache_ttl": 0},
    ],
    ids=lambda c: next(f"{k}={v!r}" for k, v in c.items()),
)
def test_invalid_limits_raise_config_error(changes: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=next(iter(changes))):
        Settings(**changes)  # type: ignore[arg-type]


def test_a_tls_key_without_its_certificate_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="tls_key_file"):
        Settings(tls_key_file="/etc/client.key")


def test_a_tls_server_hostname_without_verification_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="tls_server_hostname"):
        Settings(tls_server_hostname="rabbit", tls_verify=False)


@pytest.mark.parametrize(
    ("changes", "tls"),
    [
        ({}, False),
        ({"broker_url": "amqps://u:p@rabbit:5671//"}, True),
        ({"broker_url": "amqp://a//;amqps://b//"}, True),
        ({"tls_ca_file": "/etc/ca.pem"}, True),
        ({"tls_verify": False}, True),
        ({"tls_server_hostname": "rabbit"}, True),
    ],
)
def test_tls_is_on_for_amqps_urls_or_any_tls_setting(changes: dict[str, object], tls: bool) -> None:
    assert Settings(**changes).tls is tls  # type: ignore[arg-type]


def test_settings_repr_masks_the_broker_password() -> None:
    text = repr(Settings(broker_url="amqps://svc:hunter2-secret@rabbit:5671/vh", tls_ca_file="/ca.pem"))
    assert "hunter2-secret" not in text
    assert "svc:***@rabbit:5671" in text
    assert "tls_ca_file='/ca.pem'" in text
