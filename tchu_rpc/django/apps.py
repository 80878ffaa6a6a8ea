"""The Django app: import each installed app's subscribers module; point `TchuClient()` at `TCHU_RPC`."""

from __future__ import annotations

import importlib
import importlib.util

from django.apps import AppConfig, apps

from tchu_rpc.django.conf import subscribers_module
from tchu_rpc.log import get_logger

logger = get_logger(__name__)


class TchuRpcConfig(AppConfig):
    """tchu_rpc's app: registers the handlers of every installed app's `subscribers` module."""

    name = "tchu_rpc.django"
    label = "tchu_rpc"
    verbose_name = "tchu_rpc"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tchu_rpc.compat.client import set_client_factory
        from tchu_rpc.django.publishing import compat_client

        # `TchuClient()` inside Django reads the `TCHU_RPC` dict, as `get_client()` does.
        set_client_factory(compat_client)
        import_subscribers()


def import_subscribers() -> list[str]:
    """Import `<app>.<subscribers module>` of each installed app that has one; return their names."""
    suffix = subscribers_module()
    if suffix is None:
        return []
    imported = []
    for config in apps.get_app_configs():
        name = f"{config.name}.{suffix}"
        # An app without the module is skipped; an error inside an existing one is raised.
        if not hasattr(config.module, "__path__") or importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name)
        imported.append(name)
    logger.debug("subscribers_imported", modules=imported)
    return imported
