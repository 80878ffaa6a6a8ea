"""Run the chosen scenarios in order under one progress bar, and collect their results."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import report, scenarios, topics
from benchmarks.contenders import Cell, Contender, Plan, measure, plan_units, write_json
from benchmarks.progress import Progress
from benchmarks.scenarios import EventRun, MemoryRun, Variant
from benchmarks.tchu_rpc_contender import TchuRpcContender, in_process
from benchmarks.topics import TopicsRun

PAYLOAD_CONTENDERS = ("floor", "tchu_rpc")


@dataclass
class Results:
    """Everything one run measured."""

    cells: list[Cell] = field(default_factory=list)
    variants: list[Variant] = field(default_factory=list)
    events: list[EventRun] = field(default_factory=list)
    memory: MemoryRun | None = None
    topics: TopicsRun | None = None

    def ratios(self) -> list[report.Ratio]:
        """Return tchu_rpc's ratios to the floor, tchu-tchu and aio-pika."""
        return report.ratios(self.cells)

    def targets(self) -> list[report.Target]:
        """Return the issue's targets and whether this run meets them."""
        return report.targets(self.ratios(), self.memory) + report.topic_targets(self.topics)

    def summary(self) -> str:
        """Return the ratios, targets and other scenarios as terminal text."""
        return report.render_summary(self.ratios(), self.targets())

    def write(self, json_path: Path, md_path: Path, header: dict[str, object]) -> None:
        """Write the JSON and the markdown report."""
        ratios, goals = self.ratios(), self.targets()
        extra = report.json_extra(ratios, goals, self.variants, self.events, self.memory, self.topics)
        write_json(json_path, header, self.cells, extra)
        md = report.render_markdown(
            header, self.cells, goals, ratios, self.variants, self.events, self.memory, self.topics
        )
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(md)


def units(args: argparse.Namespace, plan: Plan) -> int:
    """Return the work units (calls or events) of the whole run, for the progress bar."""
    chosen = set(args.scenarios)
    total = plan_units(plan, len(args.contenders)) if "calls" in chosen else 0
    per_cell = args.calls + args.warmup  # payloads and serializers run in one round
    if "payloads" in chosen:
        total += (
            len([c for c in args.contenders if c in PAYLOAD_CONTENDERS])
            * len(scenarios.PAYLOAD_SIZES)
            * per_cell
        )
    if "tchu_rpc" in args.contenders:
        if "serializers" in chosen:
            total += len(scenarios.SERIALIZERS) * len(scenarios.SERIALIZER_IN_FLIGHT) * per_cell
        if "events" in chosen:
            total += len(scenarios.EVENT_PUBLISHERS) * args.events
        if "memory" in chosen:
            total += max(args.memory_calls, default=0)
        if "topics" in chosen:
            total += 2 * topics.ROUNDS * args.events
    return total


def run_scenarios(
    args: argparse.Namespace, plan: Plan, contenders: Sequence[Contender], enabled: bool = True
) -> Results:
    """Run every chosen scenario; those that need tchu_rpc are skipped with a notice without it."""
    chosen = set(args.scenarios)
    progress = Progress(units(args, plan), enabled=None if enabled else False)
    results = Results()
    subject = next((c for c in contenders if type(c) is TchuRpcContender), None)  # not its async sibling
    needs_subject = sorted(chosen & {"events", "serializers", "memory", "topics"})
    if subject is None and needs_subject:
        print(f"notice: {', '.join(needs_subject)} skipped: they measure tchu_rpc alone", file=sys.stderr)
    try:
        if "calls" in chosen:
            results.cells = measure(contenders, args.broker, plan, progress)
        if "payloads" in chosen:
            picked = [c for c in contenders if c.name in PAYLOAD_CONTENDERS]
            results.variants += scenarios.run_payloads(picked, args.broker, args.calls, args.warmup, progress)
        if subject is not None:
            _run_subject(args, subject, results, progress)
    finally:
        progress.close()
    return results


def _run_subject(
    args: argparse.Namespace, subject: TchuRpcContender, results: Results, progress: Progress
) -> None:
    chosen = set(args.scenarios)
    if "serializers" in chosen:
        results.variants += scenarios.run_serializers(subject, args.broker, args.calls, args.warmup, progress)
    if "events" in chosen:
        results.events = scenarios.run_events(subject, args.broker, args.events, progress)
    if "memory" in chosen:
        if scenarios.memory_supported(args.broker):
            results.memory = scenarios.run_memory(
                subject, args.broker, args.memory_calls, args.memory_in_flight, progress
            )
        else:
            print("notice: memory skipped: it needs an AMQP broker and /proc", file=sys.stderr)
    if "topics" in chosen:
        if in_process(args.broker):
            print("notice: topics skipped: it needs an AMQP broker", file=sys.stderr)
        else:
            results.topics = topics.run_topics(subject, args.broker, args.events, progress)
