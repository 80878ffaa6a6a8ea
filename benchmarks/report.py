"""The report: tchu_rpc's ratios to the floor and the baselines, the issue's targets, markdown tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from benchmarks.contenders import Cell
from benchmarks.scenarios import EventRun, MemoryRun, Variant
from benchmarks.topics import TopicsRun

SUBJECT = "tchu_rpc"
FLOOR = "floor"
FLOOR_CONFIRMED = "floor+conf"  # the floor with tchu_rpc's confirms; informative, no target
BASELINE = "tchu-tchu"
AIO_PIKA = "aio-pika"  # a second baseline; informative, no target
SEQUENTIAL_P50_MAX = 1.25  # tchu_rpc p50 / floor p50 at 1 in flight
THROUGHPUT_MIN = 0.85  # tchu_rpc calls/s / floor calls/s at 2 procs x 8 and x 64 in flight
BASELINE_FACTOR = 4.0  # tchu_rpc vs tchu-tchu: throughput and p50, same procs and in-flight
MEMORY_GROWTH_MAX = 5.0  # %, from the first memory checkpoint to the last
TOPICS_START_MAX = 2.0  # s: registration of 10,000 handlers + the worker's start
TOPICS_MATCH_MAX = 1.5  # uncached match p50 with 10,000 patterns / with 10 ("independent of the count")
TOPICS_EVENTS_MIN = 0.9  # events/s with 10,000 patterns / with 10 ("within 10 %")


@dataclass(frozen=True)
class Ratio:
    """tchu_rpc against the floor, tchu-tchu and aio-pika at one cell (None where one did not run)."""

    procs: int
    in_flight: int
    p50_vs_floor: float | None  # tchu_rpc p50 / floor p50: lower is better, 1.0 is the floor
    rate_vs_floor: float | None  # tchu_rpc calls/s / floor calls/s: higher is better
    p50_gain_vs_baseline: float | None  # tchu-tchu p50 / tchu_rpc p50: how many times lower
    rate_vs_baseline: float | None  # tchu_rpc calls/s / tchu-tchu calls/s
    p50_vs_floor_conf: float | None = None  # tchu_rpc p50 / floor+conf p50
    rate_vs_floor_conf: float | None = None  # tchu_rpc calls/s / floor+conf calls/s
    p50_vs_aio_pika: float | None = None  # tchu_rpc p50 / aio-pika p50
    rate_vs_aio_pika: float | None = None  # tchu_rpc calls/s / aio-pika calls/s


@dataclass(frozen=True)
class Target:
    """One of the issue's targets, the figure measured for it, and whether it is met (None: not run)."""

    target: str
    measured: str
    met: bool | None


def ratios(cells: Sequence[Cell]) -> list[Ratio]:
    """Return tchu_rpc's ratios to the floor, tchu-tchu and aio-pika for every cell tchu_rpc ran."""
    by = {(c.contender, c.procs, c.in_flight): c for c in cells}
    out = []
    for cell in sorted((c for c in cells if c.contender == SUBJECT), key=lambda c: (c.procs, c.in_flight)):
        floor = by.get((FLOOR, cell.procs, cell.in_flight))
        base = by.get((BASELINE, cell.procs, cell.in_flight))
        conf = by.get((FLOOR_CONFIRMED, cell.procs, cell.in_flight))
        aio = by.get((AIO_PIKA, cell.procs, cell.in_flight))
        out.append(
            Ratio(
                procs=cell.procs,
                in_flight=cell.in_flight,
                p50_vs_floor=cell.p50 / floor.p50 if floor else None,
                rate_vs_floor=cell.calls_per_s / floor.calls_per_s if floor else None,
                p50_gain_vs_baseline=base.p50 / cell.p50 if base else None,
                rate_vs_baseline=cell.calls_per_s / base.calls_per_s if base else None,
                p50_vs_floor_conf=cell.p50 / conf.p50 if conf else None,
                rate_vs_floor_conf=cell.calls_per_s / conf.calls_per_s if conf else None,
                p50_vs_aio_pika=cell.p50 / aio.p50 if aio else None,
                rate_vs_aio_pika=cell.calls_per_s / aio.calls_per_s if aio else None,
            )
        )
    return out


