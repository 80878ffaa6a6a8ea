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
