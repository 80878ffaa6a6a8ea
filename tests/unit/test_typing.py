"""A type checker knows what a typed call returns: mypy on a sample module (tests/typing/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api

SAMPLES = Path(__file__).resolve().parents[1] / "typing"


def _mypy(name: str) -> tuple[str, int]:
    out, err, status = api.run(["--strict", "--no-incremental", "--cache-dir=/dev/null", str(SAMPLES / name)])
    return out + err, status


@pytest.mark.timeout(120)
def test_mypy_sees_the_response_types_of_typed_topics() -> None:
    out, status = _mypy("sample.py")
    assert status == 0, out


@pytest.mark.timeout(120)
def test_mypy_refuses_a_request_or_a_result_of_the_wrong_type() -> None:
    out, status = _mypy("wrong.py")
    assert status == 1, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert [int(line.split(":")[1]) for line in errors] == [23, 24, 25], out
