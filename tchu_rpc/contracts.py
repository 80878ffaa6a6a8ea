"""Typed topics: a contract that binds a topic to its request, response and error types.

```python
get_user = Topic("rpc.users.get", request=GetUser, response=User, error=UserError)

@subscribe(get_user)
def handle(req: GetUser) -> User: ...

user = client.call(get_user, GetUser(id=1), timeout=5)   # a type checker knows: User
```

Types are msgspec types (Structs, or anything msgspec decodes into). Both sides check: the client
validates a request before it publishes it (nothing is sent when it does not fit, and the error
names the field), the worker decodes what it receives into `request` and checks what the handler
returns against `response` (a result that does not fit is answered as a `ValidationError`), and the
client decodes the reply into `response`. A handler's `RpcError(details=...)` reaches the caller as a
`RemoteError` whose `details` are decoded into `error` when they fit it. Plain topics (strings) and
plain data keep working unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic

from tchu_rpc.errors import ConfigError
from tchu_rpc.topics import Kind, default_kind, validate_pattern

if TYPE_CHECKING:  # a type left out is Any (PEP 696), for type checkers only: no runtime dependency
    from typing_extensions import TypeVar

    Req = TypeVar("Req", default=Any)
    Resp = TypeVar("Resp", default=Any)
else:
    from typing import TypeVar

    Req = TypeVar("Req")
    Resp = TypeVar("Resp")


@dataclass(frozen=True, slots=True)
class Topic(Generic[Req, Resp]):
    """A topic with the types of its request, its response and its business error's details.

    Args:
        name: the topic (a call's or an event's routing key; a pattern only for handlers).
        request: the type of the data sent (default: any JSON-like value).
        response: the type of a call's result (events have none; default: any).
        error: the type of `RpcError.details` a call's handler raises (default: any).
        kind: "call" or "event"; by default a topic whose first word is `rpc` is a call.
    """

    name: str
    request: type[Req] = Any  # type: ignore[assignment]  # Any: any JSON-like value
    response: type[Resp] = Any  # type: ignore[assignment]
    error: type[Any] | Any = Any
    kind: Kind | None = None

    def __post_init__(self) -> None:
        validate_pattern(self.name)
        if self.kind not in (None, "call", "event"):
            raise ConfigError(f"kind must be 'call' or 'event', not {self.kind!r} (topic {self.name!r})")

    @property
    def resolved_kind(self) -> Kind:
        """Return the topic's kind: given, or by the `rpc.` convention."""
        return self.kind or default_kind(self.name)
