"""The latency distribution of timed requests: a histogram in the terminal, or a PNG.

scripts/time_requests.py draws with it (--histogram, --plot). Latencies span several
decades (a hit takes under a millisecond in the API, a miss about a second), so buckets
are logarithmic, in 1-2-5 steps: ... 0.5-1, 1-2, 2-5, 5-10 ... ms. The terminal histogram
needs only the standard library; the PNG needs matplotlib (the project's `bench` extra).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# What each kind of answer is drawn with: its letter in the terminal, its colour in the PNG.
KINDS = {
    "HIT": ("H", "tab:green"),
    "STALE": ("S", "tab:orange"),
    "MISS": ("M", "tab:red"),
    "ERROR": ("E", "tab:gray"),
}
LEGEND = "H hit, S stale, M miss, E error (no prediction); ms buckets on a log scale"
SMALLEST_MS = 0.001  # anything faster (a coarse clock's 0.0) is drawn in this one's bucket
_STEPS = (1, 2, 5)
_MIN_BAR = 10


@dataclasses.dataclass(frozen=True, slots=True)
class Series:
    """One run's answers under a label: (kind, ms) pairs, kind one of KINDS."""

    label: str
    samples: tuple[tuple[str, float], ...]


class PlotUnavailable(Exception):
    """matplotlib is not installed, so no PNG can be drawn."""


def bucket_edge(index: int) -> float:
    """The lower edge, in ms, of bucket index: 0 is 1 ms, 1 is 2 ms, 2 is 5 ms, 3 is 10 ms."""
    decade, step = divmod(index, len(_STEPS))
    return _STEPS[step] * 10.0**decade


def bucket_of(ms: float) -> int:
    """The index of the bucket that holds ms: bucket_edge(i) <= ms < bucket_edge(i + 1)."""
    ms = max(ms, SMALLEST_MS)
    index = len(_STEPS) * math.floor(math.log10(ms))
    # log10 can land a hair off at an exact power of ten: settle on the edges themselves.
    while bucket_edge(index) > ms:
        index -= 1
    while bucket_edge(index + 1) <= ms:
        index += 1
    return index


def bucket_label(index: int) -> str:
    """'0.5-1', '1-2', '1000-2000': the bucket's edges in ms."""
    return f"{bucket_edge(index):g}-{bucket_edge(index + 1):g}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 2)] + ".."


def _bar(counts: Sequence[tuple[str, int]], chars_per_answer: float, width: int) -> str:
    """Letters for each kind in proportion; a kind with any answer shows at least one."""
    lengths = [max(1, round(n * chars_per_answer)) if n else 0 for _, n in counts]
    while sum(lengths) > width and max(lengths) > 1:  # rounding up the small ones overflowed
        lengths[lengths.index(max(lengths))] -= 1
    return "".join(
        KINDS[kind][0] * length for (kind, _), length in zip(counts, lengths, strict=True)
    )


def render_histogram(series: Sequence[Series], width: int = 80) -> str:
    """One row per latency bucket, one column per run, each answer's kind as a letter.

    A bar's length is its share of its run's answers, so that runs of different sizes
    compare; the largest share fills the column. The number after it is the count.
    """
    counts = [collections.Counter((bucket_of(ms), kind) for kind, ms in s.samples) for s in series]
    totals = [len(s.samples) for s in series]
    buckets = {index for counter in counts for index, _ in counter}
    if not buckets:
        return "latency histogram: no answers to draw"
    rows = range(min(buckets), max(buckets) + 1)  # empty rows too: the gap is the point

    def in_bucket(run: int, index: int) -> list[tuple[str, int]]:
        return [(kind, counts[run][index, kind]) for kind in KINDS]

    largest = max(
        sum(n for _, n in in_bucket(run, index)) / totals[run]
        for run in range(len(series))
        for index in rows
        if totals[run]
    )
    label_width = max(len("ms"), *(len(bucket_label(index)) for index in rows))
    count_width = len(str(max(totals)))
    bar_width = max(
        _MIN_BAR, (width - label_width - len(series) * (3 + count_width)) // len(series)
    )
    column = bar_width + 1 + count_width

    headers = [_header(s.label, total, column) for s, total in zip(series, totals, strict=True)]
    lines = [_line("ms", headers, label_width, column)]
    for index in rows:
        cells = []
        for run, total in enumerate(totals):
            kinds = in_bucket(run, index)
            n = sum(count for _, count in kinds)
            bar = _bar(kinds, bar_width / largest / total, bar_width) if n else ""
            cells.append(f"{bar} {n}" if n else "")
        lines.append(_line(bucket_label(index), cells, label_width, column))
    lines.append(LEGEND)
    return "\n".join(lines)


def _header(label: str, answers: int, width: int) -> str:
    """'label: 12 answers', or if that is too wide 'lab.. (12)': the count always shows."""
    header = f"{label}: {_plural(answers, 'answer')}"
    if len(header) <= width:
        return header
    count = f" ({answers})"
    return _fit(label, width - len(count)) + count


def _line(label: str, cells: Sequence[str], label_width: int, column: int) -> str:
    return (f"{label:>{label_width}}" + "".join(f"  {cell:<{column}}" for cell in cells)).rstrip()


def load_pyplot() -> Any:
    """matplotlib.pyplot, drawing to files only; PlotUnavailable if it is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("matplotlib is not installed") from None
    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    return plt


def _png_edges(samples: Sequence[float]) -> list[float]:
    """Ten log-spaced bins per decade, whole decades around the samples."""
    low = math.floor(math.log10(max(min(samples, default=0.1), SMALLEST_MS)))
    high = max(low + 1, math.ceil(math.log10(max(max(samples, default=1000.0), SMALLEST_MS))))
    return [10.0 ** (k / 10) for k in range(10 * low, 10 * high + 1)]


def draw_png(series: Sequence[Series], path: str | Path) -> None:
    """One histogram per run, stacked by kind, one above the other on a shared log axis."""
    plt = load_pyplot()
    edges = _png_edges([ms for s in series for _, ms in s.samples])
    figure, axes = plt.subplots(
        len(series), 1, sharex=True, sharey=True, squeeze=False, figsize=(9, 1 + 2.4 * len(series))
    )
    for axis, s in zip(axes[:, 0], series, strict=True):
        by_kind = {kind: [ms for k, ms in s.samples if k == kind] for kind in KINDS}
        present = [kind for kind in KINDS if by_kind[kind]]
        counts = ", ".join(f"{len(by_kind[kind])} {kind}" for kind in present)
        axis.set_title(f"{s.label}: {_plural(len(s.samples), 'answer')} ({counts or 'none'})")
        if present:
            axis.hist(
                [by_kind[kind] for kind in present],
                bins=edges,
                stacked=True,
                # Shares, not counts, so that runs of different sizes compare.
                weights=[[100 / len(s.samples)] * len(by_kind[kind]) for kind in present],
                color=[KINDS[kind][1] for kind in present],
                label=present,
            )
            axis.legend(loc="best")
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(lambda value, _: f"{value:g}")  # 1000, not 10^3
        axis.set_ylabel("% of answers")
        axis.grid(True, which="major", alpha=0.3)
    axes[-1, 0].set_xlabel("latency, ms (log scale)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
