"""Instructions per call of each side, counted by valgrind: an A/B that machine noise cannot blur.

    python -m benchmarks.instructions [--broker URL] [--calls 400] [--warmup 100] [--in-flight 1]

CPU seconds per call move by +-5 % between rounds on a shared VM; `valgrind --tool=callgrind`
counts the instructions a process executes, the same for the same code and inputs whatever else
the machine does. Each measured side runs under callgrind: a server (tchu_rpc's `Worker`
in-process, or the floor's and floor+tx's raw-kombu servers) driven by an ordinary client, or a
client (tchu_rpc's `Client`, or the floors' one-connection-per-thread callers) against ordinary
servers. Counters are dumped (`callgrind_control -d`) after `--warmup` calls and again after
`--calls`; the second dump holds the measured calls alone. Under valgrind a process runs ~50x
slower, so calls/s mean nothing here; with calls in flight the batching differs from a real run.
Needs valgrind (Debian's package) and an AMQP broker.
"""

from __future__ import annotations

import argparse
import select
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from benchmarks.contenders import Contender
from benchmarks.floor import FloorContender
from benchmarks.tchu_rpc_contender import TchuRpcContender

ROOT = Path(__file__).resolve().parent.parent
PAD = "x" * 64
SIDES = ("tchu_rpc worker", "floor server", "floor+tx server", "tchu_rpc client", "floor client")
_DUMP_TIMEOUT = 60.0
_READY_TIMEOUT = 120.0  # imports under valgrind take a while


def contender(name: str, run_id: str, log_dir: Path) -> Contender:
    """Return the contender `name` (tchu_rpc, floor or floor+tx) on exchanges of run `run_id`."""
    if name == "tchu_rpc":
        return TchuRpcContender(run_id, log_dir)
    return FloorContender(run_id, log_dir, tx=name == "floor+tx")


def callgrind(out: Path) -> list[str]:
    """Return the command prefix that runs a program under callgrind, dumping to `out`.PID.N."""
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", "--dump-instr=no"]


def dump(pid: int, out: Path) -> Path:
    """Dump the counters of callgrind process `pid` (which zeroes them); return the dump's file."""
    before = len(_dumps(out, pid))
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True, timeout=60)
    deadline = time.monotonic() + _DUMP_TIMEOUT
    while len(_dumps(out, pid)) <= before:
        if time.monotonic() > deadline:
            raise RuntimeError(f"callgrind did not dump process {pid}")
        time.sleep(0.1)
    return _dumps(out, pid)[-1]


def instructions(path: Path) -> int:
    """Return the instructions counted in callgrind dump `path` (waiting for it to be complete)."""
    deadline = time.monotonic() + _DUMP_TIMEOUT
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
        time.sleep(0.1)
    raise RuntimeError(f"no totals in {path}")


def _dumps(out: Path, pid: int) -> list[Path]:
    files = out.parent.glob(f"{out.name}.{pid}.*")
    return sorted(files, key=lambda path: int(path.suffix[1:]))


def measure_server(name: str, args: argparse.Namespace, work: Path) -> float:
    """Return the instructions per call of one server of `name` under callgrind."""
    run_id = f"instr-{uuid.uuid4().hex[:8]}"
    rival = contender(name, run_id, work)
    if isinstance(rival, TchuRpcContender):
        argv = [sys.executable, "-m", "benchmarks.instructions", "serve", run_id, args.broker]
    else:
        assert isinstance(rival, FloorContender)
        argv = [sys.executable, "-m", "benchmarks.floor", "serve", "--broker", args.broker]
        argv += ["--queue", rival.queue, "--exchange", rival.exchange] + (["--tx"] if rival.tx else [])
    out = work / f"server-{run_id}"
    try:
        with _spawn(out, argv) as proc:
            try:
                _wait_for(proc, "ready", _READY_TIMEOUT)
                rival.run_calls(args.broker, args.warmup, args.in_flight, PAD, 0)
                dump(proc.pid, out)
                rival.run_calls(args.broker, args.calls, args.in_flight, PAD, 0)
                return instructions(dump(proc.pid, out)) / int(args.calls)
            finally:
                _stop(proc)
    finally:
        if isinstance(rival, TchuRpcContender):
            rival.delete_topology(args.broker)


