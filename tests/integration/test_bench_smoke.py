"""The benchmark harness end to end, small: floor, tchu_rpc and aio-pika on the real broker, `tchu-rpc bench`.

No timing is asserted: only that every cell counts the calls asked for, with positive rates, and that
the JSON and markdown reports hold them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from tchu_rpc import cli

ROOT = Path(__file__).resolve().parents[2]
CALLS = 100
EVENTS = 40


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Return `benchmarks.__main__` (a folder of the repository, not an installed package)."""
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks.__main__

    return benchmarks.__main__


@pytest.mark.timeout(60)
def test_harness_runs_the_floors_and_tchu_rpc_calls_and_events_on_the_broker(
    harness: Any, tchu_broker_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a small plan: 1 server process, 1 and 8 calls in flight, the floors and tchu_rpc, a few events
    argv = ["--broker", tchu_broker_url, "--contenders", "floor,floor+conf,floor+tx,tchu_rpc"]
    argv += ["--scenarios", "calls,events"]
    argv += ["--procs", "1", "--in-flight", "1,8", "--calls", str(CALLS), "--warmup", "10"]
    argv += ["--events", str(EVENTS), "--out", str(tmp_path / "run"), "--no-progress"]

    # When the harness runs in this process
    code = harness.main(argv)

    # Then every cell made the calls asked for, and the events all arrived
    assert code == 0
    report = json.loads((tmp_path / "run.json").read_text())
    cells = {(c["contender"], c["procs"], c["in_flight"]): c for c in report["cells"]}
    names = ("floor", "floor+conf", "floor+tx", "tchu_rpc")
    assert set(cells) == {(name, 1, n) for name in names for n in (1, 8)}
    for cell in cells.values():
        assert cell["calls"] == CALLS
        assert cell["calls_per_s"] > 0
        assert 0 < cell["p50"] <= cell["p99"] <= cell["max"]
        assert len(cell["quantiles"]) == 101
    assert [(e["mode"], e["publishers"]) for e in report["events"]] == [
        ("publish", 1),
        ("publish", 8),
        ("publish_many", 1),
        ("AsyncClient", 1),
    ]
    for run in report["events"]:
        assert run["delivered"] == run["events"] == EVENTS
        assert run["published_per_s"] > 0
        assert run["p50"] >= 0
    assert {(r["procs"], r["in_flight"]) for r in report["ratios"]} == {(1, 1), (1, 8)}
    assert all(r["p50_vs_floor"] > 0 and r["rate_vs_floor"] > 0 for r in report["ratios"])

    # And the markdown holds the same cells, and the terminal shows the ratios
    markdown = (tmp_path / "run.md").read_text()
    for contender, procs, in_flight in cells:
        assert f"| {contender} | {procs} | {in_flight} | {CALLS} |" in markdown
    assert f"| 1 | {EVENTS} | {EVENTS} |" in markdown
    out = capsys.readouterr().out
    assert "tchu_rpc vs floor" in out
    assert "sequential p50 <= 1.25x floor" in out


@pytest.mark.timeout(60)
def test_harness_runs_aio_pika_from_its_own_venv_and_leaves_nothing_behind(
    harness: Any, tchu_broker_url: str, tmp_path: Path
) -> None:
    # Given the aio-pika venv, made here on first use (pip, a few seconds): when it cannot be made,
    # this fails with the install log's path, never skips
    from benchmarks.aio_pika_baseline import METHOD, ensure_venv

    ensure_venv()
    argv = ["--broker", tchu_broker_url, "--contenders", "aio-pika", "--scenarios", "calls"]
    argv += ["--procs", "2", "--in-flight", "1,8", "--calls", str(CALLS), "--warmup", "10"]
    argv += ["--out", str(tmp_path / "run"), "--no-progress"]

    # When the harness runs aio-pika's servers and driver from that venv
    code = harness.main(argv)

    # Then every cell made the calls asked for
    assert code == 0
    report = json.loads((tmp_path / "run.json").read_text())
    cells = {(c["contender"], c["procs"], c["in_flight"]): c for c in report["cells"]}
    assert set(cells) == {("aio-pika", 2, 1), ("aio-pika", 2, 8)}
    for cell in cells.values():
        assert cell["calls"] == CALLS
        assert 0 < cell["p50"] <= cell["p99"] <= cell["max"]
    assert "JsonRPC" in report["contender aio-pika"]

    # And the run's queue and exchange are gone
    exchange = f"bench.{report['run']}.aiopika"
    with Connection(tchu_broker_url, connect_timeout=5) as conn:
        for declare in (
            lambda ch: ch.queue_declare(queue=f"{exchange}::{METHOD}", passive=True),
            lambda ch: ch.exchange_declare(exchange=exchange, type="direct", passive=True),
        ):
            with pytest.raises(conn.channel_errors):
                declare(conn.channel())


def test_bench_help_through_the_cli_lists_the_harness_options(
    harness: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "configure", lambda level="info", json=False: None)
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as info:
        cli.main(["bench", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "memory://" in out
    for option in ("--broker", "--contenders", "--scenarios", "--procs", "--in-flight"):
        assert option in out


def test_bench_outside_a_clone_exits_2_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a benchmarks package that cannot be imported (as in an installed tchu_rpc)
    monkeypatch.setattr(cli, "configure", lambda level="info", json=False: None)
    monkeypatch.setitem(sys.modules, "benchmarks.__main__", None)

    # When `tchu-rpc bench` runs, Then it exits 2 and says where to run it from
    assert cli.main(["bench", "--calls", "10"]) == 2
    assert "run from a clone of the repository" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_instruction_counts_run_a_worker_and_a_client_under_callgrind(
    tchu_broker_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the valgrind-based counter (benchmarks/instructions.py) and a tiny plan
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks.instructions

    argv = ["--broker", tchu_broker_url, "--calls", "20", "--warmup", "10"]
    argv += ["--sides", "tchu_rpc worker,tchu_rpc client"]

    # When it counts both sides of tchu_rpc
    assert benchmarks.instructions.main(argv) == 0

    # Then each side has a count per call (a call is well over 10,000 instructions on either side)
    lines = capsys.readouterr().out.splitlines()
    counts = {line[:16].strip(): float(line[16:].split("k")[0]) for line in lines if "per call" in line}
    assert set(counts) == {"tchu_rpc worker", "tchu_rpc client"}
    assert all(count > 10 for count in counts.values()), counts
