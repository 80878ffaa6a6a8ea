"""`manage.py tchu_rpc_worker` takes the options of `tchu-rpc worker` (one definition for both)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from django.core.management import call_command, load_command_class

from tchu_rpc import cli
from tchu_rpc.django import worker


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _cli_worker_parser() -> argparse.ArgumentParser:
    (commands,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices["worker"]


def test_the_command_has_every_option_of_tchu_rpc_worker() -> None:
    command = load_command_class("tchu_rpc.django", "tchu_rpc_worker")
    ours = _options(command.create_parser("manage.py", "tchu_rpc_worker"))
    assert _options(_cli_worker_parser()) <= ours


def test_the_command_passes_its_options_on(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(worker, "run", lambda queue, **kwargs: runs.append((queue, kwargs)) or 0)
    argv = ["--queue", "q", "--call-threads", "3", "--broker", "amqp://b//", "--log-level", "DEBUG"]
    call_command("tchu_rpc_worker", *argv, "--log-format", "json", "--health-port", "8099")
    ((queue, kwargs),) = runs
    assert queue == "q"
    assert kwargs["overrides"] == {"call_concurrency": 3, "broker_url": "amqp://b//"}
    assert (kwargs["log_level"], kwargs["log_format"], kwargs["health_port"]) == ("debug", "json", 8099)
    assert (kwargs["processes"], kwargs["modules"]) == (1, [])


def test_a_worker_process_undoes_disable_existing_loggers_for_tchu_rpc() -> None:
    # Given loggers made before Django applied a LOGGING that disables existing loggers
    import logging.config

    ours, other = logging.getLogger("tchu_rpc.worker"), logging.getLogger("tchu_test.other")
    known = logging.root.manager.loggerDict.values()
    before = [(found, found.disabled) for found in known if isinstance(found, logging.Logger)]
    try:
        logging.config.dictConfig({"version": 1, "incremental": False})  # disable_existing_loggers: True
        assert ours.disabled and other.disabled
        # When a worker process has set Django up
        worker.enable_loggers()
        # Then tchu_rpc's loggers log again (and only they are touched)
        assert not ours.disabled and other.disabled
    finally:
        for found, disabled in before:
            found.disabled = disabled
