"""aio-pika 10.2.1's RPC pattern (`patterns.JsonRPC`) as a contender, run from its own venv.

The venv (`.venv-bench-aiopika`) is created on first use with `python3.11 -m venv` and pinned versions.
Servers are `python -m benchmarks.aio_pika_rpc serve` processes from it; the calls run in a
`python -m benchmarks.aio_pika_rpc drive` subprocess from it that prints its latencies.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import venvs
from benchmarks.loadgen import RunResult
from benchmarks.procs import ServerGroup

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-bench-aiopika"
VERSION = "10.2.1"
# aio-pika and everything it pulls in, pinned.
REQUIREMENTS = (
    f"aio-pika=={VERSION}",
    "aiormq==7.2.4",
    "pamqp==4.0.1",
    "yarl==1.25.1",
    "multidict==7.2.1",
    "propcache==0.5.4",
    "idna==3.20",
)
METHOD = "rpc.bench.echo"
MODULE = "benchmarks.aio_pika_rpc"


def ensure_venv() -> Path:
    """Create or update the aio-pika venv when its pinned requirements changed; return its python."""
    return venvs.ensure_venv(VENV, REQUIREMENTS)


class AioPikaContender:
    """aio-pika's `JsonRPC.call` against `JsonRPC.register` servers, one process each."""

    name = "aio-pika"

    def __init__(self, run_id: str, log_dir: Path) -> None:
        self.exchange = f"bench.{run_id}.aiopika"
        # aio-pika's RPC names the method's queue `{exchange}::{method}` when given an exchange.
        self.queue = f"{self.exchange}::{METHOD}"
        self._log_dir = log_dir / self.name
        self._servers = ServerGroup(self._log_dir)
        self._broker_url: str | None = None

    @property
    def settings(self) -> str:
        """Describe the setup in one line for the report."""
        return (
            f"aio-pika {VERSION} patterns.JsonRPC (JSON, not its default pickle) on connect_robust, "
            f"one server per process; queue non-durable auto-delete (register(..., auto_delete=True)) "
            f"on a non-durable auto-delete direct exchange, dead-lettering to rpc.dlx; prefetch 1; "
            f"ack after the reply's publisher confirm; replies on a non-durable auto-delete amq_<uuid> "
            f"queue per JsonRPC, consumed no-ack; publisher confirms on (aio-pika's default): each "
            f"request is mandatory and its confirm awaited before its reply; one connection, channel "
            f"and JsonRPC shared by all callers (asyncio tasks)"
        )

    def start_servers(self, broker_url: str, processes: int) -> None:
        """Start `processes` servers from the aio-pika venv and wait until each consumes."""
        python = ensure_venv()
        self._broker_url = broker_url
        argv = [str(python), "-m", MODULE, "serve", *self._names(broker_url)]
        try:
            for _ in range(processes):
                self._servers.spawn(argv, env=venvs.child_env(ROOT), cwd=ROOT)
            self._servers.wait_ready(timeout=30)
        except BaseException:
            self.stop_servers()
            raise

    def stop_servers(self) -> None:
        """Stop the servers, then delete the run's queue and exchange (if auto-delete left them)."""
        self._servers.stop()
        if self._broker_url is not None:
            venvs.delete_topology(self._broker_url, self.queue, self.exchange)

    def run_calls(self, broker_url: str, n_calls: int, in_flight: int, pad: str, warmup: int) -> RunResult:
        """Run the driver in the aio-pika venv and parse the latencies it prints."""
        python = ensure_venv()
        argv = [str(python), "-m", MODULE, "drive", *self._names(broker_url), "--calls", str(n_calls)]
        argv += ["--in-flight", str(in_flight), "--warmup", str(warmup), "--pad-size", str(len(pad))]
        return venvs.run_driver(self.name, argv, venvs.child_env(ROOT), self._log_dir, n_calls + warmup)

    def _names(self, broker_url: str) -> list[str]:
        return ["--broker", broker_url, "--exchange", self.exchange, "--method", METHOD]
