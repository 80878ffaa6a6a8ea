"""Settings: one frozen object with every knob; `Settings.from_env()` reads `TCHU_RPC_*` variables."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from tchu_rpc.errors import ConfigError

ENV_PREFIX = "TCHU_RPC_"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"

Serializer = Literal["json", "msgpack"]
QueueType = Literal["classic", "quorum"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of clients and workers, with defaults fit for production.

    Each field can be set from the environment as `TCHU_RPC_<FIELD>` (for example
    `TCHU_RPC_BROKER_URL`, `TCHU_RPC_CALL_TIMEOUT=5`) through `Settings.from_env()`.
    """

    broker_url: str = DEFAULT_BROKER_URL
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
    #: Largest body accepted on either side, in bytes.
    max_message_bytes: int = 8 * 1024 * 1024
    #: How long a stopping worker lets in-flight messages finish before it lets them be redelivered.
    shutdown_grace: float = 30.0
    #: Deliveries of one message without an ack before it is dead-lettered (poison messages).
    delivery_limit: int = 5
    #: Type of the service queues: "quorum" (replicated, recommended) or "classic" (existing set-ups).
    queue_type: QueueType = "classic"
    #: First and largest pause between reconnection attempts, in seconds.
    reconnect_delay: float = 0.2
    reconnect_delay_max: float = 5.0

    def __post_init__(self) -> None:
        for name, (low, inclusive) in _LOWER_BOUNDS.items():
            value = getattr(self, name)
            if not math.isfinite(value) or value < low or (value == low and not inclusive):
                bound = f"at least {low}" if inclusive else f"above {low}"
                raise ConfigError(f"{name} must be {bound}, got {value!r}")
        if self.reconnect_delay_max < self.reconnect_delay:
            raise ConfigError(
                f"reconnect_delay_max ({self.reconnect_delay_max!r}) must be at least "
                f"reconnect_delay ({self.reconnect_delay!r})"
            )
        if self.serializer not in ("json", "msgpack"):
            raise ConfigError(f"serializer must be 'json' or 'msgpack', got {self.serializer!r}")
        if self.queue_type not in ("classic", "quorum"):
            raise ConfigError(f"queue_type must be 'classic' or 'quorum', got {self.queue_type!r}")
        if not self.broker_url:
            raise ConfigError("broker_url must not be empty")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `TCHU_RPC_*` variables, then apply explicit overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None and raw != "":
                values[field.name] = _convert(field.name, field.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


#: Numeric settings and their lower bound (whether the bound itself is allowed).
_LOWER_BOUNDS: dict[str, tuple[float, bool]] = {
    "call_timeout": (0, False),
    "publish_timeout": (0, False),
    "connect_timeout": (0, False),
    "max_message_bytes": (0, False),
    "reconnect_delay": (0, False),
    "reconnect_delay_max": (0, False),
    "heartbeat": (0, True),
    "shutdown_grace": (0, True),
    "call_concurrency": (1, True),
    "event_concurrency": (1, True),
    "event_prefetch": (1, True),
    "delivery_limit": (1, True),
}


def _convert(name: str, annotation: Any, raw: str) -> Any:
    kind = str(annotation)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        what = "an integer" if kind == "int" else "a number"
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not {what}") from exc
    return raw
