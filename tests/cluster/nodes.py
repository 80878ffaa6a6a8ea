"""Run a private three-node RabbitMQ cluster on loopback, for tests and by hand.

Each node is a `RabbitNode` (tests/faults/rabbit_node.py: its own node name, ports, data and log
folders, never the shared broker on 5672); all share one Erlang cookie, and nodes 2 and 3 join
node 1 with `rabbitmqctl join_cluster`. Every step is bounded; a failed start stops what started.

By hand (or `scripts/cluster`):

    python tests/cluster/nodes.py up [--dir DIR]    # start, print the URLs, stay up until Ctrl-C
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

# The fault tests import their helpers as top-level modules (pytest's rootdir-relative import);
# this file is also run as a script, so it puts that folder on the path the same way.
_FAULTS = str(Path(__file__).resolve().parent.parent / "faults")
if _FAULTS not in sys.path:
    sys.path.append(_FAULTS)

from rabbit_node import RABBITMQ_SERVER, RABBITMQCTL, RabbitNode, RabbitNodeError  # noqa: E402

#: How long starting and joining the three nodes may take in all.
START_TIMEOUT = 120.0
SIZE = 3


class ClusterError(RabbitNodeError):
    """The cluster could not be started (or a node of it could not be stopped or started)."""


class Cluster:
    """Three private RabbitMQ nodes on loopback, joined in one cluster, with data under `base_dir`."""

    def __init__(self, base_dir: Path, size: int = SIZE) -> None:
        self.base_dir = Path(base_dir)
        tag = secrets.token_hex(3)
        self.nodes = [
            RabbitNode(self.base_dir / f"node{i}", name=f"tchucluster-{tag}-{i}") for i in range(1, size + 1)
        ]
        self.timings: dict[str, float] = {}
        self._stopped_apps: list[RabbitNode] = []
        self._killed: list[RabbitNode] = []

    @property
    def urls(self) -> list[str]:
        """Return each node's AMQP URL, node 1 first."""
        return [node.url for node in self.nodes]

    @property
    def failover_url(self) -> str:
        """Return the nodes' URLs as one `;`-separated failover list."""
        return ";".join(self.urls)

    def node_of(self, thing: Any, timeout: float = 10.0) -> RabbitNode:
        """Return the node a tchu_rpc `Client`'s or `Worker`'s connection is open to."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conn = thing._loop.connection
            if conn is not None and conn.port:
                return self.node_on(int(conn.port))
            time.sleep(0.05)  # no event marks a reconnection from outside the I/O thread
        raise AssertionError(f"{thing!r} has no connection after {timeout} s")

    def node_on(self, port: int) -> RabbitNode:
        """Return the node listening for AMQP on `port`."""
        return next(node for node in self.nodes if node.amqp_port == port)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the nodes side by side, then join nodes 2.. to node 1; stop them all on failure."""
        _check_installed()
        deadline = time.monotonic() + timeout
        cookie = secrets.token_hex(20)
        for node in self.nodes:
            home = node.base_dir / "home"
            home.mkdir(parents=True, exist_ok=True)
            (home / ".erlang.cookie").write_text(cookie)  # RabbitNode keeps a cookie it finds
        try:
            began = time.monotonic()
            self._start_all(deadline)
            self.timings["start_s"] = time.monotonic() - began
            began = time.monotonic()
            for node in self.nodes[1:]:
                self._join(node, self.nodes[0], deadline)
            self.timings["join_s"] = time.monotonic() - began
            self._check_members()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL); safe twice."""
        for node in self.nodes:
            node.stop(timeout=20)

    def stop_app(self, node: RabbitNode, timeout: float = 30) -> None:
        """Stop RabbitMQ on `node` (its Erlang VM stays): it closes its clients' connections."""
        self._stopped_apps.append(node)
        node.ctl("stop_app", timeout=timeout)

    def start_app(self, node: RabbitNode, timeout: float = 60) -> None:
        """Start RabbitMQ again on `node` after `stop_app`, and wait until it takes connections."""
        node.ctl("start_app", timeout=timeout)
        node.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 5)
        if node in self._stopped_apps:
            self._stopped_apps.remove(node)

    def kill(self, node: RabbitNode) -> None:
        """Kill `node` with SIGKILL (its OS processes, as a machine loss); `restore` starts it again."""
        self._killed.append(node)
        node.kill()

    def leader_of(self, queue: str, timeout: float = 15.0) -> RabbitNode:
        """Return the node leading the quorum queue `queue`, asked of a node that is running.

        Bounded: right after a leader's loss the queue may report no leader for a moment.
        """
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for asked in self.nodes:
                if asked in self._stopped_apps or asked in self._killed:
                    continue
                try:
                    last = asked.ctl("list_queues", "name", "leader", "--quiet", "--no-table-headers")
                except (RabbitNodeError, OSError, TimeoutError) as exc:
                    last = str(exc)
                    continue
                for line in last.splitlines():
                    name, _, leader = line.strip().partition("\t")
                    found = [node for node in self.nodes if node.nodename == leader.strip()]
                    if name == queue and found:
                        return found[0]
                break
            time.sleep(0.2)  # polling rabbitmqctl: no event announces an elected leader
        raise ClusterError(f"no leader found for {queue} in {timeout} s; last answer:\n{last}")

    def restore(self, timeout: float = 60) -> None:
        """Start RabbitMQ again on every node a test stopped with `stop_app` or killed with `kill`."""
        for node in list(self._stopped_apps):
            self.start_app(node)
        for node in list(self._killed):
            node.start(timeout=timeout)  # it rejoins the cluster from its data directory
            node.ctl("await_startup", "--timeout", str(int(timeout)), timeout=timeout + 5)
            self._killed.remove(node)

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _start_all(self, deadline: float) -> None:
        errors: list[BaseException] = []

        def start(node: RabbitNode) -> None:
            try:
                node.start(timeout=max(1.0, deadline - time.monotonic()))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(node,), daemon=True) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(1.0, deadline - time.monotonic()) + 5)
        if errors or any(thread.is_alive() for thread in threads):
            raise ClusterError(f"the nodes did not all start: {errors or 'start timed out'}")

    def _join(self, node: RabbitNode, seed: RabbitNode, deadline: float) -> None:
        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterError(f"{node.nodename} did not join {seed.nodename} in time")
            return remaining

        try:
            node.ctl("stop_app", timeout=left())
            node.ctl("join_cluster", seed.nodename, timeout=left())
            node.ctl("start_app", timeout=left())
            node.ctl("await_startup", "--timeout", str(int(left())), timeout=left() + 5)
        except (RabbitNodeError, OSError, TimeoutError) as exc:
            raise ClusterError(f"{node.nodename} could not join: {exc}\n{node.log_tail()}") from exc

    def _check_members(self) -> None:
        status = self.nodes[0].ctl("cluster_status", "--formatter", "json")
        missing = [node.nodename for node in self.nodes if node.nodename not in status]
        if missing:
            raise ClusterError(f"not in the cluster: {missing}\n{status}")


