"""`manage.py tchu_rpc_worker --queue NAME`: run the supervised worker with the project's subscribers."""

from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tchu_rpc.django import outbox, worker
from tchu_rpc.errors import TchuError
from tchu_rpc.options import add_global_options, add_worker_options, settings_overrides


class Command(BaseCommand):
    help = "Serve the installed apps' subscribers as the service QUEUE, in supervised processes."

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_global_options(parser)  # the options of `tchu-rpc worker`, from one definition
        add_worker_options(parser)
        parser.add_argument(
            "--module",
            action="append",
            default=[],
            dest="modules",
            help="another handler module (repeatable)",
        )
        parser.add_argument(
            "--outbox",
            action="store_true",
            help="also send the transactional outbox's events (a relay thread)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stop_relay = outbox.serving() if options["outbox"] else None
        try:
            code = worker.run(
                options["queue"],
                processes=options["concurrency"],
                log_level=options["log_level"],
                log_format=options["log_format"] or "console",
                modules=options["modules"],
                overrides=settings_overrides(options),
                health_port=options["health_port"],
                metrics_port=options["metrics_port"],
            )
        except TchuError as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            if stop_relay is not None:
                stop_relay()
        if code:
            sys.exit(code)
