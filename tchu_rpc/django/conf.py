"""Settings from Django: the `TCHU_RPC` dict in Django's settings, with `TCHU_RPC_*` variables beneath."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from django.conf import settings as django_settings

from tchu_rpc.config import Settings
from tchu_rpc.errors import ConfigError

#: The Django setting that holds tchu_rpc's settings: a dict keyed by `Settings` field names.
SETTINGS_NAME = "TCHU_RPC"
#: The Django setting that sends `auto_publish`'s and the mixin's events through the outbox (default False).
OUTBOX_NAME = "TCHU_RPC_OUTBOX"
#: The Django setting naming the module imported from each installed app (default `subscribers`).
SUBSCRIBERS_NAME = "TCHU_RPC_SUBSCRIBERS_MODULE"
_FIELDS = frozenset(f.name for f in fields(Settings))


def settings_from_django(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from Django's `TCHU_RPC` dict over the environment; `overrides` win over both.

    `environ`: the variables beneath the dict (default: the process's, as `Settings.from_env`).
    """
    configured = getattr(django_settings, SETTINGS_NAME, None) or {}
    if not isinstance(configured, dict):
        raise ConfigError(f"{SETTINGS_NAME} must be a dict of settings, not {type(configured).__name__}")
    unknown = sorted(set(configured) - _FIELDS)
    if unknown:
        raise ConfigError(f"{SETTINGS_NAME} has unknown settings: {', '.join(unknown)}")
    return Settings.from_env(environ, **{**configured, **overrides})


def subscribers_module() -> str | None:
    """Return the name of the module imported from each installed app (None or "": import none)."""
    name = getattr(django_settings, SUBSCRIBERS_NAME, "subscribers")
    return str(name) if name else None


def outbox_default() -> bool:
    """Tell whether model events go through the transactional outbox (`TCHU_RPC_OUTBOX`)."""
    return bool(getattr(django_settings, OUTBOX_NAME, False))
