"""tchu_rpc: RPC and broadcast events for Python services on RabbitMQ, on kombu, without Celery."""

from importlib import metadata as _metadata

from tchu_rpc.aio import AsyncClient
from tchu_rpc.client import Client
from tchu_rpc.config import Settings
from tchu_rpc.contracts import Topic
from tchu_rpc.delivery import Delivery, current_delivery, report_progress
from tchu_rpc.errors import (
    AccessRefused,
    ArgumentTypeError,
    CallTimeout,
    ConfigError,
    ConnectionLost,
    DecodeError,
    DeliveryLimitExceeded,
    EncodeError,
    HandlerTimeLimit,
    MessageTooLarge,
    NoRoute,
    PublishFailed,
    RegistryError,
    RemoteError,
    RpcError,
    TchuError,
    TopicError,
    ValidationError,
)
from tchu_rpc.middleware import Middleware, OutgoingMessage
from tchu_rpc.propagation import context, current_context
from tchu_rpc.registry import Handler, Registry, default_registry, subscribe
from tchu_rpc.reply_cache import RedisReplyCache, ReplyCache
from tchu_rpc.retry import Retry
from tchu_rpc.worker import Worker

try:
    __version__ = _metadata.version("tchu-rpc")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AccessRefused",
    "ArgumentTypeError",
    "AsyncClient",
    "CallTimeout",
    "Client",
    "ConfigError",
    "ConnectionLost",
    "DecodeError",
    "Delivery",
    "DeliveryLimitExceeded",
    "EncodeError",
    "Handler",
    "HandlerTimeLimit",
    "MessageTooLarge",
    "Middleware",
    "NoRoute",
    "OutgoingMessage",
    "PublishFailed",
    "RedisReplyCache",
    "Registry",
    "RegistryError",
    "RemoteError",
    "ReplyCache",
    "Retry",
    "RpcError",
    "Settings",
    "TchuError",
    "Topic",
    "TopicError",
    "ValidationError",
    "Worker",
    "__version__",
    "context",
    "current_context",
    "current_delivery",
    "default_registry",
    "report_progress",
    "subscribe",
]
