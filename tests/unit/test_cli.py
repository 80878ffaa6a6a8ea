"""The `tchu-rpc` shell: argument parsing, usage errors, and the in-memory demo."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

import tchu_rpc
from tchu_rpc import cli


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keep `main()` from reconfiguring structlog for the whole test session; clear TCHU_RPC_*."""
    levels: list[str] = []
    # cli.configure caches loggers on first use, which would defeat capture_logs in later tests.
    monkeypatch.setattr(cli, "configure", lambda level="info", json=False: levels.append(level))
    for name in [n for n in os.environ if n.startswith("TCHU_RPC_")]:
        monkeypatch.delenv(name)
    return levels


def test_worker_arguments_parse() -> None:
    args = cli.build_parser().parse_args(
        [
            "worker",
            "mod1",
            "mod2",
            "--queue",
            "q",
            "--concurrency",
            "4",
            "--broker",
            "amqp://rabbit//",
            "--event-prefetch",
            "5",
            "--reply-cache",
            "redis://cache:6379/0",
        ]
    )
    assert args.command == "worker"
    assert args.modules == ["mod1", "mod2"]
    assert args.queue == "q"
    assert args.concurrency == 4
    assert args.broker == "amqp://rabbit//"
    assert args.event_prefetch == 5
    assert args.reply_cache == "redis://cache:6379/0"
    assert args.call_threads is None
    assert args.event_threads is None
    assert args.log_level is None  # main() takes info for a worker, warning for the other commands


def test_worker_defaults_to_one_process() -> None:
    args = cli.build_parser().parse_args(["worker", "mod", "--queue", "q"])
    assert (args.concurrency, args.broker, args.event_prefetch) == (1, None, None)


def test_call_arguments_parse() -> None:
    args = cli.build_parser().parse_args(["call", "topic", '{"a":1}', "--timeout", "2"])
    assert (args.command, args.topic, args.data, args.timeout) == ("call", "topic", '{"a":1}', 2.0)
    assert args.broker is None


def test_publish_arguments_parse() -> None:
    args = cli.build_parser().parse_args(["publish", "user.created", '{"id": 3}', "--broker", "amqp://x//"])
    assert (args.command, args.topic, args.data) == ("publish", "user.created", '{"id": 3}')
    assert (args.timeout, args.broker) == (None, "amqp://x//")


def test_dead_arguments_parse() -> None:
    argv = ["dead", "users", "--replay", "--topic", "user.#", "--limit", "10", "--calls", "--json"]
    args = cli.build_parser().parse_args([*argv, "--broker", "amqp://x//"])
    assert (args.command, args.service) == ("dead", "users")
    assert args.replay and args.calls and args.json
    assert (args.topic, args.limit, args.broker) == ("user.#", 10, "amqp://x//")


def test_dead_lists_by_default_with_no_limit_given() -> None:
    args = cli.build_parser().parse_args(["dead", "users"])
    assert (args.replay, args.topic, args.limit, args.calls, args.json) == (False, None, None, False, False)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["dead", "users", "--limit", "0"], "ConfigError: limit must be at least 1"),
        (["dead", "users", "--replay", "--limit", "-1"], "ConfigError: limit must be at least 1"),
        (["dead", "users", "--replay", "--topic", "user.ab*"], "TopicError: pattern 'user.ab*'"),
    ],
)
def test_dead_with_a_bad_limit_or_pattern_exits_1_before_connecting(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*argv, "--broker", "amqp://guest:guest@127.0.0.1:1//"]) == 1
    assert error in capsys.readouterr().err


def test_dead_without_a_service_exits_with_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["dead", "--replay"])
    assert info.value.code == 2


def test_demo_arguments_parse() -> None:
    args = cli.build_parser().parse_args(["demo", "--broker", "amqp://rabbit//"])
    assert (args.command, args.broker) == ("demo", "amqp://rabbit//")


def test_demo_defaults_to_the_memory_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    brokers: list[str] = []
    monkeypatch.setattr(cli.demo, "run", lambda broker, **_: brokers.append(broker) or 0)
    assert cli.main(["demo"]) == 0
    assert brokers == ["memory://"]


def test_global_log_level_parses_before_the_command() -> None:
    args = cli.build_parser().parse_args(["--log-level", "debug", "demo"])
    assert args.log_level == "debug"


