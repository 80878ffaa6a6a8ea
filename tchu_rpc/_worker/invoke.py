"""Run one handler for one delivery: its delivery and context, its middleware, its errors as data."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tchu_rpc import propagation as context_module
from tchu_rpc import wire
from tchu_rpc.delivery import Delivery, _current, _reporter
from tchu_rpc.errors import RpcError
from tchu_rpc.log import get_logger
from tchu_rpc.middleware import Middleware, report, run_after
from tchu_rpc.registry import Handler

logger = get_logger(__name__)


def invoke(
    service: str,
    handler: Handler,
    data: Any,
    delivery: Delivery,
    report_progress: Callable[[Any], bool] | None,
    chain: tuple[Middleware, ...],
) -> wire.Reply:
    """Run `handler` on `data`; return its result or its error (never raise an `Exception`)."""
    token = _current.set(delivery)
    report_token = _reporter.set(report_progress)
    encoded = delivery.headers.get(wire.HEADER_CONTEXT)
    # The handler's calls and publishes carry its message's context on (`tchu_rpc.context`).
    carried = encoded is not None or context_module.active()
    context_token = context_module.enter(encoded) if carried else None
    started = time.perf_counter()
    try:
        if chain:
            return _with_middleware(service, handler, data, delivery, chain)
        return wire.Result(handler.fn(data))
    except Exception as exc:
        _failed(service, handler, delivery, exc)
        return wire.Failure(wire.error_info(exc))
    finally:
        if context_token is not None:
            context_module.leave(context_token)
        _reporter.reset(report_token)
        _current.reset(token)
        if logger.enabled():
            logger.debug(
                "handler_ran",
                service=service,
                handler=handler.name,
                topic=delivery.topic,
                correlation_id=delivery.correlation_id,
                redelivered=delivery.redelivered,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )


def _with_middleware(
    service: str, handler: Handler, data: Any, delivery: Delivery, chain: tuple[Middleware, ...]
) -> wire.Reply:
    about = {"service": service, "topic": delivery.topic, "correlation_id": delivery.correlation_id}
    for middleware in chain:
        try:
            middleware.before_handler(delivery)
        except Exception as exc:  # the message fails as a handler's would; the handler does not run
            report("before_handler", middleware, exc, **about)
            return wire.Failure(wire.error_info(exc))
    try:
        result = handler.fn(data)
    except Exception as exc:
        _failed(service, handler, delivery, exc)
        run_after("on_error", chain, delivery, exc, **about)
        return wire.Failure(wire.error_info(exc))
    run_after("after_handler", chain, delivery, result, **about)
    return wire.Result(result)


def _failed(service: str, handler: Handler, delivery: Delivery, exc: Exception) -> None:
    logger.warning(
        "handler_failed",
        service=service,
        handler=handler.name,
        error_type=type(exc).__name__,
        error=str(exc),
        topic=delivery.topic,
        correlation_id=delivery.correlation_id,
        redelivered=delivery.redelivered,
        exc_info=not isinstance(exc, RpcError),
    )
