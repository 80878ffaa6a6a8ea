"""`TchuClient`: tchu-tchu's client (`publish`, `call`) on one shared `tchu_rpc.Client`.

tchu-tchu's clients are cheap (they borrow Celery's connection pool), and code makes one per
event or per request. A `tchu_rpc.Client` owns a connection and an I/O thread, so every
`TchuClient()` made without `client=` shares one process-wide `Client`: the one given to
`set_default_client`, else the one the client factory returns (`set_client_factory`; the
`tchu_rpc.django` app sets one that reads Django's `TCHU_RPC` settings), else one made on first use
from `Settings.from_env()` (`TCHU_RPC_*`). Both made ones send in tchu-tchu's format unless
`tchu_tchu_format` is set off. This is compat's one lazily made global, there so that
`TchuClient()` stays as cheap as it was.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tchu_rpc.client import Client
from tchu_rpc.config import ENV_PREFIX, Settings

__all__ = ["TchuClient", "default_client", "set_client_factory", "set_default_client", "tchu_tchu_environ"]

_lock = threading.Lock()
_default: Client | None = None
_factory: Callable[[], Client] | None = None
#: The environment under `TCHU_RPC_*` that `default_client` starts from: tchu-tchu's format.
_TCHU_TCHU_DEFAULT = {f"{ENV_PREFIX}TCHU_TCHU_FORMAT": "true"}


def tchu_tchu_environ() -> Mapping[str, str]:
    """Return the process environment with `TCHU_RPC_TCHU_TCHU_FORMAT=true` beneath it (for `from_env`)."""
    return _TCHU_TCHU_DEFAULT | os.environ


def set_client_factory(factory: Callable[[], Client] | None) -> None:
    """Make `TchuClient()`'s shared client with `factory()` unless `set_default_client` gave one.

    `factory` is called on each use and returns the same client each time (it owns and caches it).
    The `tchu_rpc.django` app sets one that reads Django's `TCHU_RPC` settings. None: back to a
    client made on first use from `Settings.from_env()`.
    """
    global _factory
    with _lock:
        _factory = factory


def set_default_client(client: Client | None) -> Client | None:
    """Make `client` the one that `TchuClient()` uses; return the previous one (not closed).

    `None` goes back to a client made on first use from `Settings.from_env()`.
    """
    global _default
    with _lock:
        previous, _default = _default, client
    return previous


def default_client() -> Client:
    """Return the shared client: `set_default_client`'s, the factory's, or one made on first use.

    Made here (from `Settings.from_env()`), it sends in tchu-tchu's format (`tchu_tchu_format`) unless
    `TCHU_RPC_TCHU_TCHU_FORMAT` says otherwise: code still on `TchuClient` reaches services still
    on tchu-tchu (Celery) as well as tchu_rpc workers that accept tchu-tchu.
    """
    global _default
    with _lock:
        if _default is not None:
            return _default
        factory = _factory
        if factory is None:
            _default = Client(settings=Settings.from_env(tchu_tchu_environ()))
            return _default
    return factory()


class TchuClient:
    """Publish events and make calls with tchu-tchu's signatures, on tchu_rpc's engine.

    Args:
        celery_app: accepted and ignored (tchu_rpc needs no Celery); the broker is the shared
            client's: `TCHU_RPC_BROKER_URL` by default, Django's `TCHU_RPC` with `tchu_rpc.django`.
        client: the `tchu_rpc.Client` to use; default: the shared one (see the module's notes).
    """

    def __init__(self, celery_app: Any = None, *, client: Client | None = None) -> None:
        self._client = client

    @property
    def client(self) -> Client:
        """Return the `tchu_rpc.Client` this uses."""
        return self._client if self._client is not None else default_client()

    def publish(self, topic: str, data: Any, **kwargs: Any) -> None:
        """Broadcast `data` on `topic`; return once the broker confirmed it.

        `kwargs` are `tchu_rpc.Client.publish`'s (`headers=`, `timeout=`, ...). A topic whose first
        word is `rpc` names a call and is refused (`TopicError`) unless `allow_call_topic=True`.
        """
        self.client.publish(topic, data, **kwargs)

    def call(
        self, topic: str, data: Any, timeout: float = 30, allow_join: bool = False, **kwargs: Any
    ) -> Any:
        """Call the handler of `topic` with `data` and return its result.

        `allow_join` is accepted and ignored: a tchu_rpc handler may make calls. `kwargs` are
        `tchu_rpc.Client.call`'s (`headers=`, `idempotent=`, ...).

        Raises:
            CallTimeout: no answer within `timeout` seconds; also the builtin `TimeoutError`.
            NoRoute: no service is bound for `topic`, at once (tchu-tchu waited for its timeout).
            RemoteError: the handler raised (tchu-tchu: `PublishError`).
        """
        return self.client.call(topic, data, timeout=timeout, **kwargs)
