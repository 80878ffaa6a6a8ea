"""Settings: one frozen object with every knob; `Settings.from_env()` reads `TCHU_RPC_*` variables."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from tchu_rpc.errors import ConfigError

ENV_PREFIX = "TCHU_RPC_"
_MAX_TIMEOUT = 315_360_000.0  # RabbitMQ's longest message expiration, in seconds
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"

Serializer = Literal["json", "msgpack"]
QueueType = Literal["classic", "quorum"]
FailoverStrategy = Literal["round-robin", "shuffle"]
Declare = Literal["declare", "passive"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of clients and workers, with defaults fit for production.

    Each field can be set from the environment as `TCHU_RPC_<FIELD>` (for example
    `TCHU_RPC_BROKER_URL`, `TCHU_RPC_CALL_TIMEOUT=5`) through `Settings.from_env()`.
    """

    broker_url: str = DEFAULT_BROKER_URL
    #: The order a `;`-separated list of broker URLs (a cluster's nodes) is tried in: each
    #: connection attempt tries the next URL, from the first ("round-robin") or from a random
    #: order chosen once per client or worker ("shuffle", to spread processes over the nodes).
    failover_strategy: FailoverStrategy = "round-robin"
    #: Topic exchange that carries broadcast events.
    events_exchange: str = "tchu_events"
    #: Topic exchange that carries RPC requests (its own lane, so calls never queue behind events).
    calls_exchange: str = "tchu_rpc"
    #: Wire format of bodies the client sends; workers answer in the format they were asked in.
    serializer: Serializer = "json"
    #: Default `call()` timeout in seconds.
    call_timeout: float = 30.0
    #: How long `publish()` waits for the broker's confirm, in seconds.
    publish_timeout: float = 10.0
    #: How long opening a connection may take, in seconds.
    connect_timeout: float = 5.0
    #: AMQP heartbeat in seconds (0 turns heartbeats off); a dead peer is noticed within 2x this.
    heartbeat: float = 30.0
    #: Handler threads for calls in one worker; each call channel prefetches exactly this many.
    call_concurrency: int = 1
    #: Handler threads for events in one worker.
    event_concurrency: int = 1
    #: Unacked events one worker may hold (events favour throughput over latency).
    event_prefetch: int = 10
    #: Largest body sent or accepted (requests, events and replies), in bytes.
    max_message_bytes: int = 8 * 1024 * 1024
    #: The broker's `max_message_size` (RabbitMQ's default: 128 MiB). A client cannot read it, so it
    #: is a setting: `max_message_bytes` must not exceed it, since the broker closes the whole
    #: connection (every call in flight on it) over a larger message.
    broker_max_message_bytes: int = 128 * 1024 * 1024
    #: How long a stopping worker lets in-flight messages finish before it lets them be redelivered.
    shutdown_grace: float = 30.0
    #: Deliveries of one message without an ack before it is dead-lettered (poison messages).
    delivery_limit: int = 5
    #: What clients and workers do with the exchanges and queues they need: "declare" them (and bind
    #: a worker's patterns), which needs the configure permission, or only check that they exist
    #: ("passive"; no permission needed, nothing is bound: the operator declares the topology, see
    #: docs/permissions.md). A missing one is then a `ConfigError` that names it.
    declare: Declare = "declare"
    #: Type of the service queues: "quorum" (replicated, recommended) or "classic" (existing set-ups).
    queue_type: QueueType = "classic"
    #: First and largest pause between reconnection attempts, in seconds.
    reconnect_delay: float = 0.2
    reconnect_delay_max: float = 5.0
    #: Longest a call handler may run before its caller gets `HandlerTimeLimit` and the request is
    #: acked (None: no limit). Below `broker_consumer_timeout`, so a stuck handler is answered
    #: instead of having its channel closed by the broker and its request redelivered.
    handler_time_limit: float | None = 1500.0
    #: The broker's `consumer_timeout` in seconds (RabbitMQ's default: 30 minutes; None: off). A
    #: client cannot read it, so it is a setting: workers warn at start when calls may outlive it.
    broker_consumer_timeout: float | None = 1800.0
    #: Redis URL of a reply cache the workers share (opt-in, needs `tchu-rpc[redis]`): a redelivered
    #: call whose reply was already sent is answered from it instead of running again.
    reply_cache_url: str | None = None
    #: How long a worker's reply cache keeps a reply, in seconds.
    reply_cache_ttl: float = 3600.0
    #: Take the fast path: read and write the usual frames below py-amqp, let a caller alone in
    #: flight read its own reply, run a call handler on the worker's I/O thread when it has one call
    #: thread, and settle calls as transactions. Off: py-amqp's and kombu's public reads and writes
    #: only, replies read by the I/O thread, handlers on their lane, and a call's ack sent once its
    #: reply is confirmed. The library turns it off by itself (log `fast_path_disabled`) when the
    #: installed py-amqp lacks an internal it needs.
    fast_path: bool = True
    #: TLS: CA bundle that signs the broker's certificate (default: the system's CAs).
    tls_ca_file: str | None = None
    #: TLS client certificate and its private key, for brokers that ask for one.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: TLS: check the broker's certificate and host name (turn off only for tests).
    tls_verify: bool = True
    #: TLS: the name the broker's certificate must carry (default: the host of the broker URL).
    tls_server_hostname: str | None = None
    #: Also serve tchu-tchu 2.x/3.x clients (`_worker.legacy`): bind the call patterns on the events
    #: exchange too, run their Celery task messages and answer calls in Celery's rpc:// result format.
    accept_tchu_tchu: bool = False
    #: Take over this durable queue of a tchu-tchu service (`setup_celery_queue`'s `queue_name`): consume
    #: it on the events lane, bind the event patterns (and tchu-tchu's calls) to it rather than to
    #: `<service>.events`; implies `accept_tchu_tchu` (`_worker.legacy`).
    legacy_queue: str | None = None
    #: Send as tchu-tchu 2.x/3.x does (`_client.legacy`): every publish and call is a Celery task for
    #: `tchu_tchu.dispatch_event` on the events exchange; calls read Celery's rpc:// result.
    tchu_tchu_format: bool = False

    def __post_init__(self) -> None:
        self._check_numbers()
        self._check_choices()

    def _check_numbers(self) -> None:
        for name, (low, inclusive) in _LOWER_BOUNDS.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if not math.isfinite(value) or value < low or (value == low and not inclusive):
                bound = f"at least {low}" if inclusive else f"above {low}"
                raise ConfigError(f"{name} must be {bound}, got {value!r}")
        for name in ("call_timeout", "publish_timeout"):
            if getattr(self, name) > _MAX_TIMEOUT:
                raise ConfigError(f"{name} must be at most {_MAX_TIMEOUT:.0f} s (RabbitMQ's limit)")
        if self.max_message_bytes > self.broker_max_message_bytes:
            raise ConfigError(
                f"max_message_bytes ({self.max_message_bytes}) exceeds broker_max_message_bytes "
                f"({self.broker_max_message_bytes}): the broker would close the connection over such a "
                "message; raise the broker's max_message_size and broker_max_message_bytes first"
            )
        if self.reconnect_delay_max < self.reconnect_delay:
            raise ConfigError(
                f"reconnect_delay_max ({self.reconnect_delay_max!r}) must be at least "
                f"reconnect_delay ({self.reconnect_delay!r})"
            )

    def _check_choices(self) -> None:
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                allowed = " or ".join(repr(choice) for choice in choices)
                raise ConfigError(f"{name} must be {allowed}, got {value!r}")
        if not self.broker_url:
            raise ConfigError("broker_url must not be empty")
        _check_exchange("events_exchange", self.events_exchange)
        _check_exchange("calls_exchange", self.calls_exchange)
        if self.legacy_queue is not None and not _queue_name(self.legacy_queue):
            raise ConfigError(
                f"legacy_queue must be 1-255 bytes and not start with 'amq.', got {self.legacy_queue!r}"
            )
        if self.tls_key_file and not self.tls_cert_file:
            raise ConfigError("tls_key_file needs tls_cert_file (the certificate of that key)")
        if self.tls_server_hostname and not self.tls_verify:
            raise ConfigError("tls_server_hostname cannot be checked with tls_verify off")

    def __repr__(self) -> str:
        from tchu_rpc.log import mask_url

        def shown(name: str) -> str:
            value = getattr(self, name)
            return f"{name}={mask_url(value) if name.endswith('_url') and value else value!r}"

        return f"Settings({', '.join(shown(f.name) for f in fields(self))})"

    @property
    def tls(self) -> bool:
        """Tell whether connections use TLS: an `amqps://` URL, or any `tls_*` setting changed."""
        changed = any(getattr(self, name) != _DEFAULTS[name] for name in _TLS_FIELDS)
        return changed or any(part.startswith("amqps://") for part in self.broker_url.split(";"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `TCHU_RPC_*` variables, then apply explicit overrides."""
        env = os.environ if environ is None else environ
        _warn_unknown(env)
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None and raw != "":
                values[field.name] = _convert(field.name, field.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def for_worker(
        self, url: str | None, accept_tchu_tchu: bool | None, legacy_queue: str | None
    ) -> Settings:
        """Return a copy with a `Worker`'s arguments applied (None keeps a setting).

        A legacy queue implies `accept_tchu_tchu`: its messages are tchu-tchu's.
        """
        legacy_queue = legacy_queue or self.legacy_queue
        tchu_tchu = self.accept_tchu_tchu if accept_tchu_tchu is None else accept_tchu_tchu
        return self.replace(
            broker_url=url or self.broker_url,
            accept_tchu_tchu=tchu_tchu or bool(legacy_queue),
            legacy_queue=legacy_queue,
        )

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


#: Numeric settings and their lower bound (whether the bound itself is allowed).
_LOWER_BOUNDS: dict[str, tuple[float, bool]] = {
    "call_timeout": (0, False),
    "publish_timeout": (0, False),
    "connect_timeout": (0, False),
    "max_message_bytes": (0, False),
    "broker_max_message_bytes": (0, False),
    "reconnect_delay": (0, False),
    "reconnect_delay_max": (0, False),
    "heartbeat": (0, True),
    "shutdown_grace": (0, True),
    "call_concurrency": (1, True),
    "event_concurrency": (1, True),
    "event_prefetch": (1, True),
    "delivery_limit": (1, True),
    "handler_time_limit": (0, False),
    "broker_consumer_timeout": (0, False),
    "reply_cache_ttl": (0, False),
}
#: Settings that take one of a few words, and those words.
_CHOICES: dict[str, tuple[str, ...]] = {
    "serializer": ("json", "msgpack"),
    "queue_type": ("classic", "quorum"),
    "failover_strategy": ("round-robin", "shuffle"),
    "declare": ("declare", "passive"),
}
#: Settings that may be None (no limit).
_OPTIONAL = frozenset({"handler_time_limit", "broker_consumer_timeout"})
_TLS_FIELDS = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_verify", "tls_server_hostname")
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Settings)}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


#: `TCHU_RPC_*` variables that are not settings: read by the compat client, the Django app, the tests.
_OTHER_VARIABLES = frozenset(
    {"TCHU_RPC_TCHU_TCHU_FORMAT", "TCHU_RPC_SUBSCRIBERS_MODULE", "TCHU_RPC_TEST_BROKER_URL"}
)
_KNOWN_VARIABLES = sorted(_OTHER_VARIABLES | {ENV_PREFIX + name.upper() for name in _DEFAULTS})


def _warn_unknown(env: Mapping[str, str]) -> None:
    """Warn about each `TCHU_RPC_*` variable that nothing reads (a typo), naming the nearest known one."""
    unknown = [n for n in env if n.startswith(ENV_PREFIX) and n not in _KNOWN_VARIABLES]
    if not unknown:
        return
    from tchu_rpc.log import get_logger

    logger = get_logger(__name__)
    suffixes = [known.removeprefix(ENV_PREFIX) for known in _KNOWN_VARIABLES]  # the prefix matches anyway
    for name in sorted(unknown):
        nearest = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1)
        suggestion = ENV_PREFIX + nearest[0] if nearest else None
        logger.warning("unknown_variable", variable=name, nearest=suggestion)


def _queue_name(name: str) -> bool:
    return 0 < len(name.encode()) <= 255 and not name.startswith("amq.")


def _check_exchange(name: str, exchange: str) -> None:
    # Clients and workers declare both exchanges: RabbitMQ refuses `amq.` names (403), an AMQP short
    # string holds at most 255 bytes, and the empty name is the default (direct) exchange.
    if not 0 < len(exchange.encode()) <= 255 or exchange.startswith("amq."):
        raise ConfigError(f"{name} must be 1-255 bytes and not start with 'amq.', got {exchange!r}")


def _convert(name: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    if kind.endswith(" | None"):
        if raw.strip().lower() == "none":
            return None
        kind = kind.removesuffix(" | None")
    if kind == "bool":
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(
                f"{ENV_PREFIX}{name.upper()}={raw!r} is not a boolean (1/true/yes or 0/false/no)"
            )
        return word in _TRUE
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        what = "an integer" if kind == "int" else "a number"
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not {what}") from exc
    return raw
