"""Handler lanes without a broker: jobs in arrival order, and a fresh thread in place of an abandoned one.

Jobs are gated with events, so a job is running (or blocked) exactly when the test says it is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from engine_support import WAIT, no_thread_left_behind  # noqa: F401

from tchu_rpc._worker.lanes import Lane
from tchu_rpc.testing import capture_logs

pytestmark = pytest.mark.timeout(30)


class Job:
    """A handler's work: it says when it started, and returns once `release` is set (at once if open)."""

    def __init__(self, name: str, gated: bool = False) -> None:
        self.name = name
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.thread: threading.Thread | None = None
        if not gated:
            self.release.set()

    def run(self) -> None:
        self.thread = threading.current_thread()
        self.started.set()
        assert self.release.wait(WAIT), f"{self.name} was never released"
        self.finished.set()


class Ran:
    """The lane's `run`: run the job, and note which finished in which order on which thread."""

    def __init__(self) -> None:
        self.order: list[tuple[str, str]] = []
        self.changed = threading.Condition()

    def __call__(self, job: Job) -> None:
        job.run()
        with self.changed:
            self.order.append((job.name, threading.current_thread().name))
            self.changed.notify_all()

    def wait_for(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.order) >= count, timeout=WAIT)


@pytest.fixture
def make_lane() -> Iterator[Callable[..., tuple[Lane, Ran]]]:
    lanes: list[Lane] = []

    def make(size: int = 1, run: Callable[[Any], None] | None = None) -> tuple[Lane, Ran]:
        ran = Ran()
        lanes.append(Lane("t-lane", size, run or ran))
        return lanes[-1], ran

    yield make
    for lane in lanes:
        lane.close()


def test_a_one_thread_lane_runs_jobs_in_arrival_order_on_its_thread(
    make_lane: Callable[..., tuple[Lane, Ran]],
) -> None:
    lane, ran = make_lane()
    # Given a first job blocked, so that the others queue behind it
    first = Job("job-0", gated=True)
    lane.submit(first)
    assert first.started.wait(WAIT)
    for i in range(1, 5):
        lane.submit(Job(f"job-{i}"))
    # When it returns
    first.release.set()
    # Then all ran in the order they came, on the lane's one thread
    assert ran.wait_for(5)
    assert ran.order == [(f"job-{i}", "t-lane-0") for i in range(5)]


def test_abandoning_a_running_job_lets_a_queued_job_run_while_it_is_still_blocked(
    make_lane: Callable[..., tuple[Lane, Ran]],
) -> None:
    lane, ran = make_lane()
    # Given a one-thread lane whose job is blocked, and a job queued behind it
    stuck, queued = Job("stuck", gated=True), Job("queued")
    lane.submit(stuck)
    assert stuck.started.wait(WAIT)
    lane.submit(queued)

    # When the lane abandons the stuck job's thread
    with capture_logs() as logs:
        assert lane.abandon(stuck) is True

    # Then a new thread runs the queued job while the stuck one is still blocked
    assert ran.wait_for(1)
    assert ran.order == [("queued", "t-lane-1")]
    assert not stuck.finished.is_set()
    assert [(e["event"], e["thread"], e["still_running"]) for e in logs] == [
        ("handler_thread_abandoned", "t-lane-0", 1)
    ]

    # And once the stuck job returns, its thread ends instead of serving the lane again
    stuck.release.set()
    assert ran.wait_for(2)
    assert stuck.thread is not None
    stuck.thread.join(WAIT)
    assert not stuck.thread.is_alive()
    after = Job("after")
    lane.submit(after)
    assert after.finished.wait(WAIT)
    assert after.thread is queued.thread


def test_abandoning_a_job_no_thread_runs_does_nothing(make_lane: Callable[..., tuple[Lane, Ran]]) -> None:
    lane, ran = make_lane()
    done = Job("done")
    lane.submit(done)
    assert ran.wait_for(1)
    with capture_logs() as logs:
        assert lane.abandon(done) is False
        assert lane.abandon(Job("never submitted")) is False
    assert logs == []


def test_a_crashing_job_is_logged_and_the_thread_serves_on(
    make_lane: Callable[..., tuple[Lane, Ran]],
) -> None:
    after = Job("after")

    def run(job: Job | str) -> None:
        if job == "crash":
            raise RuntimeError("a bug in the worker")
        assert isinstance(job, Job)
        job.run()

    lane, _ = make_lane(run=run)
    with capture_logs() as logs:
        lane.submit("crash")
        lane.submit(after)
        assert after.finished.wait(WAIT)
    assert after.thread is not None and after.thread.name == "t-lane-0"
    assert [(e["event"], e["error"]) for e in logs] == [("lane_job_crashed", "a bug in the worker")]


def test_close_lets_each_thread_finish_its_job_and_exit(make_lane: Callable[..., tuple[Lane, Ran]]) -> None:
    lane, ran = make_lane(size=2)
    # Given two threads, each in a job
    jobs = [Job("a", gated=True), Job("b", gated=True)]
    for job in jobs:
        lane.submit(job)
    assert all(job.started.wait(WAIT) for job in jobs)
    # When the lane closes, then the jobs return
    lane.close()
    for job in jobs:
        job.release.set()
    # Then both jobs finished and both threads exited
    assert ran.wait_for(2)
    for job in jobs:
        assert job.thread is not None
        job.thread.join(WAIT)
        assert not job.thread.is_alive()