def targets(rows: Sequence[Ratio], memory: MemoryRun | None) -> list[Target]:
    """Check the issue's targets against the ratios and the memory run."""
    seq = [r.p50_vs_floor for r in rows if r.in_flight == 1 and r.p50_vs_floor is not None]
    two = [r.rate_vs_floor for r in rows if r.procs == 2 and r.in_flight in (8, 64) and r.rate_vs_floor]
    rate_b = [r.rate_vs_baseline for r in rows if r.rate_vs_baseline is not None]
    p50_b = [r.p50_gain_vs_baseline for r in rows if r.p50_gain_vs_baseline is not None]
    out = [
        _bound(
            f"sequential p50 <= {SEQUENTIAL_P50_MAX}x floor (1 in flight, worst over procs)",
            seq,
            max,
            lambda v: v <= SEQUENTIAL_P50_MAX,
        ),
        _bound(
            f"throughput >= {THROUGHPUT_MIN}x floor at 2 procs x 8 and x 64 in flight (worst)",
            two,
            min,
            lambda v: v >= THROUGHPUT_MIN,
        ),
        _bound(
            f"throughput >= {BASELINE_FACTOR:.0f}x tchu-tchu, same procs and in-flight (worst cell)",
            rate_b,
            min,
            lambda v: v >= BASELINE_FACTOR,
        ),
        _bound(
            f"p50 >= {BASELINE_FACTOR:.0f}x lower than tchu-tchu's (worst cell)",
            p50_b,
            min,
            lambda v: v >= BASELINE_FACTOR,
        ),
    ]
    if memory is None or len(memory.points) < 2:
        out.append(Target(f"memory growth <= {MEMORY_GROWTH_MAX:.0f} % (worker and client)", "not run", None))
    else:
        first, last = memory.points[0].calls, memory.points[-1].calls
        worst = max(memory.worker_growth_pct, memory.client_growth_pct)
        measured = (
            f"worker {memory.worker_growth_pct:+.1f} %, client {memory.client_growth_pct:+.1f} % "
            f"({first} -> {last} calls)"
        )
        out.append(
            Target(
                f"memory growth <= {MEMORY_GROWTH_MAX:.0f} % (worker and client)",
                measured,
                worst <= MEMORY_GROWTH_MAX,
            )
        )
    return out


def topic_targets(run: TopicsRun | None) -> list[Target]:
    """Check the targets of the `topics` scenario (none when it did not run)."""
    if run is None:
        return []
    n = f"{run.patterns:,}"
    restart, first = run.registration_s + run.restart_s, run.registration_s + run.first_start_s
    return [
        Target(
            f"registration + start <= {TOPICS_START_MAX:.0f} s, {n} topics, bindings in place (restart)",
            f"{run.registration_s:.2f} + {run.restart_s:.2f} = {restart:.2f} s",
            restart <= TOPICS_START_MAX,
        ),
        Target(
            f"registration + start <= {TOPICS_START_MAX:.0f} s, {n} topics, new queues (first start)",
            f"{run.registration_s:.2f} + {run.first_start_s:.2f} = {first:.2f} s "
            f"(the broker alone makes the bindings in {run.broker_bind_s:.2f} s)",
            first <= TOPICS_START_MAX,
        ),
        Target(
            f"uncached match p50 with {n} patterns <= {TOPICS_MATCH_MAX}x with 10",
            f"{run.match_p50_us_few:.2f} -> {run.match_p50_us_many:.2f} us ({run.match_ratio:.2f}x)",
            run.match_ratio <= TOPICS_MATCH_MAX,
        ),
        Target(
            f"events/s with {n} patterns >= {TOPICS_EVENTS_MIN:.2f}x with 10",
            f"{run.delivered_per_s_few:.0f} -> {run.delivered_per_s_many:.0f} delivered/s "
            f"({run.events_ratio:.2f}x)",
            run.events_ratio >= TOPICS_EVENTS_MIN,
        ),
    ]


