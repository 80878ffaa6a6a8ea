"""tchu-tchu 2.2.21 on Celery as a contender, run from its own venv (`.venv-bench-tchu`).

The venv is created on first use with `python3.11 -m venv` and pinned versions. Servers are Celery
workers started from it; the calls run in a driver subprocess from it that prints its latencies.
tchu-tchu's RPC needs a Celery result backend: Redis on 127.0.0.1:6379 by default (baseline only).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Literal

from benchmarks import venvs
from benchmarks.loadgen import RunResult
from benchmarks.procs import ServerGroup

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-bench-tchu"
# Same kombu and py-amqp as the main venv, so that the comparison is of frameworks, not clients.
REQUIREMENTS = ("tchu-tchu==2.2.21", "celery[redis]==5.7.0", "kombu==5.7.0", "amqp==5.4.2", "redis==8.1.0")
DEFAULT_BACKEND = "redis://127.0.0.1:6379/0"
Pool = Literal["prefork", "solo"]


def ensure_venv() -> Path:
    """Create or update the tchu-tchu venv when its pinned requirements changed; return its python."""
    return venvs.ensure_venv(VENV, REQUIREMENTS)


class TchuTchuContender:
    """tchu-tchu's `TchuClient.call` against Celery workers running its `@subscribe` dispatcher.

    `pool="prefork"` runs one worker with `--concurrency processes` (Celery's usual deployment);
    `pool="solo"` runs `processes` single-process workers, closest to the other contenders' layout.
    """

    name = "tchu-tchu"

    def __init__(
        self,
        run_id: str,
        log_dir: Path,
        backend_url: str = DEFAULT_BACKEND,
        pool: Pool = "prefork",
        quiet_logs: bool = False,
    ) -> None:
        self.run_id = run_id
        self.queue = f"bench.{run_id}.tchu"
        self.exchange = f"bench.{run_id}.tchu_events"
        self.backend_url = backend_url
        self.pool = pool
        self.quiet_logs = quiet_logs
        self._log_dir = log_dir / "tchu-tchu"
        self._servers = ServerGroup(self._log_dir)
        self._broker_url: str | None = None

    @property
    def settings(self) -> str:
        """Describe the setup in one line for the report."""
        workers = "1 worker x --concurrency N" if self.pool == "prefork" else "N workers x --pool solo"
        return (
            f"tchu-tchu 2.2.21 / Celery 5.7.0 via setup_celery_queue (durable queue and topic exchange, "
            f"prefetch multiplier 1, acks_late, track_started, reject_on_worker_lost); {workers}; "
            f"result backend {self.backend_url} (Redis, for this baseline only); one shared TchuClient; "
            f"tchu-tchu's INFO logs {'silenced' if self.quiet_logs else 'on (its default)'}"
        )

    def start_servers(self, broker_url: str, processes: int) -> None:
        """Start Celery workers from the tchu-tchu venv and wait until they consume."""
        python = ensure_venv()
        self._broker_url = broker_url
        env = self._env(broker_url)
        base = [str(python), "-m", "celery", "-A", "benchmarks.tchu_tchu_app", "worker"]
        base += ["--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        try:
            if self.pool == "prefork":
                argv = [*base, "--pool", "prefork", "--concurrency", str(processes)]
                self._servers.spawn([*argv, "-n", f"{self.run_id}-0@%h"], env=env, cwd=ROOT)
            else:
                for i in range(processes):
                    # --concurrency 1 makes the prefetch 1. With the default (the CPU count, 2 here)
                    # solo workers were seen here to sit idle holding 2 unacked deliveries each.
                    argv = [*base, "--pool", "solo", "--concurrency", "1", "-n", f"{self.run_id}-{i}@%h"]
                    self._servers.spawn(argv, env=env, cwd=ROOT)
            self._servers.wait_ready(timeout=60)
        except BaseException:
            self.stop_servers()
            raise

    def stop_servers(self) -> None:
        """Warm-shut the workers (killing stragglers), then delete the run's queue, exchange, results."""
        self._servers.stop(grace=15)
        if self._broker_url is None:
            return
        venvs.delete_topology(self._broker_url, self.queue, self.exchange)
        argv = [str(VENV / "bin" / "python"), "-m", "benchmarks.tchu_tchu_driver", "--delete-results"]
        env = self._env(self._broker_url)
        subprocess.run(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)

    def run_calls(self, broker_url: str, n_calls: int, in_flight: int, pad: str, warmup: int) -> RunResult:
        """Run the driver in the tchu-tchu venv and parse the latencies it prints."""
        python = ensure_venv()
        argv = [str(python), "-m", "benchmarks.tchu_tchu_driver", "--calls", str(n_calls)]
        argv += ["--in-flight", str(in_flight), "--warmup", str(warmup), "--pad-size", str(len(pad))]
        return venvs.run_driver(self.name, argv, self._env(broker_url), self._log_dir, n_calls + warmup)

    def _env(self, broker_url: str) -> dict[str, str]:
        return venvs.child_env(
            ROOT,
            BENCH_TCHU_BROKER=broker_url,
            BENCH_TCHU_BACKEND=self.backend_url,
            BENCH_TCHU_EXCHANGE=self.exchange,
            BENCH_TCHU_QUEUE=self.queue,
            BENCH_TCHU_KEY_PREFIX=f"bench-{self.run_id}:",
            BENCH_TCHU_QUIET_LOGS="1" if self.quiet_logs else "0",
        )
