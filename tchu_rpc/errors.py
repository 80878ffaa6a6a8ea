"""The exceptions tchu_rpc raises, all rooted at `TchuError`.

```
TchuError
├── ConfigError (ValueError)        a setting or argument is invalid
│   └── ArgumentTypeError (TypeError) an argument has the wrong type
├── TopicError (ValueError)         a topic or binding pattern is invalid
├── RegistryError (ValueError)      a handler cannot be registered as asked
├── EncodeError (ValueError)        a value cannot be encoded for the wire
├── ValidationError (ValueError)    a value does not fit its typed topic's declared type
├── DecodeError (ValueError)        a body cannot be decoded
├── MessageTooLarge (ValueError)    a body exceeds `Settings.max_message_bytes`
├── CallTimeout (TimeoutError)      no reply before the call's deadline
├── NoRoute                         no queue is bound for the topic
├── PublishFailed                   the broker refused (nacked) a message
├── ConnectionLost (ConnectionError) the connection failed with the message in flight
├── AccessRefused (PermissionError) the broker refused the user an operation (403); never retried
├── RemoteError                     the handler failed; carries type, message, code, details
│   ├── DeliveryLimitExceeded       the request was delivered `delivery_limit` times (poison)
│   └── HandlerTimeLimit            the handler outran the worker's `handler_time_limit`
└── RpcError                        raised by a handler for a business error the caller should see
```

Errors from kombu, py-amqp and sockets are translated at the client's and worker's boundary; the
original stays available as `__cause__`.
"""

from __future__ import annotations

from typing import Any


class TchuError(Exception):
    """Base class of every error tchu_rpc raises."""


class ConfigError(TchuError, ValueError):
    """A setting or argument is invalid."""


class ArgumentTypeError(ConfigError, TypeError):
    """An argument has the wrong type (a `ConfigError` that is also a `TypeError`)."""


class TopicError(TchuError, ValueError):
    """A topic or binding pattern is invalid."""


class RegistryError(TchuError, ValueError):
    """A handler cannot be registered as asked."""


class EncodeError(TchuError, ValueError):
    """A value cannot be encoded for the wire."""


class ValidationError(TchuError, ValueError):
    """A value does not fit the type its `Topic` declares (the message names the field)."""


class DecodeError(TchuError, ValueError):
    """A message body cannot be decoded."""


class MessageTooLarge(TchuError, ValueError):
    """A message body exceeds the configured size limit."""


class CallTimeout(TchuError, TimeoutError):
    """No reply arrived before the call's deadline."""


class NoRoute(TchuError):
    """No queue is bound for the topic on the exchange."""


class PublishFailed(TchuError):
    """The broker did not take responsibility for a message (nack or refused confirm)."""


class ConnectionLost(TchuError, ConnectionError):
    """The broker connection failed while the message or call was in flight."""


class AccessRefused(TchuError, PermissionError):
    """The broker refused the user an operation on a resource (AMQP 403 ACCESS_REFUSED).

    No retry changes it: the user's permissions (or topic permissions) do not allow it. `operation`
    is the AMQP method (`Basic.publish`, `Exchange.declare`, ... or `login`), `user` the login, and
    the message the broker's text, which names the resource.
    """

    def __init__(self, message: str, *, operation: str = "", user: str | None = None) -> None:
        super().__init__(message)
        self.operation = operation
        self.user = user

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_access_refused, (str(self), self.operation, self.user))


def _rebuild_access_refused(message: str, operation: str, user: str | None) -> AccessRefused:
    return AccessRefused(message, operation=operation, user=user)


class RemoteError(TchuError):
    """The remote handler failed; `type`, `message`, `code` and `details` describe how."""

    def __init__(self, type: str, message: str, code: str | None = None, details: Any = None) -> None:
        super().__init__(f"{type}: {message}" if message else type)
        self.type = type
        self.message = message
        self.code = code
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type, self.message, self.code, self.details))


class HandlerTimeLimit(RemoteError):
    """The handler ran longer than the worker's `handler_time_limit`; the worker answered for it.

    Its thread could not be stopped and may still be running (a Python thread cannot be killed):
    its side effects may still happen, and its late result is discarded.
    """


class DeliveryLimitExceeded(RemoteError):
    """The request was delivered `delivery_limit` times without an ack and went to the dead-letter queue.

    Its handler probably kills the worker process; it did not run this last time.
    """


#: Remote error types the client raises as their own subclass of `RemoteError`.
_REMOTE_TYPES: dict[str, type[RemoteError]] = {
    "DeliveryLimitExceeded": DeliveryLimitExceeded,
    "HandlerTimeLimit": HandlerTimeLimit,
}


def remote_error(type: str, message: str, code: str | None = None, details: Any = None) -> RemoteError:
    """Return the `RemoteError` (or its subclass for a known type) that describes a failure reply."""
    return _REMOTE_TYPES.get(type, RemoteError)(type, message, code, details)


class RpcError(TchuError):
    """Raise from a handler to send the caller a business error with a code and details."""

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_rpc_error, (type(self), self.message, self.code, self.details))


def _rebuild_rpc_error(cls: type[RpcError], message: str, code: str | None, details: Any) -> RpcError:
    return cls(message, code=code, details=details)
