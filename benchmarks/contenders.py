"""The contender interface, the measurement matrix, and the side-by-side report with ratios."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from benchmarks.loadgen import RunResult
from benchmarks.progress import Progress


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
    #: Rounds the calls of each cell are split over (warm-up calls are made in every round).
    rounds: int = 1


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
    #: Latency (ms) at percentiles 0, 1, ..., 100: the distribution, for the chart.
    quantiles: tuple[float, ...] = ()

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
            quantiles=tuple(round(_percentile(ordered, pct) * 1e3, 4) for pct in range(101)),
        )


def plan_units(plan: Plan, contenders: int) -> int:
    """Return the calls the plan makes, for a progress bar."""
    per_cell = plan.calls + plan.warmup * plan.rounds
    return contenders * len(plan.procs) * len(plan.in_flight) * per_cell


def measure(
    contenders: Sequence[Contender], broker_url: str, plan: Plan, progress: Progress | None = None
) -> list[Cell]:
    """Run the plan; each cell's calls are split over `plan.rounds` rounds, merged at the end.

    Within a round, all contenders run one process count before the next: a machine that is
    busier for a while slows every contender, not just one, and the ratios stay fair.
    """
    pad = "x" * plan.pad_size
    runs: dict[tuple[str, int, int], list[RunResult]] = {}
    echo = progress.echo if progress else print
    echo(f"  {'round':<6}{_HEADER}")
    for round_no in range(plan.rounds):
        calls = plan.calls // plan.rounds + (1 if round_no < plan.calls % plan.rounds else 0)
        for procs in plan.procs:
            for contender in contenders:
                if progress:
                    progress.stage(f"calls: {contender.name} x {procs} procs, round {round_no + 1}")
                with servers(contender, broker_url, procs):
                    for in_flight in plan.in_flight:
                        run = contender.run_calls(broker_url, calls, in_flight, pad, plan.warmup)
                        runs.setdefault((contender.name, procs, in_flight), []).append(run)
                        if progress:
                            progress.advance(calls + plan.warmup)
                        cell = Cell.from_run(contender.name, procs, in_flight, run)
                        echo(f"  {round_no + 1:<6}{_row(cell, None)}")
    return [Cell.from_run(*key, _merge(parts)) for key, parts in runs.items()]


def _merge(parts: Sequence[RunResult]) -> RunResult:
    # Throughput over the rounds is all their calls over all their timed wall time.
    latencies = [x for part in parts for x in part.latencies]
    return RunResult(latencies=latencies, elapsed=sum(part.elapsed for part in parts))


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


def write_json(
    path: Path, header: dict[str, object], cells: Sequence[Cell], extra: dict[str, object] | None = None
) -> None:
    """Save the run's context, cells and other scenarios' results for later comparison."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**header, "cells": [asdict(c) for c in cells], **(extra or {})}
    path.write_text(json.dumps(data, indent=2) + "\n")


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
def servers(contender: Contender, broker_url: str, procs: int) -> Iterator[None]:
    contender.start_servers(broker_url, procs)
    try:
        yield
    finally:
        contender.stop_servers()
