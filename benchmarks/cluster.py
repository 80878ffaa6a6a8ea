"""The cost of replication: calls and events on classic queues on one node vs quorum queues on three.

    python -m benchmarks.cluster [--calls 2000] [--procs 1,2,4] [--in-flight 1,8,64] [--events 2000]

Starts the private three-node cluster of tests/cluster/nodes.py (the installed rabbitmq-server, on
loopback; never the broker on 5672) and, in one run so that the ratios compare, runs the harness's
`calls` matrix (tchu_rpc and the floor) and `events` scenario (tchu_rpc) in two configurations:

- classic: classic service queues; clients and servers given node 1's URL alone;
- quorum: quorum service queues (a member on each node); clients and servers given all three URLs as a
  `;` failover list (round robin: node 1 is tried first).

The floor's classic queue is non-durable and auto-delete, as in `python -m benchmarks`; its quorum queue
is durable (quorum queues always are). Within a round, every contender and configuration runs one
process count before the next (`contenders.measure`). Before the timed runs, each configuration's
servers are started once, with a caller that made one call, to note where its queues' leaders are
and which nodes the connections went to. Prints the figures with quorum / classic ratios, writes
benchmarks/out/cluster.{json,md} (or --out), and stops the cluster, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Protocol

import kombu
from kombu import Connection

from benchmarks import cmdline
from benchmarks.contenders import Cell, Contender, Plan, measure, plan_units, servers
from benchmarks.floor import FloorContender, make_caller
from benchmarks.loadgen import RunResult
from benchmarks.progress import Progress
from benchmarks.scenarios import EVENT_PUBLISHERS, EventRun, run_events
from benchmarks.tchu_rpc_contender import CALL_TIMEOUT, TchuRpcContender
from tchu_rpc.config import QueueType
from tchu_rpc.log import configure

ROOT = Path(__file__).resolve().parent.parent
OUT_STEM = Path(__file__).resolve().parent / "out" / "cluster"
CONFIGS: tuple[QueueType, ...] = ("classic", "quorum")
CONTENDERS = ("floor", "tchu_rpc")
SCENARIOS = ("calls", "events")


class Node(Protocol):
    """What is used of `rabbit_node.RabbitNode`."""

    nodename: str
    url: str

    def ctl(self, *args: str, timeout: float = ...) -> str: ...


class ClusterLike(Protocol):
    """What is used of `nodes.Cluster`."""

    nodes: Sequence[Node]
    failover_url: str
    timings: dict[str, float]


class Pinned:
    """A contender run against its configuration's URL whatever URL it is given, named `name/config`."""

    def __init__(self, inner: TchuRpcContender | FloorContender, config: QueueType, url: str) -> None:
        self.inner, self.config, self.url = inner, config, url
        self.name = f"{inner.name}/{config}"

    @property
    def settings(self) -> str:
        """Describe the setup in one line for the report."""
        return f"{self.inner.settings}; broker URL {self.url}"

    def start_servers(self, broker_url: str, processes: int) -> None:
        """Start the servers on this configuration's URL."""
        self.inner.start_servers(self.url, processes)

    def stop_servers(self) -> None:
        """Stop the servers and delete their queues."""
        self.inner.stop_servers()

    def run_calls(self, broker_url: str, n_calls: int, in_flight: int, pad: str, warmup: int) -> RunResult:
        """Make the calls on this configuration's URL."""
        return self.inner.run_calls(self.url, n_calls, in_flight, pad, warmup)

    def queues(self) -> list[str]:
        """Return the names of the servers' queues."""
        if isinstance(self.inner, TchuRpcContender):
            return [f"{self.inner.service}.{lane}" for lane in ("calls", "events")]
        return [self.inner.queue]

    @contextmanager
    def caller(self) -> Iterator[None]:
        """Open a caller as the contender's callers are opened, make one call, and keep it open."""
        if isinstance(self.inner, TchuRpcContender):
            with self.inner.client(self.url) as client:
                client.call("rpc.bench.pid", {}, timeout=CALL_TIMEOUT)
                yield
            return
        call, close = make_caller(self.url, self.inner.exchange, "")
        try:
            call(0)
            yield
        finally:
            close()


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--contenders", type=cmdline.names, default=list(CONTENDERS), help="of floor,tchu_rpc")
    add("--scenarios", type=cmdline.names, default=list(SCENARIOS), help="comma-separated, of calls,events")
    add("--procs", type=cmdline.ints, default=list(Plan.procs), help="server processes, e.g. 1,2,4")
    add("--in-flight", type=cmdline.ints, default=list(Plan.in_flight), help="concurrent calls, e.g. 1,8,64")
    add("--calls", type=int, default=Plan.calls, help="timed calls per cell")
    add("--warmup", type=int, default=Plan.warmup, help="untimed calls per cell and round")
    add("--rounds", type=int, default=Plan.rounds, help="rounds the calls of a cell are split over")
    add("--pad", type=int, default=Plan.pad_size, help="bytes of padding per request")
    add("--events", type=int, default=2000, help="events per publisher count")
    add("--dir", type=Path, help="the cluster's data folder (default: a temporary one, removed after)")
    add("--out", type=Path, default=OUT_STEM, help="stem of the JSON and markdown files")
    add("--keep-logs", action="store_true", help="keep the server logs of a good run")
    add("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Start the cluster, run both configurations, report; return the exit code."""
    args = build_parser().parse_args(argv)
    unknown = [n for n in args.contenders if n not in CONTENDERS] + [
        s for s in args.scenarios if s not in SCENARIOS
    ]
    if unknown:
        print(
            f"python -m benchmarks.cluster: unknown {unknown}; known {CONTENDERS}, {SCENARIOS}",
            file=sys.stderr,
        )
        return 2
    configure("warning")
    nodes = _load_nodes()
    previous = signal.signal(signal.SIGTERM, cmdline.interrupt)  # finally blocks stop servers and nodes
    began = time.monotonic()
    try:
        print("starting a private three-node cluster ...", flush=True)
        with nodes.running_cluster(args.dir) as cluster:
            _run(args, cluster)
    except nodes.ClusterError as exc:
        print(f"the cluster did not start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the cluster is stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"total {time.monotonic() - began:.0f} s, cluster stopped")
    return 0


def _run(args: argparse.Namespace, cluster: ClusterLike) -> None:
    run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    log_dir = Path(tempfile.gettempdir()) / f"tchu-bench-cluster-{run_id}"
    urls: dict[QueueType, str] = {"classic": cluster.nodes[0].url, "quorum": cluster.failover_url}
    pinned = [
        Pinned(_contender(name, f"{run_id}.{config}", log_dir / config, config), config, urls[config])
        for name in args.contenders
        for config in CONFIGS
    ]
    plan = Plan(tuple(args.procs), tuple(args.in_flight), args.calls, args.warmup, args.pad, args.rounds)
    header = _header(args, run_id, cluster, plan, pinned)
    for key, value in header.items():
        print(f"{key}: {value}")
    for p in pinned:  # before the timed runs: rabbitmqctl is slow and busy
        header[f"placement {p.name}"] = where = "; ".join(_placement(cluster, p))
        print(f"placement {p.name}: {where}", flush=True)
    events_on = "events" in args.scenarios and "tchu_rpc" in args.contenders
    units = plan_units(plan, len(pinned)) if "calls" in args.scenarios else 0
    units += len(CONFIGS) * len(EVENT_PUBLISHERS) * args.events if events_on else 0
    progress = Progress(units, enabled=False if args.no_progress else None)
    cells: list[Cell] = []
    events: dict[str, list[EventRun]] = {}
    try:
        if "calls" in args.scenarios:
            cells = measure(pinned, urls["classic"], plan, progress)
        for p in pinned if events_on else []:
            if isinstance(p.inner, TchuRpcContender):
                progress.echo(f"  events: {p.name}")
                events[p.config] = run_events(p.inner, p.url, args.events, progress)
    finally:
        progress.close()
    if not args.keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    _report(args, header, cells, events)


def _contender(name: str, run_id: str, log_dir: Path, config: QueueType) -> TchuRpcContender | FloorContender:
    if name == "tchu_rpc":
        return TchuRpcContender(run_id, log_dir, queue_type=config)
    return FloorContender(run_id, log_dir, quorum=config == "quorum")


def _placement(cluster: ClusterLike, pinned: Pinned) -> list[str]:
    """Start `pinned`'s servers (1 process) and a client; return its queues' and connections' nodes."""
    labels = {node.nodename: f"node{i}" for i, node in enumerate(cluster.nodes, 1)}

    def label(text: str) -> str:
        for nodename, short in labels.items():
            text = text.replace(nodename, short)
        return text

    quiet = ("--quiet", "--no-table-headers")
    with servers(pinned, pinned.url, 1), pinned.caller():
        ask = cluster.nodes[0].ctl
        queues = ask("list_queues", "name", "type", "leader", "members", "pid", *quiet).splitlines()
        ports = ask("list_connections", "port", *quiet).split()
    by_port = {node.url.rsplit(":", 1)[1].split("/")[0]: labels[node.nodename] for node in cluster.nodes}
    lines = []
    for row in queues:
        name, kind, leader, members, pid = (row.split("\t") + [""] * 5)[:5]
        if name in pinned.queues():
            host = next((short for nodename, short in labels.items() if f"<{nodename}." in pid), pid)
            where = f"leader {leader}, members {members}" if kind == "quorum" else f"on {host}"
            lines.append(label(f"{name.rsplit('.', 1)[-1]} queue {kind}, {where}"))
    counts = {short: sum(by_port.get(port) == short for port in ports) for short in labels.values()}
    lines.append("connections (servers + 1 caller) " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return lines


Table = tuple[str, list[str], list[list[str]]]  # title, head, rows


def _report(
    args: argparse.Namespace, header: dict[str, object], cells: list[Cell], events: dict[str, list[EventRun]]
) -> None:
    tables = ([_calls_table(args, cells)] if cells else []) + ([_events_table(events)] if events else [])
    md = ["| | |", "|---|---|", *(f"| {k} | {_escape(v)} |" for k, v in header.items())]
    for title, head, rows in tables:
        print(f"\n{title}\n{_text_table(head, rows)}")
        md += ["", f"### {title}", "", _md_row(head), "|---" + "|--:" * (len(head) - 1) + "|"]
        md += [_md_row(row) for row in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out.with_suffix(".json"), args.out.with_suffix(".md")
    data = {
        **header,
        "cells": [asdict(c) for c in cells],
        "events": {k: [asdict(e) for e in v] for k, v in events.items()},
    }
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path.write_text("\n".join(md) + "\n")
    print(f"\nwritten: {json_path}, {md_path}")


def _calls_table(args: argparse.Namespace, cells: list[Cell]) -> Table:
    by = {(c.contender, c.procs, c.in_flight): c for c in cells}
    head = ["contender", "procs", "in-flight", *_pair_head("p50 ms", "p99 ms", "calls/s")]
    rows = []
    for name in args.contenders:
        for procs in args.procs:
            for in_flight in args.in_flight:
                c, q = (by[(f"{name}/{config}", procs, in_flight)] for config in CONFIGS)
                row = [name, str(procs), str(in_flight)]
                row += _pair(c.p50, q.p50) + _pair(c.p99, q.p99) + _pair(c.calls_per_s, q.calls_per_s, ".0f")
                rows.append(row)
    return "Calls: echo, procs x in-flight (x: quorum / classic)", head, rows


def _events_table(events: dict[str, list[EventRun]]) -> Table:
    head = ["publishers", "events", "delivered classic", "quorum"]
    head += _pair_head("confirmed/s", "delay p50 ms", "delay p99 ms")
    rows = []
    for c, q in zip(events["classic"], events["quorum"], strict=True):
        row = [str(c.publishers), str(c.events), str(c.delivered), str(q.delivered)]
        row += _pair(c.published_per_s, q.published_per_s, ".0f") + _pair(c.p50, q.p50) + _pair(c.p99, q.p99)
        rows.append(row)
    return "Events: confirmed publish rate, publish -> handler delay (x: quorum / classic)", head, rows


def _pair_head(*measures: str) -> list[str]:
    return [part for m in measures for part in (f"{m} classic", "quorum", "x")]


def _pair(classic: float, quorum: float, fmt: str = ".2f") -> list[str]:
    return [f"{classic:{fmt}}", f"{quorum:{fmt}}", f"{quorum / classic:.2f}" if classic else "-"]


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _escape(value: object) -> str:
    return str(value).replace("|", "\\|")


def _header(
    args: argparse.Namespace, run_id: str, cluster: ClusterLike, plan: Plan, pinned: Sequence[Contender]
) -> dict[str, object]:
    with Connection(cluster.nodes[0].url, connect_timeout=5) as conn:
        conn.connect()
        props = conn.connection.server_properties
    header: dict[str, object] = {
        "run": run_id,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": _commit(),
        "broker": f"{props.get('product')} {props.get('version')}, three nodes on loopback "
        f"(started and joined in {sum(cluster.timings.values()):.0f} s)",
        "nodes": ", ".join(f"node{i} {n.nodename} {n.url}" for i, n in enumerate(cluster.nodes, 1)),
        "client": f"Python {platform.python_version()}, kombu {kombu.__version__}, {os.cpu_count()} cores, "
        f"{platform.machine()} {platform.system()} {platform.release()}",
        "scenarios": ", ".join(args.scenarios),
        "plan": f"procs {list(plan.procs)} x in-flight {list(plan.in_flight)}, {plan.calls} timed + "
        f"{plan.warmup} warm-up calls per cell and round, {plan.rounds} round(s), {plan.pad_size} bytes of "
        f"padding; events: {args.events} per publisher count {list(EVENT_PUBLISHERS)}",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    for contender in pinned:
        header[f"contender {contender.name}"] = contender.settings
    return header


def _commit() -> str:
    def git(*argv: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else "?"

    changed = git("status", "--porcelain", "--", "tchu_rpc")
    return git("rev-parse", "--short", "HEAD") + (
        f" (modified: {changed.replace(chr(10), ', ')})" if changed else ""
    )


def _load_nodes() -> ModuleType:
    # tests/ is no package: load tests/cluster/nodes.py by path (it puts tests/faults on sys.path).
    spec = importlib.util.spec_from_file_location(
        "tchu_cluster_nodes", ROOT / "tests" / "cluster" / "nodes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in [head, *rows])


if __name__ == "__main__":
    sys.exit(main())
