"""Pydantic v2 models as message types, beside msgspec's (the optional `pydantic` extra).

A handler's parameter, a `Topic`'s request or response may be a `pydantic.BaseModel` subclass. Such
a body is decoded by msgspec into plain values, then validated with `model_validate`; a model is
encoded as `model_dump(mode="json")`. A body that does not fit fails as msgspec's do
(`DecodeError`, `ValidationError` before sending), naming the field. msgspec types stay the
default and the fast path: this module never imports pydantic, it only recognizes classes of a
pydantic that the application imported; decoders are built once per type, as for msgspec types.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import msgspec


def is_model(kind: Any) -> bool:
    """Tell whether `kind` is a pydantic model class (never imports pydantic)."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(kind, type) and issubclass(kind, pydantic.BaseModel)


def dump(obj: Any) -> Any:
    """Return a pydantic model instance as JSON-ready values; raise `NotImplementedError` for others."""
    if is_model(type(obj)):
        return obj.model_dump(mode="json", warnings=False)  # the receiving side validates
    raise NotImplementedError(f"objects of type {type(obj).__name__} cannot be encoded")


class Validating:
    """Decode with msgspec into plain values, then validate into a pydantic model."""

    __slots__ = ("_decoder", "_model")

    def __init__(self, decoder: Any, model: Any) -> None:
        self._decoder = decoder
        self._model = model

    def decode(self, body: bytes) -> Any:
        return validate(self._model, self._decoder.decode(body))


class Envelope:
    """The reply envelope of a pydantic response type (`wire.envelope_for`): its result validated."""

    __slots__ = ("model",)

    def __init__(self, model: Any) -> None:
        self.model = model


class _EnvelopeDecoder:
    __slots__ = ("_decoder", "_model", "_result")

    def __init__(self, decoder: Any, model: Any, result: type[Any]) -> None:
        self._decoder = decoder
        self._model = model
        self._result = result

    def decode(self, body: bytes) -> Any:
        envelope = self._decoder.decode(body)
        if not isinstance(envelope, self._result):
            return envelope  # an error or progress: nothing to validate
        return msgspec.structs.replace(envelope, result=validate(self._model, envelope.result))


def validate(model: Any, value: Any) -> Any:
    """Return `value` validated into `model`; raise `msgspec.ValidationError` naming the field."""
    pydantic = sys.modules["pydantic"]
    try:
        return model.model_validate(value)
    except pydantic.ValidationError as exc:
        errors = "; ".join(
            f"{e['msg']} - at `$.{'.'.join(str(p) for p in e['loc'])}`" if e["loc"] else e["msg"]
            for e in exc.errors()
        )
        raise msgspec.ValidationError(f"{model.__name__}: {errors}") from None


def decoder_factory(make: Callable[..., Any], any_envelope: Any, result: type[Any]) -> Callable[[Any], Any]:
    """Wrap a msgspec decoder factory (`msgspec.json.Decoder`) so that it knows pydantic types too.

    `any_envelope` is the untyped reply envelope, `result` its result type (`wire.Result`).
    """

    def factory(kind: Any) -> Any:
        if isinstance(kind, Envelope):
            return _EnvelopeDecoder(make(any_envelope), kind.model, result)
        if is_model(kind):
            return Validating(make(), kind)
        return make(kind)

    return factory