def render_summary(rows: Sequence[Ratio], goals: Sequence[Target]) -> str:
    """Return the ratios and targets as plain text for the terminal."""
    lines = [
        "tchu_rpc vs floor, floor+conf and aio-pika (p50 x, calls/s x) and vs tchu-tchu "
        "(p50 times lower, calls/s x):",
        f"{'procs':>6}{'in-flight':>10}{'p50/floor':>11}{'rate/floor':>12}{'p50/f+c':>9}{'rate/f+c':>10}"
        f"{'tt/p50':>9}{'rate/tt':>9}{'p50/ap':>8}{'rate/ap':>9}",
    ]
    for r in rows:
        lines.append(
            f"{r.procs:>6}{r.in_flight:>10}{_x(r.p50_vs_floor):>11}{_x(r.rate_vs_floor):>12}"
            f"{_x(r.p50_vs_floor_conf):>9}{_x(r.rate_vs_floor_conf):>10}"
            f"{_x(r.p50_gain_vs_baseline):>9}{_x(r.rate_vs_baseline):>9}"
            f"{_x(r.p50_vs_aio_pika):>8}{_x(r.rate_vs_aio_pika):>9}"
        )
    lines.append("")
    lines.append("targets:")
    for goal in goals:
        lines.append(f"  [{_verdict(goal.met)}] {goal.target}: {goal.measured}")
    return "\n".join(lines)


def render_markdown(
    header: dict[str, object],
    cells: Sequence[Cell],
    goals: Sequence[Target],
    rows: Sequence[Ratio],
    variants: Sequence[Variant],
    events: Sequence[EventRun],
    memory: MemoryRun | None,
    topics: TopicsRun | None = None,
) -> str:
    """Return the whole report as markdown."""
    parts = ["| | |", "|---|---|", *(f"| {k} | {_cell_text(v)} |" for k, v in header.items())]
    if goals:
        parts += ["", "### Targets", "", "| target | measured | met |", "|---|---|---|"]
        parts += [f"| {g.target} | {g.measured} | {_verdict(g.met)} |" for g in goals]
    if cells:
        parts += ["", "### Calls: echo, procs x in-flight", "", _calls_table(cells)]
    if rows:
        parts += ["", "### tchu_rpc's ratios", ""]
        parts += [
            "| procs | in-flight | p50 / floor | calls/s / floor | p50 / floor+conf | calls/s / floor+conf "
            "| tchu-tchu p50 / tchu_rpc p50 | calls/s / tchu-tchu | p50 / aio-pika | calls/s / aio-pika |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        parts += [
            f"| {r.procs} | {r.in_flight} | {_x(r.p50_vs_floor)} | {_x(r.rate_vs_floor)} "
            f"| {_x(r.p50_vs_floor_conf)} | {_x(r.rate_vs_floor_conf)} "
            f"| {_x(r.p50_gain_vs_baseline)} | {_x(r.rate_vs_baseline)} "
            f"| {_x(r.p50_vs_aio_pika)} | {_x(r.rate_vs_aio_pika)} |"
            for r in rows
        ]
    for scenario in ("payloads", "serializers"):
        chosen = [v for v in variants if v.scenario == scenario]
        if chosen:
            parts += ["", f"### {scenario.capitalize()}", "", _variant_table(chosen)]
    if events:
        parts += ["", "### Events: confirmed publish rate, publish -> handler delay", ""]
        parts += [
            "| how | publishers | events | delivered | confirmed/s | p50 ms | p90 ms | p99 ms | max ms |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        parts += [
            f"| {e.mode} | {e.publishers} | {e.events} | {e.delivered} | {e.published_per_s:.0f} "
            f"| {e.p50:.2f} | {e.p90:.2f} | {e.p99:.2f} | {e.max:.2f} |"
            for e in events
        ]
    if memory is not None and memory.points:
        parts += [
            "",
            f"### Memory: RSS of one worker process and of the client ({memory.in_flight} in flight)",
            "",
            "| calls | worker VmRSS KiB | client VmRSS KiB |",
            "|--:|--:|--:|",
        ]
        parts += [f"| {p.calls} | {p.worker_rss_kib} | {p.client_rss_kib} |" for p in memory.points]
        if len(memory.points) > 1:
            parts.append(
                f"| growth | {memory.worker_growth_pct:+.1f} % | {memory.client_growth_pct:+.1f} % |"
            )
    if topics is not None:
        parts += ["", f"### Topics: {topics.patterns:,} patterns against 10", "", _topics_table(topics)]
    return "\n".join(parts) + "\n"


