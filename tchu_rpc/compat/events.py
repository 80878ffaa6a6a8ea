"""`TchuEvent`: tchu-tchu's serializer-checked event and call, on tchu_rpc.

Serializers are duck-typed: a class taking `data=` (and `context=`), with `is_valid()`,
`errors` and `validated_data`, as Django REST framework's are; DRF itself is not needed (tchu-tchu
ignored the serializers when DRF was not installed; here they always run).

Context is not lost on the way: `publish` and `call` send the authorization fields (`user`,
`company`, `user_company`) of the validated data in tchu_rpc's context as well, and a handler runs
under its message's context, so the events and calls it makes carry them on even when their own
data does not. On receipt, fields missing from the data are taken from that context before the
context helper runs; the received event keeps the subscribing event's own context helper
(tchu-tchu 2.x lost it) and its topic (tchu-tchu rebuilt it from `Meta` alone).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from tchu_rpc.compat.client import TchuClient
from tchu_rpc.compat.errors import SerializationError, TchuRPCException
from tchu_rpc.compat.subscriber import register, without_meta
from tchu_rpc.delivery import current_delivery
from tchu_rpc.propagation import context, current_context

__all__ = ["TchuEvent"]

_log = logging.getLogger(__name__)
AUTH_FIELDS = ("user", "company", "user_company")
ContextHelper = Callable[[dict[str, Any]], Any]


def _validate(serializer_class: Any, data: Any, context: Any = None, **extra: Any) -> dict[str, Any]:
    """Return what `serializer_class` validates out of `data`, or raise `SerializationError`."""
    kwargs: dict[str, Any] = {"data": data, **extra}
    if context:
        kwargs["context"] = context
    serializer = serializer_class(**kwargs)
    if not serializer.is_valid():
        raise SerializationError(f"{serializer_class.__name__} refused the data: {serializer.errors}")
    return dict(serializer.validated_data)


def _accepts(cls: Any, name: str) -> bool:
    """Return whether `cls(...)` names the keyword `name` (DRF's serializers do not)."""
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


class TchuEvent:
    """An event or call with a topic, serializers and a handler; `Meta` supplies defaults."""

    topic: str
    _context_helper: ClassVar[ContextHelper | None] = None

    @classmethod
    def set_context_helper(cls, helper: ContextHelper) -> None:
        """Set the function that rebuilds a request context from received data, for every event."""
        cls._context_helper = helper

    @classmethod
    def get_context_helper(cls) -> ContextHelper | None:
        """Return the context helper set with `set_context_helper`."""
        return cls._context_helper

    def __init__(
        self,
        topic: str | None = None,
        request_serializer_class: Any = None,
        response_serializer_class: Any = None,
        error_serializer_class: Any = None,
        handler: Callable[[TchuEvent], Any] | None = None,
        context_helper: ContextHelper | None = None,
        celery_options: dict[str, Any] | None = None,
    ) -> None:
        meta = getattr(self, "Meta", None)
        self.topic = topic or getattr(meta, "topic", None) or ""
        if not self.topic:
            raise ValueError("Topic must be provided either as argument or in Meta class")
        self.request_serializer_class = request_serializer_class or getattr(
            meta, "request_serializer_class", None
        )
        self.response_serializer_class = response_serializer_class or getattr(
            meta, "response_serializer_class", None
        )
        self.error_serializer_class = error_serializer_class or getattr(meta, "error_serializer_class", None)
        self.handler = handler or getattr(meta, "handler", None)
        self.celery_options = celery_options or getattr(meta, "celery_options", None)
        self.validated_data: dict[str, Any] | None = None
        self.context: Any = None
        self._instance_context_helper = context_helper
        self._client: TchuClient | None = None

    @property
    def client(self) -> TchuClient:
        """Return the `TchuClient` that publishes and calls (the shared client by default)."""
        if self._client is None:
            self._client = TchuClient()
        return self._client

    def _helper(self) -> ContextHelper | None:
        return self._instance_context_helper or type(self)._context_helper

    # -- receiving ---------------------------------------------------------------------------
    def subscribe(self) -> str:
        """Register the handler for this event's topic; it receives a validated `TchuEvent`.

        Returns:
            the handler's id, `module.Class.handler`.
        """
        if not self.handler:
            raise ValueError(f"No handler defined for event topic '{self.topic}'")
        handler_name = getattr(self.handler, "__name__", "handler")
        handler_id = f"{type(self).__module__}.{type(self).__name__}.{handler_name}"
        name = f"{type(self).__name__}_{handler_name}"
        register(self.topic, self._receive, name, celery_options=self.celery_options)
        return handler_id

    def _received(self) -> TchuEvent:
        """Return a fresh event like this one, to carry one message's data."""
        return type(self)(
            topic=self.topic,
            request_serializer_class=self.request_serializer_class,
            response_serializer_class=self.response_serializer_class,
            error_serializer_class=self.error_serializer_class,
            context_helper=self._instance_context_helper,
        )

    def _receive(self, data: Any) -> Any:
        """Validate one message into a new event, run the handler, answer a `TchuRPCException`."""
        data = without_meta(data)
        event = self._received()
        assert self.handler is not None
        try:
            if isinstance(data, dict) and all(data.get(f) is None for f in AUTH_FIELDS):
                carried = _carried_auth()
                data = {**carried, **data} if carried else data
            if isinstance(data, dict) and all(data.get(f) is None for f in AUTH_FIELDS):
                event.serialize_request(
                    data, skip_authorization=True, skip_reason="Authorization was skipped in original event"
                )
            else:
                event.serialize_request(data, context=event._context_from(data))
            return self.handler(event)
        except TchuRPCException as exc:
            return event._error_answer(exc)

    def _context_from(self, data: dict[str, Any]) -> Any:
        helper = self._helper()
        if helper is None:
            return None
        try:
            return helper(data)
        except Exception as exc:  # tchu-tchu's rule: a failing helper leaves the event without context
            _log.warning("context helper failed (%s): processing without context", exc)
            return None

    def _error_answer(self, exc: TchuRPCException) -> Any:
        answer = exc.to_response_dict()
        if self.error_serializer_class is None:
            return answer
        try:
            return _validate(self.error_serializer_class, answer)
        except SerializationError as err:
            _log.error("error response validation failed: %s", err)
            return answer

    # -- sending -----------------------------------------------------------------------------
    def serialize_request(
        self,
        data: Any,
        context: Any = None,
        skip_authorization: bool = False,
        skip_reason: str | None = None,
    ) -> dict[str, Any]:
        """Validate `data` with the request serializer (if any), keep and return the result.

        `skip_authorization` and `skip_reason` reach the serializer only if its constructor names
        them (tchu-tchu passed them to every serializer, which DRF's refuse).

        Raises:
            SerializationError: the serializer refused the data.
        """
        if self.request_serializer_class is not None:
            extra: dict[str, Any] = {}
            if skip_authorization and _accepts(self.request_serializer_class, "skip_authorization"):
                extra = {"skip_authorization": skip_authorization, "skip_reason": skip_reason}
            self.validated_data = _validate(self.request_serializer_class, data, context, **extra)
        elif isinstance(data, Mapping):
            self.validated_data = dict(data)
        else:
            raise SerializationError(f"request data must be a mapping, not {type(data).__name__}")
        self.context = context
        return self.validated_data

    def serialize_response(self, data: Any, context: Any = None) -> Any:
        """Return `data` validated by the response serializer, or as it is without one."""
        if self.response_serializer_class is None:
            return data
        return _validate(self.response_serializer_class, data, context)

    def serialize_error(self, data: Any, context: Any = None) -> Any:
        """Return `data` validated by the error serializer, or as it is without one."""
        if self.error_serializer_class is None:
            return data
        return _validate(self.error_serializer_class, data, context)

    def _ready(self) -> dict[str, Any]:
        if self.validated_data is None:
            raise ValueError("No validated data available. Call serialize_request() first.")
        return self.validated_data

    def publish(self) -> None:
        """Broadcast the validated data on the topic, with its authorization fields as context."""
        data = self._ready()
        with context(**_auth(data)):
            self.client.publish(self.topic, data)

    def call(self, timeout: float = 30, allow_join: bool = False) -> Any:
        """Call the topic's handler with the validated data; return its validated answer.

        An answer with an `error_code` (a `TchuRPCException`'s) goes through the error serializer,
        any other through the response serializer.
        """
        data = self._ready()
        with context(**_auth(data)):
            response = self.client.call(self.topic, data, timeout=timeout)
        if isinstance(response, dict) and response.get("error_code") is not None:
            return self.serialize_error(response)
        return self.serialize_response(response)

    # -- the validated data ------------------------------------------------------------------
    @property
    def request_context(self) -> Any:
        """Return the context given to `serialize_request`, else the helper's from the data."""
        if self.context is not None:
            return self.context
        helper = self._helper()
        if self.validated_data and helper is not None:
            try:
                return helper(self.validated_data)
            except Exception as exc:
                _log.warning("context helper failed (%s): no request context", exc)
        return None

    def is_authorized(self) -> bool:
        """Return whether the data has `user`, `company` and `user_company`."""
        data = self._ready()
        return all(data.get(f) is not None for f in AUTH_FIELDS)

    def get(self, key: str, default: Any = None) -> Any:
        """Return one field of the validated data."""
        return self._ready().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self._ready()[key]

    def __contains__(self, key: object) -> bool:
        return self.validated_data is not None and key in self.validated_data

    def __iter__(self) -> Iterator[str]:
        return iter(self._ready())


def _auth(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return the authorization fields of `data` that are set."""
    return {f: data[f] for f in AUTH_FIELDS if data.get(f) is not None}


def _carried_auth() -> dict[str, Any]:
    """Return the authorization fields the message's context carries (empty outside a handler)."""
    delivery = current_delivery()
    carried = delivery.context if delivery is not None else current_context()
    return _auth(carried)
