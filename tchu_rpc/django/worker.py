"""Run the supervised worker for a Django project: Django set up in each child, connections kept fresh."""

from __future__ import annotations

import logging
from typing import Any

import django
from django.db import close_old_connections

from tchu_rpc.delivery import Delivery
from tchu_rpc.django.conf import settings_from_django
from tchu_rpc.log import LogOptions, configure
from tchu_rpc.middleware import Middleware
from tchu_rpc.process import Supervisor, import_handlers


class CloseOldConnections(Middleware):
    """Close the handler thread's database connections that are broken or past `CONN_MAX_AGE`.

    Run before and after each handler, as Celery does around tasks and Django around requests: a
    long-running worker then reconnects after a database restart instead of failing every message.
    """

    def before_handler(self, delivery: Delivery) -> None:
        close_old_connections()

    def after_handler(self, delivery: Delivery, result: object) -> None:
        close_old_connections()

    def on_error(self, delivery: Delivery, error: BaseException) -> None:
        close_old_connections()


def set_up_child() -> list[Middleware]:
    """Set Django up in a worker process (which imports the subscribers); return its middleware."""
    django.setup()  # DJANGO_SETTINGS_MODULE and sys.path come from the parent
    enable_loggers()
    return [CloseOldConnections()]


def enable_loggers() -> None:
    """Undo `disable_existing_loggers` for tchu_rpc's loggers.

    A `LOGGING` without `"disable_existing_loggers": False` disables the loggers made before it is
    applied. In `manage.py` that is none of ours (the app is imported after); in a worker process
    tchu_rpc is imported first, and would otherwise fall silent.
    """
    for name, found in logging.root.manager.loggerDict.items():
        if isinstance(found, logging.Logger) and (name == "tchu_rpc" or name.startswith("tchu_rpc.")):
            found.disabled = False


def run(
    queue: str,
    *,
    processes: int = 1,
    log_level: str | None = None,
    log_format: str = "console",
    modules: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    health_port: int | None = None,
    metrics_port: int | None = None,
) -> int:
    """Run `processes` worker processes serving `queue` until SIGTERM or SIGINT; return the exit code.

    `log_level` None leaves tchu_rpc's level to Django's `LOGGING`; `overrides` are `Settings`
    fields that win over Django's `TCHU_RPC` and the environment.
    """
    modules = list(modules or ())
    import_handlers(modules)  # fail fast here, before spawning children
    settings = settings_from_django(**(overrides or {}))
    logs = LogOptions(log_level, log_format)
    configure(log_level, json=log_format == "json")  # Django's LOGGING first: see `configure`
    ports = {"health_port": health_port, "metrics_port": metrics_port}
    return Supervisor(modules, queue, settings, processes, logs, setup=set_up_child, **ports).run()
