"""The calls a `Client` offers, typed (a `Topic` or `returns=` tells a type checker what comes back),
and what every call and publish goes through before the client sends it: argument checks, the
topic's contract, headers and context, middleware."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from functools import partial
from typing import Any, TypeVar, overload

from tchu_rpc._client.arguments import (
    call_arguments,
    checked_timeout,
    event_topic,
    outgoing_headers,
    typed,
)
from tchu_rpc._client.inflight import Pending
from tchu_rpc.config import Settings
from tchu_rpc.contracts import Req, Resp, Topic
from tchu_rpc.middleware import Middleware, OutgoingMessage, run_after

T = TypeVar("T")
Progress = Callable[[Any], None] | None


class ClientAPI:
    """`call`, `call_async`, `publish`, `publish_async` and `publish_many`; `Client` does the work."""

    @overload
    def call(
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
    def call(
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
    def call(
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
    def call(
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
        """Call the handler of `topic` with `data` and return its result.

        `topic` is a topic's name, or a typed `Topic`: then `data` is validated against its request
        type before anything is sent (`ValidationError` names the field), and the result is decoded
        into its response type. `returns=T` decodes the result into `T` for a plain topic.

        With `idempotent=True`, a call whose connection is lost before the reply came is published
        again (same message id) once the client has reconnected, until its timeout: the handler may
        then run more than once, so only use it for handlers that tolerate that.

        Each `report_progress(info)` of the handler moves the call's deadline to `timeout` seconds
        after it arrived, but never past `max_timeout` seconds after the call began (default: no
        bound), and passes `info` to `on_progress`, which runs on the client's callback thread (never
        on a thread serving the connection; see `call_async`).

        Raises:
            CallTimeout: no reply within `timeout` seconds (of the start, or of the last progress).
            NoRoute: no service is bound for `topic` on the calls exchange.
            RemoteError: the handler (or the worker) failed; see its `type`, `message`, `code` and
                `details` (decoded into the topic's error type when it has one and they fit).
            HandlerTimeLimit: the handler ran past the worker's `handler_time_limit`.
            ConnectionLost: the connection failed while the call was in flight.
            PublishFailed: the broker kept refusing the request until the deadline (it is published
                again meanwhile), or blocks publishers (a resource alarm).
            ValidationError: `data` does not fit the topic's request type (nothing was sent).
            DecodeError: the result does not fit the topic's response type or `returns`.

        `headers` (string keys, JSON values, 16 KiB at most) reach the handler as
        `current_delivery().caller_headers`; the context of `tchu_rpc.context(...)` (or of the handler
        this runs in) travels with the call as well.
        """
        pending = self._start_call(
            topic, data, timeout, idempotent, max_timeout, on_progress, returns, headers
        )
        return self._wait(pending)

    @overload
    def call_async(
        self,
        topic: Topic[Req, Resp],
        data: Req,
        *,
        timeout: float | None = None,
        idempotent: bool = False,
        max_timeout: float | None = None,
        on_progress: Progress = None,
        headers: Mapping[str, Any] | None = None,
    ) -> futures.Future[Resp]: ...
    @overload
    def call_async(
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
    ) -> futures.Future[T]: ...
    @overload
    def call_async(
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
    ) -> futures.Future[Any]: ...
    def call_async(
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
    ) -> futures.Future[Any]:
        """Start a call (as `call` does) and return a future of its result.

        The future fails by its deadline, at most `Watchdog.MARGIN` (50 ms) after it, even while the
        broker does not answer. Its done-callbacks, like `on_progress` callbacks, run one at a time
        on the client's callback thread, never on a thread serving the connection: a callback that
        blocks (a call on the same client, say) delays later callbacks, not the client's calls.
        """
        pending = self._start_call(
            topic, data, timeout, idempotent, max_timeout, on_progress, returns, headers
        )
        self._resume()  # nobody waits on this thread to read the reply
        return pending.future

    @overload
    def publish(
        self,
        topic: Topic[Req, Any],
        data: Req,
        *,
        timeout: float | None = None,
        allow_call_topic: bool = False,
        headers: Mapping[str, Any] | None = None,
    ) -> None: ...
    @overload
    def publish(
        self,
        topic: str,
        data: Any,
        *,
        timeout: float | None = None,
        allow_call_topic: bool = False,
        headers: Mapping[str, Any] | None = None,
    ) -> None: ...
    def publish(
        self,
        topic: str | Topic[Any, Any],
        data: Any,
        *,
        timeout: float | None = None,
        allow_call_topic: bool = False,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Broadcast an event and return once the broker confirmed it.

        During an outage the client keeps trying until `timeout` (default
        `settings.publish_timeout`), then raises `ConnectionLost`: an event is never dropped
        silently. An event the broker refuses (a quorum queue electing a leader) is published again
        until then, and fails with `PublishFailed` saying so; so does one without a confirm in time.
        Events are persistent; every queue bound to a matching pattern gets a copy. A topic whose
        first word is `rpc` names a call: publishing it is refused (`TopicError`) unless
        `allow_call_topic=True`. A typed `Topic`'s request type validates `data` first.
        """
        self._wait(self._publish(topic, data, timeout, allow_call_topic, headers))

    @overload
    def publish_async(
        self,
        topic: Topic[Req, Any],
        data: Req,
        *,
        timeout: float | None = None,
        allow_call_topic: bool = False,
        headers: Mapping[str, Any] | None = None,
    ) -> futures.Future[None]: ...
    @overload
    def publish_async(
        self,
        topic: str,
        data: Any,
        *,
        timeout: float | None = None,
        allow_call_topic: bool = False,
        headers: Mapping[str, Any] | None = None,
    ) -> futures.Future[None]: ...
    def publish_async(
        self,
        topic: str | Topic[Any, Any],
        data: Any,
        *,
        timeout: float | None = None,
        allow_call_topic: bool = False,
        headers: Mapping[str, Any] | None = None,
    ) -> futures.Future[None]:
        """Broadcast an event (as `publish` does) and return a future of the broker's confirm.

        Nothing waits for the confirm: many events go out back to back and their confirms come back
        pipelined. The future is done once the broker confirmed the event (its result is None), or
        fails with the error `publish` would raise (`ConnectionLost` after `timeout`,
        `PublishFailed`). Across a reconnection, an event not yet confirmed is sent again (at least
        once). Done-callbacks run on the client's callback thread (see `call_async`).
        """
        pending = self._publish(topic, data, timeout, allow_call_topic, headers)
        self._resume()
        return pending.future

    def publish_many(
        self,
        events: Iterable[tuple[str | Topic[Any, Any], Any]],
        *,
        timeout: float | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> list[futures.Future[None]]:
        """Broadcast each `(topic, data)` of `events` as `publish_async` does; return their futures in order.

        An event refused before it is sent (a bad topic, data that cannot be encoded, a middleware
        that raises) does not stop the others: its future holds that error.
        """
        sent = [self._publish_or_fail(topic, data, timeout, headers) for topic, data in events]
        self._resume()
        return sent

    # -- the work common to calls and publishes ---------------------------------------------
    def _publish_or_fail(
        self,
        topic: str | Topic[Any, Any],
        data: Any,
        timeout: float | None,
        headers: Mapping[str, Any] | None,
    ) -> futures.Future[None]:
        try:
            return self._publish(topic, data, timeout, False, headers).future
        except Exception as exc:  # refused before sending: the caller learns it from this event's future
            failed: futures.Future[None] = futures.Future()
            failed.set_exception(exc)
            return failed

    def _start_call(
        self,
        topic: str | Topic[Any, Any],
        data: Any,
        timeout: float | None,
        idempotent: bool,
        max_timeout: float | None,
        on_progress: Callable[[Any], None] | None,
        returns: Any,
        headers: Mapping[str, Any] | None,
    ) -> Pending:
        default = self.settings.call_timeout
        timeout, latest = call_arguments(timeout, default, max_timeout, idempotent, on_progress)
        name, contract = typed(topic, returns)
        message = self._before_publish("call", name, data, headers) if self._middleware else None
        extra = outgoing_headers(headers if message is None else message.headers)
        pending = self._submit("call", name, data, timeout, idempotent, latest, on_progress, contract, extra)
        if message is not None:
            pending.future.add_done_callback(partial(self._after_reply, message))
        return pending

    def _publish(
        self,
        topic: str | Topic[Any, Any],
        data: Any,
        timeout: float | None,
        allow_call_topic: bool,
        headers: Mapping[str, Any] | None,
    ) -> Pending:
        timeout = checked_timeout(timeout, self.settings.publish_timeout)
        name, contract = typed(topic, None)
        event_topic(name, allow_call_topic)
        message = self._before_publish("event", name, data, headers) if self._middleware else None
        extra = outgoing_headers(headers if message is None else message.headers)
        pending = self._submit("event", name, data, timeout, True, contract=contract, extra=extra)
        if message is not None:
            pending.future.add_done_callback(partial(self._after_reply, message))
        return pending

    def _before_publish(
        self, kind: str, topic: str, data: Any, headers: Mapping[str, Any] | None
    ) -> OutgoingMessage:
        message = OutgoingMessage(kind, topic, data, dict(headers or {}))
        for middleware in self._middleware:
            middleware.before_publish(message)  # raises to the caller: nothing is sent
        return message

    def _after_reply(self, message: OutgoingMessage, future: futures.Future[Any]) -> None:
        outcome = futures.CancelledError() if future.cancelled() else future.exception() or future.result()
        run_after("after_reply", self._middleware, message, outcome, topic=message.topic)

    # -- what `Client` provides ---------------------------------------------------------------
    settings: Settings
    _middleware: tuple[Middleware, ...]

    def _submit(
        self,
        kind: str,
        topic: str,
        data: Any,
        timeout: float,
        retry: bool,
        max_timeout: float = math.inf,
        on_progress: Progress = None,
        contract: Topic[Any, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Pending:
        raise NotImplementedError

    def _wait(self, pending: Pending) -> Any:
        raise NotImplementedError

    def _resume(self) -> None:
        raise NotImplementedError