@pytest.mark.parametrize(
    "argv",
    [
        [
            "worker",
            "m",
            "--queue",
            "q",
            "--log-level",
            "debug",
            "--broker",
            "amqp://b//",
            "--log-format",
            "json",
        ],
        [
            "--log-level",
            "debug",
            "--broker",
            "amqp://b//",
            "--log-format",
            "json",
            "worker",
            "m",
            "--queue",
            "q",
        ],
        [
            "--log-level",
            "debug",
            "worker",
            "m",
            "--queue",
            "q",
            "--broker",
            "amqp://b//",
            "--log-format",
            "json",
        ],
        [
            "--broker",
            "amqp://b//",
            "worker",
            "--log-format",
            "json",
            "m",
            "--log-level",
            "DEBUG",
            "--queue",
            "q",
        ],
    ],
)
def test_global_flags_are_accepted_before_and_after_the_command(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(argv)
    assert (args.command, args.modules, args.queue) == ("worker", ["m"], "q")
    assert (args.log_level, args.broker, args.log_format) == ("debug", "amqp://b//", "json")


@pytest.mark.parametrize(
    "command", [["call", "rpc.x", "{}"], ["ping", "rpc.x"], ["dead", "s"], ["inspect", "s"]]
)
def test_every_command_takes_the_global_flags_after_it(command: list[str]) -> None:
    args = cli.build_parser().parse_args([*command, "--broker", "amqp://b//", "--log-level", "error"])
    assert (args.broker, args.log_level) == ("amqp://b//", "error")


def test_a_flag_given_before_the_command_is_kept_when_not_repeated_after_it() -> None:
    args = cli.build_parser().parse_args(["--broker", "amqp://b//", "ping", "rpc.x", "--timeout", "1"])
    assert (args.broker, args.timeout) == ("amqp://b//", 1.0)


def test_an_unknown_log_level_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["worker", "m", "--queue", "q", "--log-level", "loud"])
    assert info.value.code == 2


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"tchu-rpc {tchu_rpc.__version__}\n"


def test_main_configures_logging_at_the_level_given_after_the_command(
    monkeypatch: pytest.MonkeyPatch, _isolated: list[str]
) -> None:
    monkeypatch.setattr(cli.demo, "run", lambda broker, **_: 0)
    assert cli.main(["demo", "--log-level", "error"]) == 0
    assert _isolated == ["error"]


def test_worker_without_queue_exits_with_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["worker", "mod"])
    assert info.value.code == 2
    assert "--queue" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["call", "topic"], ["worker", "--queue", "q"]])
def test_bad_command_lines_exit_with_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(argv)
    assert info.value.code == 2


@pytest.mark.parametrize("command", ["call", "publish"])
def test_data_that_is_not_json_exits_with_a_clear_message(command: str) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "rpc.x", "not json"])
    assert isinstance(info.value.code, str)
    assert info.value.code.startswith("tchu-rpc: data is not JSON")


def test_invalid_setting_exits_1_with_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    # Settings are checked before any handler module is imported or any process spawned.
    code = cli.main(["worker", "no_such_module_anywhere", "--queue", "q", "--event-prefetch", "0"])
    assert code == 1
    assert "tchu-rpc: ConfigError: event_prefetch must be at least 1" in capsys.readouterr().err


def test_invalid_environment_exits_1_with_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TCHU_RPC_CALL_TIMEOUT", "soon")
    assert cli.main(["call", "rpc.x", "{}"]) == 1
    assert "TCHU_RPC_CALL_TIMEOUT" in capsys.readouterr().err


@pytest.mark.timeout(10)
def test_demo_runs_in_memory_and_returns_0(capsys: pytest.CaptureFixture[str], _isolated: list[str]) -> None:
    # Given no broker at all: the demo defaults to kombu's memory:// transport
    # When it runs through the CLI
    code = cli.main(["demo"])

    # Then the call, the remote error and the event all happened
    out = capsys.readouterr().out
    assert code == 0
    assert "tchu_rpc demo on memory://" in out
    assert "-> {'id': 1, 'name': 'Ada'}" in out
    assert "RemoteError RpcError code=not_found" in out
    event_line = next(line for line in out.splitlines() if line.startswith("event "))
    assert event_line.endswith(": True")
    assert _isolated == ["warning"]


def test_worker_passes_its_options_to_the_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    from tchu_rpc import process

    made: list[tuple[Any, ...]] = []

    class Recorded:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append((*args, kwargs))

        def run(self) -> int:
            return 0

    monkeypatch.setattr(process, "Supervisor", Recorded)
    monkeypatch.setattr(process, "import_handlers", lambda modules: None)
    argv = ["worker", "mod", "--queue", "q", "--health-port", "8080", "--metrics-port", "9100"]
    assert cli.main([*argv, "--log-format", "json", "--log-level", "debug", "--call-threads", "3"]) == 0
    ((modules, queue, settings, processes, logs, ports),) = made
    assert (modules, queue, processes, settings.call_concurrency) == (["mod"], "q", 1, 3)
    assert (logs.level, logs.format) == ("debug", "json")
    assert ports == {"health_port": 8080, "metrics_port": 9100}


def test_metrics_without_prometheus_client_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tchu_rpc.contrib
    from tchu_rpc import process

    monkeypatch.setattr(process, "import_handlers", lambda modules: None)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # not installed
    monkeypatch.delattr(tchu_rpc.contrib, "prometheus", raising=False)
    monkeypatch.delitem(sys.modules, "tchu_rpc.contrib.prometheus", raising=False)
    assert cli.main(["worker", "mod", "--queue", "q", "--metrics-port", "9100"]) == 1
    assert "metrics need prometheus_client: pip install 'tchu-rpc[prometheus]'" in capsys.readouterr().err
