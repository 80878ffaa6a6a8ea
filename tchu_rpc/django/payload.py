"""A model instance as an event's data: one JSON form per field type, sensitive fields left out.

Each field's value goes through the field's own `to_python` first, so that what was assigned in
memory (an int, a float or a string for a `DecimalField`, a string for a `DateTimeField`) has one
form on the wire whatever it was:

| field value | JSON |
|---|---|
| `Decimal` (`DecimalField`) | a string, with the field's `decimal_places` (`"12.50"`) |
| `datetime` / `date` / `time` | an ISO 8601 string (`isoformat()`, with its offset when aware) |
| `timedelta` (`DurationField`) | an ISO 8601 duration (`"P1DT02H00M00S"`) |
| `UUID` | its canonical string |
| `bytes` (`BinaryField`) | base64 |
| a file (`FileField`) | its name |
| a relation (`ForeignKey`) | the related row's key, in its own field's form |
| `None`, `bool`, `int`, `float`, `str`, `JSONField` data | as they are |

Fields whose names contain `password`, `token`, `secret` or `api_key` are left out unless
`include_fields` names them; a warning (`sensitive_fields_excluded`) names them when the model is
defined (`auto_publish`, `EventPublishingMixin`).
"""

from __future__ import annotations

import base64
import datetime
import decimal
from collections.abc import Iterable
from typing import Any, Final

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.duration import duration_iso_string

from tchu_rpc.log import get_logger

logger = get_logger(__name__)

#: Parts of a field name that mark it sensitive: left out of payloads unless named in `include_fields`.
SENSITIVE: Final = ("password", "token", "secret", "api_key")


def model_payload(
    instance: models.Model,
    include_fields: Iterable[str] | None = None,
    exclude_fields: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Return the instance's field values in their JSON forms, and `_meta` (app label, model, pk).

    Without `include_fields`, every concrete field but `exclude_fields` and the sensitive ones
    (`SENSITIVE`); with it, exactly those it names (sensitive or not) but `exclude_fields`.
    """
    include = set(include_fields) if include_fields is not None else None
    exclude = set(exclude_fields or ())
    if include is None:
        exclude |= set(sensitive_fields(type(instance)))
    opts = instance._meta
    data: dict[str, Any] = {}
    for field in opts.concrete_fields:
        if field.name in exclude or (include is not None and field.name not in include):
            continue
        data[field.name] = field_json(field, field.value_from_object(instance))
    pk = field_json(opts.pk, instance.pk) if opts.pk is not None else instance.pk
    data["_meta"] = {"app_label": opts.app_label, "model_name": opts.model_name, "pk": pk}
    return data


def sensitive_fields(model: type[models.Model]) -> tuple[str, ...]:
    """Return the model's concrete fields whose names mark them sensitive (`SENSITIVE`)."""
    return tuple(
        f.name for f in model._meta.concrete_fields if any(part in f.name.lower() for part in SENSITIVE)
    )


def warn_sensitive(model: type[models.Model]) -> None:
    """Log `sensitive_fields_excluded` naming the model's sensitive fields, if it has any."""
    names = sensitive_fields(model)
    if names:
        logger.warning(
            "sensitive_fields_excluded",
            model=model._meta.label,
            fields=list(names),
            hint="left out of published events; name them in include_fields to send them",
        )


def field_json(field: Any, value: Any) -> Any:
    """Return `value` of `field` in its one JSON form (see the module's table)."""
    if value is None:
        return None
    try:
        value = field.to_python(value)
    except (ValidationError, TypeError, ValueError):
        pass  # sent as it is, in the form of its type
    if isinstance(value, decimal.Decimal):
        return _decimal(field, value)
    return plain(value)


def plain(value: Any) -> Any:
    """Return a Python value in its JSON form (see the module's table)."""
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return value
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return duration_iso_string(value)
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)  # Decimal, UUID; a file: its name; anything else: its text


def _decimal(field: Any, value: decimal.Decimal) -> str:
    places = getattr(field, "decimal_places", None)
    if isinstance(places, int) and value.is_finite():
        try:
            return str(value.quantize(decimal.Decimal(1).scaleb(-places)))
        except decimal.InvalidOperation:
            pass  # more digits than the context holds: as it is
    return str(value)
