"""A supervisor's probe from its processes' reports: starting, consuming, stuck, silent."""

from __future__ import annotations

import multiprocessing

import pytest

from tchu_rpc import health
from tchu_rpc.health import Board, Probe


@pytest.fixture
def board() -> Board:
    return Board(multiprocessing.get_context("spawn"), 2)


def test_starting_processes_are_live_but_not_ready(board: Board) -> None:
    assert board.probe() == Probe(True, False, "process 0: starting; process 1: starting")


def test_ready_once_every_process_consumes(board: Board) -> None:
    board.report(0, Probe(True, True))
    assert board.probe().ready is False
    board.report(1, Probe(True, True))
    assert board.probe() == Probe(True, True, "")


def test_a_stuck_process_makes_the_supervisor_not_live(board: Board) -> None:
    board.report(0, Probe(True, True))
    board.report(1, Probe(False, False, "I/O thread stuck for 12.0 s"))
    assert board.probe() == Probe(False, False, "process 1: stuck")


def test_a_silent_process_is_stuck(board: Board, monkeypatch: pytest.MonkeyPatch) -> None:
    board.report(0, Probe(True, True))
    board.report(1, Probe(True, True))
    now = health.time.time()
    monkeypatch.setattr(health.time, "time", lambda: now + health.STALL_LIMIT + 1)
    assert board.probe() == Probe(False, False, "process 0: stuck; process 1: stuck")


def test_a_restarted_process_starts_afresh(board: Board) -> None:
    board.report(0, Probe(False, False))
    board.report(1, Probe(True, True))
    board.clear(0)
    assert board.probe() == Probe(True, False, "process 0: starting")
