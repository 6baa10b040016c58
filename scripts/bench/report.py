"""The benchmark's report: tables for the terminal, Markdown and a PNG chart.

Each table is built once (a title, a header, rows) and rendered either as aligned text
or as Markdown, so that the terminal and docs/performance.md always agree.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from scripts.bench.judge import Verdict, format_value
from scripts.bench.results import (
    FLASK_CACHING,
    FLOOR,
    FLOOR_GET,
    OURS,
    SEED,
    TITLES,
    HitRun,
    Results,
)
from scripts.bench.wrk import WrkResult

# The settings rows that hold gunicorn's whole configuration, shown as code.
GUNICORN_OURS = "gunicorn (ours, gunicorn.conf.py as shipped)"
GUNICORN_BASELINES = "gunicorn (Flask-Caching and the floors)"
GUNICORN_SETTINGS = (GUNICORN_OURS, GUNICORN_BASELINES)


@dataclasses.dataclass(frozen=True)
class Table:
    title: str
    header: Sequence[str]
    rows: Sequence[Sequence[str]]

    def text(self) -> str:
        widths = [
            max(len(row[i]) for row in [self.header, *self.rows]) for i in range(len(self.header))
        ]
        lines = [f"--- {self.title}"]
        for row in [self.header, *self.rows]:
            lines.append(
                "  ".join(
                    cell.rjust(w) if i else cell.ljust(w)
                    for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                )
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"| {' | '.join(self.header)} |", f"|{'|'.join(' --- ' for _ in self.header)}|"]
        lines += [f"| {' | '.join(row)} |" for row in self.rows]
        return "\n".join(lines)


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _rps(runs: Sequence[WrkResult]) -> str:
    return " / ".join(f"{run.rps:,.0f}" for run in runs) or "-"


def _split(runs: Sequence[HitRun]) -> str:
    return "; ".join("/".join(str(n) for n in run.split) for run in runs)


def hit_table(results: Results) -> Table:
    rows = []
    for target in results.targets:
        runs = results.hit_runs(target)
        if not runs:
            continue
        ratio = results.hit_ratio(OURS, target, lambda h: h.load.rps)
        rows.append(
            [
                TITLES[target],
                f"{_median([r.load.rps for r in runs]):,.0f}",
                _ms(_median([r.load.p50_ms for r in runs])),
                _ms(_median([r.load.p90_ms for r in runs])),
                _ms(_median([r.load.p99_ms for r in runs])),
                _ms(_median([r.sequential.p50_ms for r in runs])),
                "-" if target == OURS or ratio is None else f"{ratio:.2f}x",
                _split(runs),
            ]
        )
    return Table(
        f"hits, medians of {results.rounds} round(s)",
        [
            "target",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "sequential p50 ms",
            "ours / it",
            "connections per worker",
        ],
        rows,
    )


def rounds_table(results: Results) -> Table:
    rows = []
    for run in sorted(results.hits, key=lambda h: (h.round, results.targets.index(h.target))):
        rows.append(
            [
                str(run.round + 1),
                TITLES[run.target],
                f"{run.load.rps:,.0f}",
                _ms(run.load.p50_ms),
                _ms(run.load.p99_ms),
                _ms(run.sequential.p50_ms),
                _ms(run.sequential.p99_ms),
                str(run.load.misses + run.sequential.misses),
                str(run.load.non_2xx + run.load.socket_errors + run.load.timeouts),
                "/".join(str(n) for n in run.split),
            ]
        )
    return Table(
        "hits, every round",
        [
            "round",
            "target",
            "req/s",
            "p50 ms",
            "p99 ms",
            "seq p50 ms",
            "seq p99 ms",
            "misses",
            "errors",
            "split",
        ],
        rows,
    )


def throughput_rounds_table(results: Results) -> Table:
    """Each target's hit throughput round by round, and its slowest round's share."""
    rows = []
    for target in results.targets:
        runs = results.hit_runs(target)
        if not runs:
            continue
        slowest = results.slowest_round(target)
        rows.append(
            [
                TITLES[target],
                " / ".join(f"{r.load.rps:,.0f}" for r in runs),
                "-" if slowest is None else f"{slowest:.2f}x",
                _split(runs),
            ]
        )
    return Table(
        "hit throughput, round by round (interleaved; connections per worker mid-run)",
        ["target", "req/s per round", "slowest / median", "connections per worker"],
        rows,
    )


def stampede_table(results: Results) -> Table:
    rows = []
    for target in results.targets:
        runs = [s for s in results.stampedes if s.target == target]
        if runs:
            rows.append(
                [
                    TITLES[target],
                    str(runs[0].clients),
                    f"{_median([s.model_runs for s in runs]):g}",
                    ", ".join(str(s.model_runs) for s in runs),
                    f"{_median([s.seconds for s in runs]):.2f}",
                ]
            )
    return Table(
        "cold stampede: concurrent requests for one expired pair",
        ["target", "requests", "model runs (median)", "per round", "seconds to last answer"],
        rows,
    )


def steady_table(results: Results) -> Table:
    rows = []
    for target in results.targets:
        runs = results.steady_runs(target)
        if runs:
            rows.append(
                [
                    TITLES[target],
                    f"{_median([s.result.rps for s in runs]):,.0f}",
                    _ms(_median([s.result.p50_ms for s in runs])),
                    _ms(_median([s.result.p99_ms for s in runs])),
                    f"{_median([s.result.p99_ms / s.result.p50_ms for s in runs]):.1f}",
                    ", ".join(str(s.result.misses) for s in runs),
                    ", ".join(str(s.model_runs) for s in runs),
                    ", ".join(str(s.result.non_2xx + s.result.timeouts) for s in runs),
                    "; ".join("/".join(str(n) for n in s.split) for s in runs),
                ]
            )
    return Table(
        "steady state under load, predictions expiring (medians; lists are per round)",
        [
            "target",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99/p50",
            "waited for the model",
            "model runs in the server",
            "errors",
            "split",
        ],
        rows,
    )


def scale_table(results: Results) -> Table:
    rows = []
    for point in results.scale:
        rows.append(
            [
                f"{point.pairs:,}",
                f"{point.refresh_median:.3f}",
                ", ".join(f"{s:.3f}" for s in point.refresh_seconds),
                f"{point.redis_used_memory / 1e6:.2f}",
                f"{point.redis_bytes_per_pair:,.0f}",
                _ms(point.hit_p50_ms),
                _ratio(point.hit_p50_vs_reference),
                _ratio(point.same_pairs_p50_vs_reference),
                _rps(point.random_loads),
                _rps(point.reference_loads),
                _ratio(point.random_rps_vs_reference),
                f"{point.load.rps:,.0f}",
                f"{point.warmed_workers} in {point.fill_seconds:.1f} s",
                " / ".join(f"{m:.0f}" for m in point.api_rss_mib),
                " / ".join(f"{m:.0f}" for m in point.pool_rss_mib),
            ]
        )
    return Table(
        "pairs scaling, model latency 0 (lists are per round)",
        [
            "pairs",
            "refresh s (median)",
            "refresh s, each",
            "Redis used MB",
            "bytes per pair",
            "hit p50 ms",
            "vs 4 pairs",
            "vs 4, same 4 asked",
            "req/s at random",
            "4-pair API req/s",
            "at random vs 4 pairs",
            "req/s in turn",
            "workers that read every pair",
            "API worker RSS MiB",
            "pool RSS MiB",
        ],
        rows,
    )


def verdict_table(verdicts: Sequence[Verdict]) -> Table:
    rows = [
        [
            v.goal.text,
            "-" if v.value is None else format_value(v.value, v.goal.unit),
            v.goal.describe_limit(),
            v.status,
        ]
        for v in verdicts
    ]
    return Table("targets", ["target", "measured", "goal", "verdict"], rows)


def tables(results: Results) -> list[Table]:
    found = [
        hit_table(results),
        throughput_rounds_table(results),
        stampede_table(results),
        steady_table(results),
        scale_table(results),
    ]
    return [table for table in found if table.rows]


def render_text(results: Results, verdicts: Sequence[Verdict]) -> str:
    judged = ["--- targets (ratios are medians of per-round ratios)"]
    judged += [verdict.line() for verdict in verdicts]
    return "\n\n".join([*(table.text() for table in tables(results)), "\n".join(judged)])


def render_markdown(results: Results, verdicts: Sequence[Verdict], chart_name: str) -> str:
    out = [
        "# Performance",
        "",
        f"Written by `make bench` ({results.mode} mode, {results.seconds:.0f} s). "
        "Every process ran on this machine, on 127.0.0.1, started on a free port and "
        "stopped by PID; the load generator (wrk) shared the machine with the servers.",
        "",
        "## Targets",
        "",
        "Ratios are the medians of per-round ratios: in each round every target is measured "
        "once, in an order rotated from round to round, so that noise falls on all alike.",
        "",
        verdict_table(verdicts).markdown(),
        "",
        f"![throughput and latency per target]({chart_name})",
        "",
    ]
    for table in [*tables(results), rounds_table(results)]:
        if table.rows:
            out += [f"## {table.title[0].upper()}{table.title[1:]}", "", table.markdown(), ""]
    out += _notes()
    out += ["## Settings", "", _pairs_table(results.settings), ""]
    out += ["## Machine", "", _pairs_table(results.machine), ""]
    out += ["## Versions", "", _pairs_table(results.versions), ""]
    return "\n".join(out)


def _pairs_table(values: dict[str, str]) -> str:
    return Table(
        "", ["", ""], [[k, f"`{v}`" if k in GUNICORN_SETTINGS else v] for k, v in values.items()]
    ).markdown()


def _notes() -> list[str]:
    return [
        "## How it is measured",
        "",
        "- **Targets.** *ours*: `gunicorn api.wsgi:app` with its real `gunicorn.conf.py` "
        "(gevent workers), access log and metrics on, Celery worker and beat, default "
        "settings (4 pairs, TTL 60 s, refresh every 20 s), cache warmed by beat before any "
        "request. *Flask-Caching*: `@cache.memoize` on Redis "
        "(`scripts/bench/flask_caching_app.py`). *seed-style*: FastAPI, a Redis hash per pair, "
        "compute on a miss with no lock (`scripts/bench/seed_app.py`). *floors*: a Flask view "
        "answering a constant prediction body, and the same view doing one Redis GET "
        "(`scripts/bench/floors.py`). The Flask baselines read the same `gunicorn.conf.py` "
        "but run gthread workers (2 x 8 threads, forced on the command line and checked in "
        "gunicorn's start-up log), as in every earlier report, so that the ratios stay "
        "comparable; every target computes through the same `Predictor` and model latency, "
        "against one Redis server (a database each).",
        "- **Hits.** Baselines get a 3,600 s expiry in this phase, so that only hits are "
        "measured. Sequential latency is `wrk -t1 -c1` (one keep-alive connection, one "
        "request at a time); load is `wrk -t2 -c32` (two threads for the two cores), new "
        "connections every round. Requests go round every pair (`scripts/bench/spread.lua`). "
        "The connections held by each worker process are counted mid-run from the kernel's "
        "socket table (psutil); a round whose connections piled onto one worker shows as a "
        "slow round.",
        "- **Stampede.** One pair made cold (for ours through `PredictionStore.forget`, which "
        "also drops every API process's near copy), then 50 requests for it sent at once "
        "on 50 open connections; model runs are counted from each server's "
        "`computed prediction pair=` log lines.",
        "- **Steady state.** Every target with the seed's 5 s expiry (ours refreshing every "
        'third of it through beat and the worker); "waited for the model" counts answers '
        "with `X-Cache: MISS` (every baseline sends that header too).",
        "- **Scaling.** Our worker and API with N pairs, no beat, "
        "`SIMULATED_MODEL_LATENCY_SECONDS=0`: the driver sends `predictions.refresh_all` "
        "and polls Redis (DBSIZE) until every pair is written; the first refresh (which "
        "loads the model in every pool process) is not timed. Then every API worker process "
        "reads every pair (`GET /predict?pairs=`, 100 a request) and serves each once "
        "(`GET /predict/<pair>`, pipelined), on one keep-alive connection per worker, as "
        "random clients would in time; then the N-pair API is measured side by side with an "
        "API of the 4 default pairs on the same cache: latency one request at a time (pairs "
        "in turn), throughput with `wrk -t2 -c32` (pairs at random). RSS is read last, "
        "after a load run across every pair in turn.",
        "",
    ]


_CHART_LABELS = {
    OURS: "ours",
    FLASK_CACHING: "Flask-Caching\nmemoize",
    SEED: "seed-style\nFastAPI",
    FLOOR: "floor:\nconstant JSON",
    FLOOR_GET: "floor:\none Redis GET",
}


def draw_chart(results: Results, path: Path) -> None:
    """Throughput bars and load latency percentiles per target, from the hit phase."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    targets = [t for t in results.targets if results.hit_runs(t)]
    # Two short lines per label: five targets side by side must not overlap.
    names = [_CHART_LABELS.get(t, t) for t in targets]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    rps = [_median([r.load.rps for r in results.hit_runs(t)]) for t in targets]
    colors = ["tab:green" if t == OURS else "tab:gray" for t in targets]
    left.bar(names, rps, color=colors)
    for number, target in enumerate(targets):
        left.scatter(
            [number] * len(results.hit_runs(target)),
            [r.load.rps for r in results.hit_runs(target)],
            color="black",
            s=10,
            zorder=3,
        )
    left.set_title(f"hit throughput, wrk -c32 (median of {results.rounds}; dots: rounds)")
    left.set_ylabel("requests/s")
    width = 0.2
    figures: list[tuple[str, Callable[[HitRun], float]]] = [
        ("sequential p50", lambda r: r.sequential.p50_ms),
        ("load p50", lambda r: r.load.p50_ms),
        ("load p90", lambda r: r.load.p90_ms),
        ("load p99", lambda r: r.load.p99_ms),
    ]
    for offset, (label, figure_of) in enumerate(figures):
        values = [_median([figure_of(r) for r in results.hit_runs(t)]) for t in targets]
        positions = [i + (offset - 1.5) * width for i in range(len(targets))]
        right.bar(positions, values, width, label=label)
    right.set_xticks(range(len(targets)), names)
    right.set_yscale("log")
    right.set_ylabel("ms (log scale)")
    right.set_title("hit latency percentiles")
    right.legend()
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
