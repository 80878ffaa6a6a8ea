"""docs/testing.md runs as it stands: its example service's tests pass in-process, RabbitMQ unreachable.

Each ```python block of the page is a file, named by its first line (`# file: NAME.py`). They are
written to a folder outside the source tree and pytest runs there in a subprocess, as a user's
project would run them: the plugin comes from the installed package's entry point.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from doc_blocks import DOCS, files

PAGE = DOCS / "testing.md"
#: Nothing listens there: a test that reached for RabbitMQ would fail.
NO_BROKER = "amqp://guest:guest@127.0.0.1:1//"


@pytest.mark.timeout(120)
def test_the_example_service_tests_of_docs_testing_pass_without_a_broker(tmp_path: Path) -> None:
    # Given the page's files in a project folder of their own
    page = files(PAGE.read_text(encoding="utf-8"))
    for name, text in page.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    tests = sum(len(re.findall(r"^def test_", text, re.MULTILINE)) for text in page.values())
    # When pytest runs them with every broker address pointing nowhere
    env = {**os.environ, "TCHU_RPC_TEST_BROKER_URL": NO_BROKER, "TCHU_RPC_BROKER_URL": NO_BROKER}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", "."],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    # Then every one of its tests passes
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert tests >= 4
    assert f"{tests} passed" in done.stdout, done.stdout[-2000:]