def _check_installed() -> None:
    missing = [str(path) for path in (RABBITMQ_SERVER, RABBITMQCTL) if not path.exists()]
    if missing:
        raise ClusterError(
            f"RabbitMQ is not installed here ({', '.join(missing)} missing): install the "
            "rabbitmq-server package (apt-get install rabbitmq-server), or run a cluster with Docker: "
            "docker compose -f docker/compose.cluster.yaml up -d"
        )


@contextmanager
def running_cluster(base_dir: Path | None = None) -> Iterator[Cluster]:
    """Start a cluster (in a temporary folder unless `base_dir`), yield it, and stop it."""
    folder = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="tchu-cluster-"))
    cluster = Cluster(folder)
    try:
        with cluster:
            yield cluster
    finally:
        if base_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a private 3-node RabbitMQ cluster on loopback.")
    parser.add_argument("command", choices=["up"], help="start it and keep it up until Ctrl-C or SIGTERM")
    parser.add_argument("--dir", type=Path, help="data folder (default: a temporary one, removed after)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with running_cluster(args.dir) as cluster:
            print(f"cluster up in {sum(cluster.timings.values()):.1f} s ({cluster.timings})")
            for node in cluster.nodes:
                print(f"  {node.nodename}  {node.url}  data {node.base_dir}")
            print(f"TCHU_RPC_BROKER_URL='{cluster.failover_url}'", flush=True)
            print("Ctrl-C stops it.", flush=True)
            try:
                stop.wait()
            except KeyboardInterrupt:
                pass
            print("stopping ...", flush=True)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
