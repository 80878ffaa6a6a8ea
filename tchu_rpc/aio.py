"""AsyncClient: `await` calls and publishes from an asyncio event loop, over a `Client`'s engine.

One engine under both clients: an `AsyncClient` owns a `Client` (its connection, I/O thread,
confirms, reply matching, deadlines, reconnection, fork and failover rules) and only turns the
`concurrent.futures.Future` of each call or publish into an asyncio future. The bridge is a
done-callback run on the thread that settles the call, which hands the outcome to the event loop
with `loop.call_soon_threadsafe`: one thread hand-over per call (`asyncio.wrap_future` would go
through the client's callback thread first, a second one). Nothing here waits on the broker or on
the I/O thread: every send is handed to the I/O thread (`Client._hand_over`), which also connects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from typing import Any, TypeVar, overload

from tchu_rpc._client.inflight import Pending
from tchu_rpc.client import Client
from tchu_rpc.config import Settings
from tchu_rpc.contracts import Req, Resp, Topic
from tchu_rpc.log import mask_url
from tchu_rpc.middleware import Middleware

T = TypeVar("T")
Progress = Callable[[Any], None] | None


class AsyncClient:
    """Publish events and call remote handlers from asyncio, over one broker connection.

    Arguments are those of `Client`. Use it as `async with AsyncClient(...) as client:`, or call
    `await client.aclose()`. Any number of tasks of one event loop may share it; thousands of calls
    may be in flight at once. Cancelling a task that awaits a call forgets the call (a reply that
    comes later is dropped quietly); a publish cancelled before it was sent is never sent.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        self._client = Client(url, settings=settings, middleware=middleware)
        self._client._hand_over = True  # a send never runs on the event loop's thread
        self.settings = self._client.settings

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Fail what is still pending with `ConnectionLost`, then close; safe to call twice."""
        await asyncio.to_thread(self._client.close)  # joins the I/O thread: off the event loop

    def __repr__(self) -> str:
        return f"<AsyncClient {mask_url(self.settings.broker_url)} pending={len(self._client._inflight)}>"

    @overload
    async def call(
        self,
        topic: Topic[Req, Resp],
        data: Req,
        *,
        timeout: float | None = None,
        idempotent: bool = False,
        max_timeout: float | None = None,
        on_progress: Progress = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Resp: ...
    @overload
    async def call(
        self,
        topic: str,
        data: Any,
        *,
        timeout: float | None = None,
        idempotent: bool = False,
        max_timeout: float | None = None,
        on_progress: Progress = None,
        returns: type[T],
        headers: Mapping[str, Any] | None = None,
    ) -> T: ...
    @overload
    async def call(
        self,
        topic: str,
        data: Any,
        *,
        timeout: float | None = None,
        idempotent: bool = False,
        max_timeout: float | None = None,
        on_progress: Progress = None,
        returns: None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Any: ...
    async def call(
        self,
        topic: str | Topic[Any, Any],
        data: Any,
        *,
        timeout: float | None = None,
        idempotent: bool = False,
        max_timeout: float | None = None,
        on_progress: Progress = None,
        returns: Any = None,
        headers: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call the handler of `topic` with `data` and return its result, as `Client.call` does.

        The arguments, the errors raised and the typed topics are `Client.call`'s; `on_progress`
        runs on the event loop. Cancelling the awaiting task forgets the call.
        """
        loop = asyncio.get_running_loop()
        if on_progress is not None:
            on_progress = _on_loop(loop, on_progress)
        client = self._client
        pending = client._start_call(
            topic, data, timeout, idempotent, max_timeout, on_progress, returns, headers
        )
        client._resume()  # the I/O thread reads the reply
        return await self._settled(loop, pending)

    @overload
    async def publish(
        self,
        topic: Topic[Req, Any],
        data: Req,
        *,
        timeout: float | None = None,
        allow_call_topic: bool = False,
        headers: Mapping[str, Any] | None = None,
    ) -> None: ...
    @overload
    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        timeout: float | None = None,
        allow_call_topic: bool = False,
        headers: Mapping[str, Any] | None = None,
    ) -> None: ...
    async def publish(
        self,
        topic: str | Topic[Any, Any],
        data: Any,
        *,
        timeout: float | None = None,
        allow_call_topic: bool = False,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Broadcast an event and return once the broker confirmed it, as `Client.publish` does.

        The event loop runs on meanwhile: publishes of parallel tasks have their confirms pipelined.
        """
        loop = asyncio.get_running_loop()
        client = self._client
        pending = client._publish(topic, data, timeout, allow_call_topic, headers)
        client._resume()
        await self._settled(loop, pending)

    async def _settled(self, loop: asyncio.AbstractEventLoop, pending: Pending) -> Any:
        """Await the outcome of `pending`; forget it if the awaiting task is cancelled."""
        waiter = loop.create_future()
        source: futures.Future[Any] = pending.future

        def settled(_: futures.Future[Any]) -> None:  # on the thread that settled it
            try:
                loop.call_soon_threadsafe(_copy, source, waiter)
            except RuntimeError:
                pass  # the loop is closed: nobody awaits any more

        # `futures.Future`'s own method: at once on the settling thread, not the callback thread.
        futures.Future.add_done_callback(source, settled)
        try:
            return await waiter
        except asyncio.CancelledError:
            self._client._cancel(pending)
            raise


def _copy(source: futures.Future[Any], waiter: asyncio.Future[Any]) -> None:
    if waiter.done() or source.cancelled():
        return
    error = source.exception()
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(source.result())


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[Any], None]) -> Callable[[Any], None]:
    """Return a callback that runs `fn(info)` on `loop` (progress comes on the callback thread)."""

    def forward(info: Any) -> None:
        try:
            loop.call_soon_threadsafe(fn, info)
        except RuntimeError:
            pass  # the loop is closed

    return forward