def measure_client(name: str, args: argparse.Namespace, work: Path) -> float:
    """Return the instructions per call of `name`'s callers under callgrind (one ordinary server).

    The callers' process says when it is warm and when it is done, and waits for a line on its stdin
    (or its end): this process dumps its counters meanwhile, so that nothing but the calls is counted
    between the two dumps.
    """
    run_id = f"instr-{uuid.uuid4().hex[:8]}"
    rival = contender(name, run_id, work)
    rival.start_servers(args.broker, 1)
    out = work / f"client-{run_id}"
    argv = [sys.executable, "-m", "benchmarks.instructions", "drive", name, run_id, args.broker]
    argv += [str(args.warmup), str(args.calls), str(args.in_flight)]
    try:
        with _spawn(out, argv) as proc:
            assert proc.stdin is not None
            try:
                _wait_for(proc, "warm", _READY_TIMEOUT)
                dump(proc.pid, out)
                proc.stdin.write("go\n")
                proc.stdin.flush()
                _wait_for(proc, "done", _READY_TIMEOUT + args.calls)
                return instructions(dump(proc.pid, out)) / int(args.calls)
            finally:
                _stop(proc)
    finally:
        rival.stop_servers()


def _spawn(out: Path, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        callgrind(out) + argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=60)


def _wait_for(proc: subprocess.Popen[str], word: str, timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1.0)[0]:
            line = proc.stdout.readline()
            if not line:
                break
            if line.strip() == word:
                return
    raise RuntimeError(f"process under callgrind did not say {word!r} within {timeout:.0f} s")


def serve(run_id: str, broker: str) -> int:
    """Serve tchu_rpc's benchmark handlers with one in-process `Worker` until terminated."""
    import benchmarks.tchu_rpc_handlers  # noqa: F401  (fills the default registry)
    from tchu_rpc import Worker

    rival = TchuRpcContender(run_id, Path(tempfile.gettempdir()))
    worker = Worker(queue=rival.service, settings=rival.settings_for(broker)).start()
    print("ready", flush=True)
    try:
        threading.Event().wait()
    finally:
        worker.stop()
    return 0


def drive(name: str, run_id: str, broker: str, warmup: int, calls: int, in_flight: int) -> int:
    """Make the calls of a measured client (run under callgrind), pausing for the dumps."""
    rival = contender(name, run_id, Path(tempfile.gettempdir()))
    rival.run_calls(broker, warmup, in_flight, PAD, 0)
    print("warm", flush=True)
    sys.stdin.readline()
    rival.run_calls(broker, calls, in_flight, PAD, 0)
    print("done", flush=True)
    sys.stdin.readline()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Print instructions per call for each side."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of: {', '.join(SIDES)}")
    sub = parser.add_subparsers(dest="command")
    srv = sub.add_parser("serve", help=argparse.SUPPRESS)
    srv.add_argument("run_id")
    srv.add_argument("broker_url")
    drv = sub.add_parser("drive", help=argparse.SUPPRESS)
    for field in ("name", "run_id", "broker_url", "warmup_calls", "timed_calls", "calls_in_flight"):
        drv.add_argument(field)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.run_id, args.broker_url)
    if args.command == "drive":
        counts = (int(args.warmup_calls), int(args.timed_calls), int(args.calls_in_flight))
        return drive(args.name, args.run_id, args.broker_url, *counts)
    with tempfile.TemporaryDirectory(prefix="tchu-instr-") as tmp:
        for side in args.sides.split(","):
            name, role = side.rsplit(" ", 1)
            measure = measure_client if role == "client" else measure_server
            per_call = measure(name, args, Path(tmp))
            print(f"{side:<16} {per_call / 1000:8.1f}k instructions per call ({args.in_flight} in flight)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