def json_extra(
    rows: Sequence[Ratio],
    goals: Sequence[Target],
    variants: Sequence[Variant],
    events: Sequence[EventRun],
    memory: MemoryRun | None,
    topics: TopicsRun | None = None,
) -> dict[str, object]:
    """Return the results beyond the matrix cells, for the JSON file."""
    extra: dict[str, object] = {
        "ratios": [asdict(r) for r in rows],
        "targets": [asdict(g) for g in goals],
        "variants": [asdict(v) for v in variants],
        "events": [asdict(e) for e in events],
    }
    if memory is not None:
        extra["memory"] = {
            **asdict(memory),
            "worker_growth_pct": memory.worker_growth_pct if len(memory.points) > 1 else None,
            "client_growth_pct": memory.client_growth_pct if len(memory.points) > 1 else None,
        }
    if topics is not None:
        extra["topics"] = {
            **asdict(topics),
            "match_ratio": topics.match_ratio,
            "events_ratio": topics.events_ratio,
        }
    return extra


def _topics_table(run: TopicsRun) -> str:
    rows = [
        ("register handlers (10 calls too)", "-", f"{run.registration_s:.2f} s"),
        ("worker start, new queues", "-", f"{run.first_start_s:.2f} s"),
        ("the broker alone: the same bindings pipelined on one channel", "-", f"{run.broker_bind_s:.2f} s"),
        ("worker start, bindings in place (restart)", "-", f"{run.restart_s:.2f} s"),
        ("worker start, new queues, 10,000 call topics too", "-", f"{run.first_start_both_s:.2f} s"),
        ("uncached match p50", f"{run.match_p50_us_few:.2f} us", f"{run.match_p50_us_many:.2f} us"),
        (
            f"events delivered/s ({run.events} events, {run.publishers} publishers, median of rounds)",
            f"{run.delivered_per_s_few:.0f}",
            f"{run.delivered_per_s_many:.0f}",
        ),
        (
            "events confirmed/s (same runs)",
            f"{run.confirmed_per_s_few:.0f}",
            f"{run.confirmed_per_s_many:.0f}",
        ),
    ]
    lines = [f"| | 10 patterns | {run.patterns:,} patterns |", "|---|--:|--:|"]
    lines += [f"| {label} | {few} | {many} |" for label, few, many in rows]
    return "\n".join(lines)


def _calls_table(cells: Sequence[Cell]) -> str:
    lines = [
        "| contender | procs | in-flight | calls | p50 ms | p90 ms | p99 ms | max ms | calls/s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    order = [FLOOR, FLOOR_CONFIRMED, "floor+tx", SUBJECT, BASELINE, AIO_PIKA]
    rank = {name: i for i, name in enumerate(order)}
    for c in sorted(
        cells, key=lambda c: (c.procs, c.in_flight, rank.get(c.contender, len(order)), c.contender)
    ):
        lines.append(
            f"| {c.contender} | {c.procs} | {c.in_flight} | {c.calls} | {c.p50:.2f} | {c.p90:.2f} "
            f"| {c.p99:.2f} | {c.max:.2f} | {c.calls_per_s:.0f} |"
        )
    return "\n".join(lines)


def _variant_table(variants: Sequence[Variant]) -> str:
    lines = [
        "| variant | contender | in-flight | calls | p50 ms | p90 ms | p99 ms | max ms | calls/s |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for v in variants:
        c = v.cell
        lines.append(
            f"| {v.label} | {c.contender} | {c.in_flight} | {c.calls} | {c.p50:.2f} | {c.p90:.2f} "
            f"| {c.p99:.2f} | {c.max:.2f} | {c.calls_per_s:.0f} |"
        )
    return "\n".join(lines)


def _bound(
    name: str, values: list[float], pick: Callable[[list[float]], float], ok: Callable[[float], bool]
) -> Target:
    if not values:
        return Target(name, "not run", None)
    worst = pick(values)
    return Target(name, f"{worst:.2f}x", ok(worst))


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _verdict(met: bool | None) -> str:
    return "not run" if met is None else "met" if met else "NOT met"


def _cell_text(value: object) -> str:
    return str(value).replace("|", "\\|")
