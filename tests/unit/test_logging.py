"""The library's logs go through standard `logging`: the application's handlers, levels and formats apply."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from tchu_rpc.log import Logger, capture_logs, formatter, get_logger


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def app_handler() -> Iterator[Collect]:
    """An application that configures only `logging`: one handler on the root logger, level INFO."""
    root = logging.getLogger()
    handler, level = Collect(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def test_an_app_that_configures_logging_receives_the_records_and_nothing_reaches_stdout(
    app_handler: Collect, capfd: pytest.CaptureFixture[str]
) -> None:
    get_logger("tchu_rpc._worker.dispatch").warning("request_refused", topic="rpc.a", reason="no such topic")
    get_logger("tchu_rpc._worker.settle").debug("call_acked", topic="rpc.a")  # below the app's level
    (record,) = app_handler.records
    assert record.name == "tchu_rpc._worker.dispatch"
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "request_refused topic=rpc.a reason='no such topic'"
    assert (
        record.funcName
        == test_an_app_that_configures_logging_receives_the_records_and_nothing_reaches_stdout.__name__
    )
    assert capfd.readouterr().out == ""


def test_the_library_adds_no_handler_and_sets_no_level() -> None:
    get_logger("tchu_rpc.worker").info("worker_stopped", service="s")
    assert logging.getLogger("tchu_rpc").handlers == []
    assert logging.getLogger("tchu_rpc").level == logging.NOTSET


def test_an_apps_format_applies() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    std = logging.getLogger("tchu_rpc.test_format")
    std.addHandler(handler)
    try:
        Logger("tchu_rpc.test_format").error("handler_failed", topic="rpc.x", error="boom")
    finally:
        std.removeHandler(handler)
    assert stream.getvalue() == "ERROR tchu_rpc.test_format: handler_failed topic=rpc.x error=boom\n"


def test_an_exception_is_on_the_record_for_the_apps_formatter(app_handler: Collect) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("tchu_rpc.worker").exception("message_failed", service="s")
    (record,) = app_handler.records
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert "ValueError: boom" in logging.Formatter().format(record)


def test_structlogs_processor_formatter_renders_the_event_with_its_keys() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(json=True))
    std = logging.getLogger("tchu_rpc.test_json")
    std.addHandler(handler)
    try:
        get_logger("tchu_rpc.test_json").warning("reply_dropped", correlation_id="c1", service=None)
    finally:
        std.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["event"] == "reply_dropped"
    assert line["correlation_id"] == "c1"
    assert line["service"] is None
    assert line["level"] == "warning"
    assert line["logger"] == "tchu_rpc.test_json"
    assert "timestamp" in line


def test_enabled_follows_the_logging_level() -> None:
    std = logging.getLogger("tchu_rpc.test_enabled")
    log = get_logger("tchu_rpc.test_enabled")
    std.setLevel(logging.DEBUG)
    assert log.enabled()
    std.setLevel(logging.INFO)
    assert not log.enabled()
    assert log.enabled(logging.INFO)
    std.setLevel(logging.NOTSET)


def test_capture_logs_collects_every_level_and_restores_the_level() -> None:
    with capture_logs() as logs:
        get_logger("tchu_rpc._client.replies").debug("call_progressed", topic="rpc.a")
    assert logs == [
        {
            "event": "call_progressed",
            "topic": "rpc.a",
            "log_level": "debug",
            "logger": "tchu_rpc._client.replies",
        }
    ]
    assert logging.getLogger("tchu_rpc").level == logging.NOTSET
    assert logging.getLogger("tchu_rpc").handlers == []
