"""The multi-process runner: spawn N worker processes, restart the dead, stop them on SIGTERM/SIGINT."""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from tchu_rpc import health
from tchu_rpc.config import Settings
from tchu_rpc.errors import AccessRefused, ConfigError
from tchu_rpc.health import Board
from tchu_rpc.log import LogOptions, configure, get_logger
from tchu_rpc.middleware import Middleware
from tchu_rpc.worker import Worker

logger = get_logger(__name__)

#: Run in each child before its handler modules are imported (a framework's set-up, such as
#: `django.setup()`); returns the worker's middleware. A module-level function: it crosses to the
#: child by reference, since children are spawned.
ChildSetup = Callable[[], Sequence[Middleware]]

_RESTART_DELAY_MAX = 5.0
_KILL_AFTER = 5.0  # seconds past the grace period before a child is killed
#: A child's exit code when it cannot start for a reason a restart will not change (EX_CONFIG):
#: a handler module that does not import, a queue the broker refuses to declare as asked, a
#: missing permission (403) or, with passive declares, a missing exchange or queue.
EXIT_CONFIG = 78
#: The supervisor gives up once this many children in a row exited with `EXIT_CONFIG` at start.
_CONFIG_FAILURES = 3


def import_handlers(modules: list[str]) -> None:
    """Import each handler module (a dotted name or a `.py` path) so it registers its handlers."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            if name.endswith(".py"):
                path = Path(name).resolve()
                spec = importlib.util.spec_from_file_location(path.stem, path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot load {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(name)
        except Exception as exc:
            sys.modules.pop(Path(name).stem if name.endswith(".py") else name, None)
            raise ConfigError(f"cannot import handler module {name!r}: {type(exc).__name__}: {exc}") from exc


def _child_main(
    modules: list[str],
    queue: str,
    settings: Settings,
    logs: LogOptions,
    errors: Any,
    setup: ChildSetup | None,
    board: Board | None,
    metrics: bool,
    slot: int,
) -> None:
    threading.Thread(target=_stop_with_parent, name="tchu-parent-watch", daemon=True).start()
    try:
        try:
            middleware = _set_up(setup)
        finally:  # after a framework's set-up: its logging configuration (Django's LOGGING) comes first
            configure(logs.level, json=logs.format == "json")
        import_handlers(modules)
        if metrics:  # the supervisor serves what every process records (`_serve_metrics`)
            from tchu_rpc.contrib.prometheus import Metrics

            middleware = [*(middleware or ()), Metrics().worker(queue)]
        worker = Worker(queue=queue, settings=settings, middleware=middleware)
        if board is not None:
            board.keep_reporting(slot, worker.probe)
        worker.run()  # a ConfigError comes from its start(), not later
    except (ConfigError, AccessRefused) as exc:
        logger.error("worker_start_refused", error=str(exc), error_type=type(exc).__name__)
        errors.put(str(exc))  # the supervisor gives up with it after a few in a row
        sys.exit(EXIT_CONFIG)


def _set_up(setup: ChildSetup | None) -> Sequence[Middleware] | None:
    if setup is None:
        return None
    try:
        return setup()
    except Exception as exc:  # a misconfigured framework: a restart will not change it
        raise ConfigError(f"worker set-up failed: {type(exc).__name__}: {exc}") from exc


def _metrics_module() -> Any:
    try:
        from tchu_rpc.contrib import prometheus
    except ImportError as exc:
        needed = "metrics need prometheus_client: pip install 'tchu-rpc[prometheus]'"
        raise ConfigError(f"{needed} ({exc})") from exc
    return prometheus


def _stop_with_parent() -> None:
    # A supervisor killed with SIGKILL cannot stop its children; they stop themselves, gracefully.
    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGTERM)


class Supervisor:
    """Keep `processes` worker processes running until asked to stop."""

    def __init__(
        self,
        modules: list[str],
        queue: str,
        settings: Settings,
        processes: int,
        logs: LogOptions,
        *,
        setup: ChildSetup | None = None,
        health_port: int | None = None,
        metrics_port: int | None = None,
    ) -> None:
        if processes < 1:
            raise ConfigError(f"concurrency must be at least 1, got {processes}")
        self._context = multiprocessing.get_context("spawn")
        self._errors = self._context.SimpleQueue()  # why children could not start (`EXIT_CONFIG`)
        self._board = None if health_port is None else Board(self._context, processes)
        self._health_port = health_port
        if metrics_port is not None:
            _metrics_module()  # refuse now, not in every child, when prometheus_client is missing
        self._metrics_port = metrics_port
        self._metrics_dir: str | None = None
        metrics = metrics_port is not None
        self._args = (modules, queue, settings, logs, self._errors, setup, self._board, metrics)
        self._config_failures = 0
        self._gave_up: str | None = None
        self._grace = settings.shutdown_grace
        self._children: list[BaseProcess | None] = [None] * processes
        self._delays = [0.0] * processes
        self._born = [0.0] * processes
        self._restart_at: list[float | None] = [None] * processes
        # Set from a signal handler: a plain flag, since a handler that takes a lock (Event.set)
        # deadlocks when a second signal interrupts the first handler while it holds that lock.
        self._stopping = False

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; return the exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request_stop)
        if self._board is not None and self._health_port is not None:
            server = health.serve(self._health_port, self._board.probe)
            logger.info("health_serving", port=server.server_address[1])
        if self._metrics_port is not None:
            self._serve_metrics(self._metrics_port)
        for slot in range(len(self._children)):
            self._spawn(slot)
        while not self._stopping:
            sentinels = [c.sentinel for c in self._children if c is not None and c.is_alive()]
            wait(sentinels, timeout=0.1 if any(self._restart_at) else 0.5)
            self._reap()
        return self._shutdown()

    def _serve_metrics(self, port: int) -> None:
        # Children inherit it when spawned, before anything in them imports prometheus_client.
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="tchu-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir = directory
        _metrics_module().serve_processes(port, directory)
        logger.info("metrics_serving", port=port, directory=directory)

    def _request_stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _spawn(self, slot: int) -> None:
        if self._board is not None:
            self._board.clear(slot)
        child = self._context.Process(
            target=_child_main, args=(*self._args, slot), name=f"tchu-worker-{slot}", daemon=False
        )
        child.start()
        self._children[slot] = child
        self._born[slot] = time.monotonic()
        logger.info("worker_process_started", slot=slot, pid=child.pid)

    def _reap(self) -> None:
        now = time.monotonic()
        for slot, child in enumerate(self._children):
            restart_at = self._restart_at[slot]
            if restart_at is not None:
                if now >= restart_at and not self._stopping:
                    self._restart_at[slot] = None
                    self._spawn(slot)
                continue
            if child is None or child.is_alive():
                continue
            child.join()
            logger.warning("worker_process_died", slot=slot, pid=child.pid, exitcode=child.exitcode)
            if self._metrics_dir is not None and child.pid is not None:
                _metrics_module().process_died(child.pid, self._metrics_dir)
            if self._refused(child.exitcode):
                return
            # Restart at once after a long life; back off while a child keeps dying young.
            young = now - self._born[slot] < _RESTART_DELAY_MAX
            self._delays[slot] = min(self._delays[slot] * 2 or 0.1, _RESTART_DELAY_MAX) if young else 0.0
            self._restart_at[slot] = now + self._delays[slot]

    def _refused(self, exitcode: int | None) -> bool:
        """Count children that could not start in a row; give up after a few (a restart won't help)."""
        self._config_failures = self._config_failures + 1 if exitcode == EXIT_CONFIG else 0
        if self._config_failures < _CONFIG_FAILURES:
            return False
        reason = "see the worker_start_refused events above"
        while not self._errors.empty():
            reason = self._errors.get()
        self._gave_up, self._stopping = reason, True
        logger.error("supervisor_gave_up", failures=self._config_failures, error=reason)
        return True

    def _shutdown(self) -> int:
        children = [c for c in self._children if c is not None]
        for child in children:
            if child.is_alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._grace + _KILL_AFTER
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                logger.error("worker_process_killed", pid=child.pid)
                child.kill()
                child.join(5)
        logger.info("supervisor_stopped", processes=len(children))
        return 0 if self._gave_up is None else EXIT_CONFIG
