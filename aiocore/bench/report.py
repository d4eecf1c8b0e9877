"""Turning results into a table, a summary of ratios, JSON and a plot.

Ratios are always "how many times better aiocore is": ``aiocore / other``
for rates, ``other / aiocore`` for times (lower is better there), so a ratio
above 1 reads the same way in every column.  Only medians enter a ratio; the
spread of each median is printed next to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TextIO

from .harness import CaseResult, ContenderResult, Metric, WorkloadResult

__all__ = [
    "MATPLOTLIB_MISSING",
    "floor_of",
    "matplotlib_missing",
    "plot",
    "ratio",
    "summary",
    "to_json",
    "write_table",
]

MATPLOTLIB_MISSING = (
    "--plot needs matplotlib, which is not installed: pip install matplotlib "
    "(or pip install 'aiocore[plot]')"
)


def ratio(a: ContenderResult, b: ContenderResult, metric: Metric) -> float | None:
    """How many times better *a* is than *b* on *metric* (medians), or ``None``."""
    sa, sb = a.stat(metric.key), b.stat(metric.key)
    if sa is None or sb is None or sa[0] <= 0 or sb[0] <= 0:
        return None
    return sa[0] / sb[0] if metric.higher_is_better else sb[0] / sa[0]


def floor_of(c: ContenderResult, case: CaseResult) -> ContenderResult | None:
    """The floor contender of aiocore contender *c* (``auto``: of the backend it ran on)."""
    name = c.floor
    if name is None and "runs_on" in c.info:
        name = f"raw {c.info['runs_on']}"
    return case.get(name) if name else None


def _baselines(case: CaseResult) -> list[ContenderResult]:
    return [c for c in case.contenders if c.role == "baseline"]


def _fmt(value: float | None, fmt: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return format(value, fmt)


def _cell(c: ContenderResult, m: Metric) -> str:
    st = c.stat(m.key)
    if st is None:
        return "-"
    med, lo, hi = st
    return f"{format(med, m.fmt)} [{format(lo, m.fmt)} .. {format(hi, m.fmt)}]"


def _rows_table(rows: Sequence[Sequence[str]], out: TextIO, indent: str = "  ") -> None:
    widths = [max(len(r[i]) for r in rows if len(r) > i) for i in range(max(map(len, rows)))]
    for row in rows:
        cells = [
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=False))
        ]
        out.write(indent + "  ".join(cells).rstrip() + "\n")


def _case_table(w: WorkloadResult, case: CaseResult, repeat: int, out: TextIO) -> None:
    metrics = w.workload.metrics
    primary = metrics[0]
    title = w.workload.title + (f" ({case.label})" if case.label else "")
    out.write(f"\n{title}\n")
    if case.error:
        out.write(f"  FAILED: {case.error}\n")
    # Ratio columns only where there is an aiocore contender to compare.
    compared = any(c.role == "aiocore" and c.status == "ok" for c in case.contenders)
    baselines = _baselines(case) if compared else []
    out.write(f"  baseline: {w.workload.baseline}; floor: {w.workload.floor}\n")
    if "size_per_run" in case.params:
        out.write(
            f"  every contender: {case.params['size_per_run']:,} per run "
            "(this rate depends on the size, so all run the same one)\n"
        )
    head = [
        "contender",
        *(m.label if m.label == m.unit else f"{m.label} ({m.unit})" for m in metrics),
    ]
    head += [f"vs {b.name}" for b in baselines] + (["vs floor"] if compared else [])
    rows: list[list[str]] = [head]
    notes: list[str] = []
    for c in case.contenders:
        if c.status != "ok":
            what = "FAILED" if c.status == "failed" else "not available"
            notes.append(f"  {c.name}: {what}: {c.error}")
            continue
        label = c.name + (" (floor)" if c.role == "floor" else "")
        if c.info.get("runs_on") and c.info["runs_on"] != c.family:
            label += f" -> {c.info['runs_on']}"
        row = [label, *(_cell(c, m) for m in metrics)]
        if c.role == "aiocore":
            row += [_fmt(ratio(c, b, primary), ".2f") for b in baselines]
            fl = floor_of(c, case)
            row.append(f"{_fmt(ratio(c, fl, primary), '.2f')} {fl.name}" if fl else "-")
        elif compared:
            row += [""] * (len(baselines) + 1)
        rows.append(row)
    if len(rows) > 1:
        _rows_table(rows, out)
    for c in case.contenders:
        over = [s["overrun_ms"] for s in c.samples if s.get("overrun_ms", 0) > 0]
        if over and c.status == "ok":
            notes.append(
                f"  note: {c.name}: arming ended after the first deadline in {len(over)} of "
                f"{len(c.samples)} runs (by up to {max(over):.0f} ms); those runs' early "
                "timers were late before the loop started"
            )
    for n in notes:
        out.write(n + "\n")


def _idle_pivot(w: WorkloadResult, out: TextIO) -> None:
    cases = [c for c in w.cases if "idle_fds" in c.params]
    if len(cases) < 2:
        return
    names: list[str] = []
    for case in cases:
        names.extend(c.name for c in case.contenders if c.name not in names)
    sizes = [case.params["idle_fds"] for case in cases]
    head = ["contender", *(f"{s} idle" for s in sizes), f"{sizes[-1]} vs {sizes[0]}"]
    rows = [head]
    for name in names:
        meds: list[float | None] = []
        for case in cases:
            c = case.get(name)
            st = c.stat("rate") if c else None
            meds.append(st[0] if st else None)
        first, last = meds[0], meds[-1]
        keep = f"{last / first * 100:.0f}%" if first and last else "-"
        rows.append([name, *(_fmt(m, ",.0f") for m in meds), keep])
    out.write(f"\n{w.workload.title}: round trips/s (medians) and the rate kept\n")
    _rows_table(rows, out)
    for case in cases:
        what = case.params.get("rlimit_nofile", "")
        if "raised" in what or "short" in what:
            out.write(f"  note: {what}\n")


def _median(case: CaseResult | None, name: str, key: str) -> float | None:
    c = case.get(name) if case else None
    st = c.stat(key) if c else None
    return st[0] if st else None


def summary(results: Sequence[WorkloadResult]) -> list[dict[str, Any]]:
    """The headline ratios (with the project's goals), from whatever was measured."""
    by_name = {r.workload.name: r for r in results}
    items: list[dict[str, Any]] = []

    def first_case(name: str) -> tuple[WorkloadResult, CaseResult] | None:
        r = by_name.get(name)
        if r is None or not r.cases:
            return None
        return r, r.cases[0]

    def aiocore_of(case: CaseResult) -> list[ContenderResult]:
        return [c for c in case.contenders if c.role == "aiocore" and c.status == "ok"]

    found = first_case("bh_chain")
    if found:
        w, case = found
        uv = case.get("uvloop")
        if uv is not None:
            values = {c.family: ratio(c, uv, w.workload.metrics[0]) for c in aiocore_of(case)}
            items.append(
                {"what": "BH chain / uvloop call_soon chain", "values": values, "goal": ">= 1.0"}
            )
    for wname, title in (("socketpair", "socketpair"), ("eventfd", "eventfd")):
        found = first_case(wname)
        if not found:
            continue
        w, case = found
        m = w.workload.metrics[0]
        uv, auto = case.get("uvloop"), case.get("aiocore auto")
        if wname == "socketpair" and uv is not None and auto is not None:
            items.append(
                {
                    "what": "auto socketpair ping-pong / uvloop add_reader",
                    "values": {"auto": ratio(auto, uv, m)},
                    "goal": ">= 0.9",
                }
            )
        kept_floor: dict[str, float | None] = {}
        for c in aiocore_of(case):
            fl = floor_of(c, case)
            if fl is not None:
                kept_floor[f"{c.family}/{fl.name}"] = ratio(c, fl, m)
        items.append(
            {
                "what": f"backend / raw loop, {title} ping-pong",
                "values": kept_floor,
                "goal": ">= 0.85",
            }
        )
        iou, ep = case.get("aiocore io_uring"), case.get("aiocore epoll")
        if iou is not None and ep is not None:
            items.append(
                {
                    "what": f"io_uring / epoll backend, {title} ping-pong",
                    "values": {"io_uring/epoll": ratio(iou, ep, m)},
                    "goal": ">= 1.0",
                }
            )
        raw_iou = case.get("raw io_uring")
        if iou is not None and raw_iou is not None:
            items.append(
                {
                    "what": f"io_uring backend / raw io_uring loop, {title} ping-pong",
                    "values": {"io_uring/raw io_uring": ratio(iou, raw_iou, m)},
                    "goal": ">= 0.8",
                }
            )
    found = first_case("timers")
    if found:
        _, case = found
        label = case.label
        span = {c.name: _median(case, c.name, "span_s") for c in case.contenders}
        p99 = {c.name: _median(case, c.name, "p99_ms") for c in case.contenders}
        items.append(
            {
                "what": f"timers ({label}): fire span, s",
                "values": span,
                "goal": "<= 1.1 s for 200,000 in 1 s",
                "unit": "s",
            }
        )
        items.append(
            {
                "what": f"timers ({label}): lateness p99, ms",
                "values": p99,
                "goal": "<= 50 ms",
                "unit": "ms",
            }
        )
    r = by_name.get("idle_fds")
    if r is not None and len(r.cases) >= 2:
        lo, hi = r.cases[0], r.cases[-1]
        kept: dict[str, float | None] = {}
        for c in hi.contenders:
            a, b = _median(hi, c.name, "rate"), _median(lo, c.name, "rate")
            kept[c.name] = a / b if a and b else None
        items.append(
            {
                "what": f"rate at {hi.params['idle_fds']} idle fds / at {lo.params['idle_fds']}",
                "values": kept,
                "goal": ">= 0.90 for auto, epoll, io_uring",
            }
        )
    return items


def write_summary(items: Sequence[dict[str, Any]], out: TextIO) -> None:
    """Print :func:`summary` items, one line each."""
    if not items:
        return
    out.write("\nSummary: the ratios aiocore aims at (goal in brackets; > 1: aiocore better)\n")
    for item in items:
        unit = item.get("unit")
        fmt = ".3f" if unit == "s" else ".1f" if unit == "ms" else ".2f"
        values = "  ".join(f"{k} {_fmt(v, fmt)}" for k, v in item["values"].items())
        out.write(f"  {item['what']}: {values or '-'}  [{item['goal']}]\n")


def write_header(env: dict[str, Any], settings: dict[str, Any], out: TextIO) -> None:
    """The facts a reader needs to judge the numbers."""
    out.write(f"aiocore bench  {env['date']}\n")
    out.write(f"  CPU: {env['cpu_model']} ({env['cpu_count']} CPUs")
    if "affinity" in env:
        out.write(f", may run on {env['affinity']}")
    out.write(f"; load {env.get('loadavg_start')} at start, not pinned)\n")
    out.write(f"  {env['kernel']}, {env['python']}, aiocore {env['aiocore']}, ")
    out.write(f"uvloop {env['uvloop'] or 'not installed'}\n")
    per_run = (
        f"{settings['size']:,} per run of the rate workloads"
        if settings.get("size")
        else f"~{settings['duration']:g} s per run"
    )
    quick = " (--quick: tiny sizes, numbers mean nothing)" if settings["quick"] else ""
    out.write(
        f"  each figure: median of {settings['repeat']} alternating runs [min .. max]; "
        f"{per_run}{quick}\n"
    )
    out.write(f"  backends: {', '.join(settings['backends'])}")
    for name, why in settings.get("backends_not_available", {}).items():
        out.write(f"; {name} not available: {why}")
    out.write("\n")


def write_table(results: Sequence[WorkloadResult], repeat: int, out: TextIO) -> None:
    """Every case as a table, then the idle-fd pivot."""
    for w in results:
        for case in w.cases:
            _case_table(w, case, repeat, out)
        if w.workload.name == "idle_fds":
            _idle_pivot(w, out)


def _contender_json(c: ContenderResult, case: CaseResult, w: WorkloadResult) -> dict[str, Any]:
    stats = {}
    for m in w.workload.metrics:
        st = c.stat(m.key)
        if st is not None:
            stats[m.key] = {"median": st[0], "min": st[1], "max": st[2]}
    data: dict[str, Any] = {
        "name": c.name,
        "role": c.role,
        "family": c.family,
        "status": c.status,
        "error": c.error,
        "size": c.size,
        "info": dict(c.info),
        "samples": c.samples,
        "calibration": [{"size": n, "sample": s} for n, s in c.calibration],
        "stats": stats,
    }
    if c.role == "aiocore" and c.status == "ok":
        primary = w.workload.metrics[0]
        ratios: dict[str, float | None] = {
            f"vs {b.name}": ratio(c, b, primary) for b in _baselines(case)
        }
        fl = floor_of(c, case)
        if fl is not None:
            ratios[f"vs floor ({fl.name})"] = ratio(c, fl, primary)
        data["ratios"] = ratios
    return data


def to_json(results: Sequence[WorkloadResult]) -> list[dict[str, Any]]:
    """Every workload, case and contender with raw samples, medians, spreads and ratios."""
    out = []
    for w in results:
        wl = w.workload
        out.append(
            {
                "name": wl.name,
                "title": wl.title,
                "description": wl.description,
                "baseline": wl.baseline,
                "floor": wl.floor,
                "metrics": [
                    {
                        "key": m.key,
                        "label": m.label,
                        "unit": m.unit,
                        "higher_is_better": m.higher_is_better,
                    }
                    for m in wl.metrics
                ],
                "seconds": w.seconds,
                "cases": [
                    {
                        "label": case.label,
                        "params": case.params,
                        "error": case.error,
                        "contenders": [_contender_json(c, case, w) for c in case.contenders],
                    }
                    for case in w.cases
                ],
            }
        )
    return out


def matplotlib_missing() -> str | None:
    """:data:`MATPLOTLIB_MISSING` if matplotlib cannot be imported, else ``None``."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return MATPLOTLIB_MISSING
    return None


def plot(results: Sequence[WorkloadResult], path: str, title: str) -> None:
    """Draw the idle-fd scaling curves and the per-workload ratio bars into *path*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(3, 1, figsize=(10, 13))
    ax = axes[0]
    idle = next((r for r in results if r.workload.name == "idle_fds"), None)
    if idle is not None and idle.cases:
        names: list[str] = []
        for case in idle.cases:
            names.extend(c.name for c in case.contenders if c.name not in names)
        for name in names:
            xs, ys, lo, hi = [], [], [], []
            for case in idle.cases:
                c = case.get(name)
                st = c.stat("rate") if c else None
                if st is not None:
                    xs.append(case.params["idle_fds"])
                    ys.append(st[0])
                    lo.append(st[0] - st[1])
                    hi.append(st[2] - st[0])
            if xs:
                style = "--" if name.startswith("raw") else "-"
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt=style + "o", capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("idle fds registered beside the active socketpair")
        ax.set_ylabel("round trips/s (median, min-max bars)")
        ax.yaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v / 1000:,.0f}k")
        )
        ax.set_title("idle-fd scaling")
        ax.legend(fontsize="small", ncol=2)
        ax.grid(True, which="both", alpha=0.3)
    else:
        ax.text(0.5, 0.5, "idle_fds not measured", ha="center", va="center")
        ax.set_axis_off()

    def bars(ax: Any, against: str, title: str) -> None:
        groups: list[str] = []
        series: dict[str, list[float]] = {}
        for r in results:
            primary = r.workload.metrics[0]
            for case in r.cases:
                label = r.workload.name + (f"\n{case.label}" if case.label else "")
                row: dict[str, float] = {}
                for c in case.contenders:
                    if c.role != "aiocore" or c.status != "ok":
                        continue
                    if against == "floor":
                        other = floor_of(c, case)
                    else:
                        other = case.get("uvloop")
                        if other is None or other.status != "ok":
                            other = case.get("asyncio")
                    v = ratio(c, other, primary) if other is not None else None
                    if v is not None:
                        row[c.family] = v
                if row:
                    groups.append(label)
                    for fam in row:
                        series.setdefault(fam, [])
                    for fam, vals in series.items():
                        vals.append(row.get(fam, math.nan))
        # Families that appeared late are padded at the front.
        for fam, vals in series.items():
            series[fam] = [math.nan] * (len(groups) - len(vals)) + vals
        if not groups:
            ax.text(0.5, 0.5, "nothing to compare", ha="center", va="center")
            ax.set_axis_off()
            return
        width = 0.8 / max(len(series), 1)
        for i, (fam, vals) in enumerate(series.items()):
            xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
            ax.bar(xs, vals, width, label=f"aiocore {fam}")
        ax.axhline(1.0, color="black", linewidth=0.8)
        top = max((v for vals in series.values() for v in vals if math.isfinite(v)), default=1.0)
        # Room above the 1.0 line for the legend.
        ax.set_ylim(0, max(1.4, top * 1.25))
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, fontsize="small")
        ax.set_ylabel("ratio (> 1: aiocore better)")
        ax.set_title(title)
        ax.legend(fontsize="small", ncol=4, loc="upper left")
        ax.grid(True, axis="y", alpha=0.3)

    bars(axes[1], "baseline", "aiocore / uvloop (asyncio where uvloop is missing), primary metric")
    bars(axes[2], "floor", "aiocore / floor (raw loop on the same system call)")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
