"""The PNG chart: latency distributions and throughput vs concurrency (needs the optional matplotlib).

matplotlib comes with the `bench` extra (`pip install -e '.[bench]'`); without it the harness skips
the chart with a one-line notice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.contenders import Cell

COLOURS = {
    "floor": "#7f7f7f",
    "floor+conf": "#2ca02c",
    "floor+tx": "#bcbd22",
    "tchu_rpc": "#1f77b4",
    "tchu-tchu": "#d62728",
    "aio-pika": "#9467bd",
}
STYLES = ("-", "--", ":", "-.")


def available() -> bool:
    """Tell whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def draw(path: Path, cells: Sequence[Cell], title: str) -> None:
    """Write the chart of `cells` to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (dist, rate) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=90)
    _distribution(dist, cells)
    _throughput(rate, cells)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _distribution(ax: Any, cells: Sequence[Cell]) -> None:
    # Two cells per contender: sequential (1 proc x 1 in flight) and the busiest cell that ran.
    contenders = sorted({c.contender for c in cells})
    busiest = max(((c.procs, c.in_flight) for c in cells), default=(1, 1), key=lambda k: (k[1], k[0]))
    picks = [(1, 1), busiest] if busiest != (1, 1) else [(1, 1)]
    for name in contenders:
        for style, (procs, in_flight) in zip(STYLES, picks, strict=False):
            cell = next(
                (c for c in cells if (c.contender, c.procs, c.in_flight) == (name, procs, in_flight)), None
            )
            if cell is None or not cell.quantiles:
                continue
            ax.plot(
                cell.quantiles,
                range(len(cell.quantiles)),
                style,
                color=COLOURS.get(name),
                label=f"{name} {procs}p x {in_flight}",
            )
    ax.set_xscale("log")
    ax.set_xlabel("latency, ms (log)")
    ax.set_ylabel("percentile of calls")
    ax.set_title("latency distribution (CDF)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")


def _throughput(ax: Any, cells: Sequence[Cell]) -> None:
    for name in sorted({c.contender for c in cells}):
        for style, procs in zip(STYLES, sorted({c.procs for c in cells}), strict=False):
            line = sorted(
                (c.in_flight, c.calls_per_s) for c in cells if (c.contender, c.procs) == (name, procs)
            )
            if line:
                xs, ys = zip(*line, strict=True)
                ax.plot(xs, ys, style, marker="o", color=COLOURS.get(name), label=f"{name} {procs} procs")
    ax.set_xscale("log", base=2)
    ticks = sorted({c.in_flight for c in cells})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("calls in flight (log)")
    ax.set_ylabel("calls/s")
    ax.set_title("throughput vs concurrency", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
