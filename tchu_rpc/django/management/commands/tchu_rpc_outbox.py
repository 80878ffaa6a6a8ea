"""`manage.py tchu_rpc_outbox`: send the transactional outbox's events until SIGTERM or SIGINT."""

from __future__ import annotations

import signal
import threading
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tchu_rpc.django import outbox
from tchu_rpc.errors import TchuError
from tchu_rpc.log import configure


class Command(BaseCommand):
    help = "Publish the outbox's events (tchu_rpc.django.outbox) with publisher confirms, oldest first."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--database", default="default", help="the database alias whose outbox to send")
        parser.add_argument("--batch", type=int, default=100, help="rows claimed at a time (default 100)")
        parser.add_argument("--interval", type=float, default=0.5, help="seconds between polls when idle")
        parser.add_argument("--log-level", default="info", help="debug, info, warning or error")

    def handle(self, *args: Any, **options: Any) -> None:
        configure(options["log_level"])
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        try:
            outbox.serve(
                stop, using=options["database"], batch=options["batch"], interval=options["interval"]
            )
        except TchuError as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
