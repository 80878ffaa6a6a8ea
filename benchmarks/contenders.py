"""The contender interface, the measurement matrix, and the side-by-side report with ratios."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from benchmarks.loadgen import RunResult


class Contender(Protocol):
    """One RPC implementation under test: its servers run as subprocesses, its callers in threads."""

    name: str

    @property
    def settings(self) -> str:
        """Describe the setup (acks, prefetch, durability, backend) in one line for the report."""
        ...

    def start_servers(self, broker_url: str, processes: int) -> None:
        """Start `processes` server processes and return once every one consumes."""
        ...

    def stop_servers(self) -> None:
        """Stop the servers (killing what does not stop in time) and delete their queues."""
        ...

    def run_calls(self, broker_url: str, n_calls: int, in_flight: int, pad: str, warmup: int) -> RunResult:
        """Make `n_calls` timed echo calls with `in_flight` concurrent callers, after `warmup` calls."""
        ...


@dataclass(frozen=True)
class Plan:
    """What to measure: every `procs` x `in_flight` cell gets `calls` timed calls."""

    procs: tuple[int, ...] = (1, 2, 4)
    in_flight: tuple[int, ...] = (1, 8, 64)
    calls: int = 2000
    warmup: int = 100
    pad_size: int = 64


@dataclass(frozen=True)
class Cell:
    """The figures of one contender at one `procs` x `in_flight` point (latencies in ms)."""

    contender: str
    procs: int
    in_flight: int
    calls: int
    p50: float
    p90: float
    p99: float
    max: float
    calls_per_s: float

    @classmethod
    def from_run(cls, contender: str, procs: int, in_flight: int, run: RunResult) -> Cell:
        """Summarise one run."""
        ordered = sorted(run.latencies)
        return cls(
            contender=contender,
            procs=procs,
            in_flight=in_flight,
            calls=len(ordered),
            p50=_percentile(ordered, 50) * 1e3,
            p90=_percentile(ordered, 90) * 1e3,
            p99=_percentile(ordered, 99) * 1e3,
            max=ordered[-1] * 1e3,
            calls_per_s=len(ordered) / run.elapsed,
        )


def measure(contenders: Sequence[Contender], broker_url: str, plan: Plan, echo: bool = True) -> list[Cell]:
    """Run the whole plan for each contender in turn; servers restart for each process count."""
    pad = "x" * plan.pad_size
    cells: list[Cell] = []
    if echo:
        print(f"  {_HEADER}", flush=True)
    for contender in contenders:
        for procs in plan.procs:
            with _servers(contender, broker_url, procs):
                for in_flight in plan.in_flight:
                    run = contender.run_calls(broker_url, plan.calls, in_flight, pad, plan.warmup)
                    cell = Cell.from_run(contender.name, procs, in_flight, run)
                    cells.append(cell)
                    if echo:
                        print(f"  {_row(cell, None)}", flush=True)
    return cells


def render(cells: Sequence[Cell], reference: str) -> str:
    """Return the table, contenders side by side per cell, with ratios to `reference`."""
    refs = {(c.procs, c.in_flight): c for c in cells if c.contender == reference}
    ordered = sorted(cells, key=lambda c: (c.in_flight != 1, c.procs, c.in_flight))
    lines = [
        f"ratios: p50 / {reference}'s p50 and calls/s / {reference}'s calls/s, same procs and in-flight",
        _HEADER,
        "-" * len(_HEADER),
    ]
    previous: tuple[int, int] | None = None
    for cell in ordered:
        key = (cell.procs, cell.in_flight)
        if previous is not None and key != previous:
            lines.append("")
        previous = key
        lines.append(_row(cell, refs.get(key)))
    return "\n".join(lines)


def write_json(path: Path, header: dict[str, object], cells: Sequence[Cell]) -> None:
    """Save the run's context and cells for later comparison."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**header, "cells": [asdict(c) for c in cells]}, indent=2) + "\n")


_HEADER = (
    f"{'contender':<12}{'procs':>6}{'in-flight':>10}{'calls':>7}{'p50 ms':>9}{'p90 ms':>9}"
    f"{'p99 ms':>9}{'max ms':>9}{'calls/s':>10}{'p50 x':>8}{'calls/s x':>11}"
)


def _row(cell: Cell, ref: Cell | None) -> str:
    p50_ratio = f"{cell.p50 / ref.p50:.2f}" if ref else "-"
    cps_ratio = f"{cell.calls_per_s / ref.calls_per_s:.2f}" if ref else "-"
    return (
        f"{cell.contender:<12}{cell.procs:>6}{cell.in_flight:>10}{cell.calls:>7}{cell.p50:>9.2f}"
        f"{cell.p90:>9.2f}{cell.p99:>9.2f}{cell.max:>9.2f}{cell.calls_per_s:>10.0f}"
        f"{p50_ratio:>8}{cps_ratio:>11}"
    )


def _percentile(ordered: Sequence[float], pct: float) -> float:
    # Nearest rank: the smallest value with at least pct % of the values at or below it.
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


@contextmanager
def _servers(contender: Contender, broker_url: str, procs: int) -> Iterator[None]:
    contender.start_servers(broker_url, procs)
    try:
        yield
    finally:
        contender.stop_servers()
