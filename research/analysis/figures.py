"""Figures: per-trial timelines in the talk's style, and summary figures over a sweep.

Timelines follow the talk's Gantt charts: one row per worker, one bar per task from its in-task
start to its end, time in seconds from the trial's first start, bar colour = the task's order
within its worker (a reversed cubehelix palette). All bars of an axes are ONE PolyCollection,
so a 100,000-task trial renders in seconds; above :data:`RASTERIZE_ABOVE` bars the SVG embeds
the bars as an image (axes and text stay vector) to keep the file small.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas, never through
pyplot, so importing this module changes no global matplotlib state.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.collections import PolyCollection
from matplotlib.colors import Colormap, ListedColormap, Normalize
from matplotlib.figure import Figure, FigureBase
from matplotlib.ticker import MaxNLocator

from .. import schema
from . import metrics as M
from . import results as R
from .parallel import default_jobs, run_ordered

#: What the report and `python -m research figures` save (the HTML shows PNG); `--format png
#: svg` adds vector copies (each format costs a save per figure).
FORMATS: tuple[str, ...] = ("png",)
RASTERIZE_ABOVE = 5000
#: Worker rows above this get numeric ticks instead of one label each.
MAX_ROW_LABELS = 40
#: Scheduler pairs for the paired timeline, best first: the talk's comparison, then analogues.
PREFERRED_PAIRS: tuple[tuple[str, str], ...] = (
    ("ipp-direct", "ipp-lb"), ("mp-map", "mp-dynamic"), ("futures", "mp-dynamic"),
    ("dask", "ray"),
)
DEFAULT_MAX_TIMELINES = 40
#: Latencies and gaps at or below this are drawn at it on log axes.
LOG_FLOOR_S = 1e-7
BAR_HEIGHT = 0.8


def cubehelix_cmap(
    start: float = 0.0, rot: float = 0.4, gamma: float = 1.0, hue: float = 0.8,
    light: float = 0.85, dark: float = 0.2, reverse: bool = True, n: int = 256,
) -> ListedColormap:
    """Green's cubehelix with seaborn's ``cubehelix_palette`` defaults.

    ``reverse=True`` runs dark to light, as the talk's palette: first tasks dark, later lighter.
    """
    lam = np.linspace(dark, light, n) if reverse else np.linspace(light, dark, n)
    x = lam**gamma
    a = hue * x * (1 - x) / 2
    phi = 2 * np.pi * (start / 3 + rot * lam)
    r = x + a * (-0.14861 * np.cos(phi) + 1.78277 * np.sin(phi))
    g = x + a * (-0.29227 * np.cos(phi) - 0.90649 * np.sin(phi))
    b = x + a * (1.97294 * np.cos(phi))
    return ListedColormap(np.clip(np.column_stack([r, g, b]), 0, 1), name="cubehelix_talk")


ORDER_CMAP = cubehelix_cmap()


def new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas (no pyplot), with constrained layout."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: Path, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``stem.<fmt>`` for each format; returns the paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, format=fmt, dpi=110 if fmt == "png" else 150)
        paths.append(path)
    return paths


def slug(*parts: Any) -> str:
    """A file-name-safe join of ``parts``."""
    text = "_".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "figure"


# ---------------------------------------------------------------------------------------------
# Timelines


def timeline_rects(times: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Rectangles (N, 4, 2) of the timed tasks of :func:`metrics.task_times`, and those rows."""
    t = times[times["row"] >= 0]
    x0 = t["start_s"].to_numpy()
    x1 = t["end_s"].to_numpy()
    y0 = t["row"].to_numpy(dtype="float64") - BAR_HEIGHT / 2
    y1 = y0 + BAR_HEIGHT
    verts = np.empty((len(t), 4, 2))
    verts[:, 0, 0], verts[:, 0, 1] = x0, y0
    verts[:, 1, 0], verts[:, 1, 1] = x0, y1
    verts[:, 2, 0], verts[:, 2, 1] = x1, y1
    verts[:, 3, 0], verts[:, 3, 1] = x1, y0
    return verts, t


def _first(df: pd.DataFrame, col: str, default: Any = "?") -> Any:
    if col in df.columns and len(df) and pd.notna(df[col].iloc[0]):
        return df[col].iloc[0]
    return default


def _workers(n: Any) -> str:
    """``1 worker``, ``4 workers``."""
    return f"{n} worker" + ("" if str(n) == "1" else "s")


def timeline_title(df: pd.DataFrame, metrics: dict[str, Any]) -> str:
    """``scheduler · workload · N workers — makespan X s`` from a trial's records."""
    span = metrics.get("makespan_s", math.nan)
    span_text = f"{span:.2f} s" if np.isfinite(span) else "n/a (no task ran)"
    return (f"{_first(df, 'scheduler')} · {_first(df, 'workload')} · "
            f"{_workers(_first(df, 'n_workers'))} — makespan {span_text}")


def draw_timeline(
    ax: Axes,
    times: pd.DataFrame,
    metrics: dict[str, Any],
    *,
    norm: Normalize | None = None,
    cmap: Colormap = ORDER_CMAP,
    title: str | None = None,
    n_workers: int | None = None,
) -> PolyCollection:
    """Draw one trial's Gantt chart on ``ax`` as a single PolyCollection and return it.

    ``times`` comes from :func:`metrics.task_times`; ``metrics`` from
    :func:`metrics.trial_metrics` (for the bound lines). Workers that got no task get empty rows
    when ``n_workers`` exceeds the labels seen. Tasks whose status is not ``ok`` get a red edge.
    """
    verts, t = timeline_rects(times)
    order = t["order"].to_numpy()
    if norm is None:
        norm = Normalize(0, max(1, int(order.max()) if len(order) else 1))
    faces = cmap(norm(order))
    bad = t["status"].astype(str).to_numpy() != schema.STATUS_OK
    edges = faces.copy()
    edges[bad] = (0.85, 0.1, 0.1, 1.0)
    widths = np.where(bad, 1.2, _seam_width(t, metrics, ax))
    # An (N, 4, 2) array, not a list: matplotlib's fast path (the stubs only say Sequence).
    coll = PolyCollection(cast(Any, verts), facecolors=faces, edgecolors=edges, linewidths=widths,
                          antialiased=True)
    if len(t) > RASTERIZE_ABOVE:
        coll.set_rasterized(True)
    ax.add_collection(coll)
    labels = M.worker_labels(times)
    n_rows = max(len(labels), int(n_workers or 0), 1)
    labels = labels + ["(no task)"] * (n_rows - len(labels))
    _bound_lines(ax, metrics)
    ax.set_xlim(0, _right_edge(metrics) * 1.02)
    ax.set_ylim(n_rows - 0.5, -0.5)  # first worker on top, as a timetable reads
    if n_rows <= MAX_ROW_LABELS:
        ax.set_yticks(range(n_rows), labels, fontsize="small" if n_rows > 16 else "medium")
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Time (s)")
    ax.set_ylabel("Worker")
    ax.set_title(title or "", fontsize="medium")
    return coll


def _seam_width(t: pd.DataFrame, metrics: dict[str, Any], ax: Axes) -> float:
    """Edge width (points) in the bars' own colour when bars are thinner than a pixel.

    Antialiased sub-pixel bars side by side do not add up to a solid fill: they leave light
    seams that look like idle gaps. A thin edge of the face colour closes them; it is only
    used when the median bar is under two pixels wide, where a real gap that small could not
    be seen anyway.
    """
    if t.empty:
        return 0.0
    fig = ax.figure if isinstance(ax.figure, Figure) else ax.figure.figure
    px_per_s = ax.get_position().width * fig.get_figwidth() * fig.dpi / _right_edge(metrics)
    median_px = float(np.median(t["end_s"] - t["start_s"])) * px_per_s
    return 0.5 if median_px < 2 else 0.0


def _right_edge(metrics: dict[str, Any]) -> float:
    """The time axis must show the makespan and both bound lines."""
    right = np.nanmax([metrics.get(k, math.nan) for k in ("makespan_s", "lower_bound_s",
                                                            "greedy_s")] + [0.0])
    return float(right) if right > 0 else 1.0


def _bound_lines(ax: Axes, metrics: dict[str, Any]) -> None:
    lines = (("lower_bound_s", "lower bound", "--"), ("greedy_s", "greedy list schedule", ":"))
    drawn = False
    for key, label, style in lines:
        x = metrics.get(key, math.nan)
        if x is not None and np.isfinite(x):
            ax.axvline(x, color="black", linestyle=style, linewidth=1.2,
                       label=f"{label} {x:.2f} s")
            drawn = True
    if drawn:
        # Outside the axes: inside, it would hide the last bars, where the story is.
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize="small",
                  frameon=False)


def _timeline_height(n_rows: int) -> float:
    return min(max(2.2, 0.28 * n_rows + 1.4), 12.0)


def _colorbar(fig: FigureBase, axes: Any, norm: Normalize, cmap: Colormap) -> None:
    cb = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, pad=0.01, fraction=0.03)
    cb.set_label("Task order within worker")
    cb.ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _prepared(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any], int | None]:
    times = M.task_times(df)
    metrics = M.trial_metrics(df, times=times)
    nw = _first(df, "n_workers", None)
    return times, metrics, int(nw) if nw is not None else None


def _n_rows(times: pd.DataFrame, nw: int | None) -> int:
    return max(len(M.worker_labels(times)), nw or 0, 1)


def timeline_figure(df: pd.DataFrame, *, title: str | None = None) -> Figure:
    """The talk-style timeline of one trial's task records (one bar per timed task)."""
    times, _, nw = _prepared(df)
    fig = new_figure(11.5, _timeline_height(_n_rows(times, nw)))
    draw_trial(fig.add_subplot(), df, title=title)
    return fig


def timeline_size(df: pd.DataFrame) -> tuple[float, float]:
    """(width, height) in inches that :func:`timeline_figure` gives this trial."""
    times, _, nw = _prepared(df)
    return 11.5, _timeline_height(_n_rows(times, nw))


def draw_trial(ax: Axes, df: pd.DataFrame, *, title: str | None = None,
               colorbar: bool = True) -> PolyCollection:
    """Draw one trial's timeline on ``ax`` (any axes, e.g. a notebook's) with its colour bar,
    as :func:`timeline_figure` does; returns the task-bar collection."""
    times, metrics, nw = _prepared(df)
    order = times["order"].to_numpy()
    norm = Normalize(0, max(1, int(order.max()) if len(order) else 1))
    coll = draw_timeline(ax, times, metrics, norm=norm,
                         title=title or timeline_title(df, metrics), n_workers=nw)
    fig = ax.get_figure()
    if colorbar and fig is not None:
        _colorbar(fig, ax, norm, ORDER_CMAP)
    return coll


def paired_timeline_figure(df_a: pd.DataFrame, df_b: pd.DataFrame) -> Figure:
    """Two trials (e.g. Direct vs LoadBalanced) stacked on one shared time axis.

    Both use one colour scale, so the same colour means the same task order in both.
    """
    prepared = [_prepared(df) for df in (df_a, df_b)]
    rows = [_n_rows(times, nw) for times, _, nw in prepared]
    top = max(max(int(t["order"].max()) if len(t) else 0 for t, _, _ in prepared), 1)
    norm = Normalize(0, top)
    fig = new_figure(11.5, min(_timeline_height(rows[0]) + _timeline_height(rows[1]), 16))
    axes = fig.subplots(2, 1, sharex=True, height_ratios=[max(r, 2) for r in rows])
    for ax, df, (times, metrics, nw) in zip(axes, (df_a, df_b), prepared, strict=True):
        draw_timeline(ax, times, metrics, norm=norm, title=timeline_title(df, metrics),
                      n_workers=nw)
    # The axes share x, so each draw reset the limit to its own trial: set it for both.
    axes[0].set_xlim(0, max(_right_edge(m) for _, m, _ in prepared) * 1.02)
    axes[0].set_xlabel("")
    _colorbar(fig, list(axes), norm, ORDER_CMAP)
    return fig


def drawn_collection(fig: Figure) -> list[PolyCollection]:
    """The task-bar collections of a timeline figure (one per axes), e.g. for tests."""
    return [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]


# ---------------------------------------------------------------------------------------------
# Summary figures

_PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3",
            "#8c8c8c", "#ccb974", "#64b5cd")


def scheduler_color(name: str) -> str:
    """A stable colour per scheduler (registry order), the same in every figure."""
    rank, unknown = R.scheduler_rank(name)
    # crc32, not hash(): str hashes change between processes.
    idx = zlib.crc32(unknown.encode()) if unknown else rank
    return _PALETTE[idx % len(_PALETTE)]


def _bar_label(row: pd.Series) -> str:
    variant = row.get("params_variant")
    return f"{row['scheduler']}\n({variant})" if variant else str(row["scheduler"])


def _pick_workers(values: Sequence[int], most: int = 6) -> list[int]:
    vals = sorted(set(int(v) for v in values))
    if len(vals) <= most:
        return vals
    idx = np.unique(np.linspace(0, len(vals) - 1, most).round().astype(int))
    return [vals[i] for i in idx]


def makespan_figure(groups: pd.DataFrame, experiment: str, workload: str) -> Figure:
    """Makespan per scheduler (median, min-max over repeats) against the lower bound and the
    greedy schedule, one panel per worker count (at most six, evenly picked)."""
    g = groups[(groups["experiment"] == experiment) & (groups["workload"] == workload)]
    ns = _pick_workers(g["n_workers"].dropna())
    fig = new_figure(min(3.2 + 2.6 * len(ns), 18), 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(ns), squeeze=False)[0])
    for ax, n in zip(axes, ns, strict=True):
        sub = g[g["n_workers"] == n].reset_index(drop=True)
        x = np.arange(len(sub))
        med = sub["makespan_s_median"].to_numpy(dtype="float64")
        err = np.vstack([med - sub["makespan_s_min"], sub["makespan_s_max"] - med])
        ax.bar(x, med, color=[scheduler_color(s) for s in sub["scheduler"]], width=0.7,
               yerr=np.nan_to_num(err), capsize=3, ecolor="black")
        for key, style, label in (("lower_bound_s_median", "--", "lower bound"),
                                  ("greedy_s_median", ":", "greedy list schedule")):
            ax.hlines(sub[key], x - 0.42, x + 0.42, colors="black", linestyles=style,
                      linewidth=1.4, label=label)
        ax.set_xticks(x, [_bar_label(r) for _, r in sub.iterrows()], rotation=30, ha="right",
                      fontsize="small")
        ax.set_title(_workers(n), fontsize="medium")
        ax.set_ylim(bottom=0)
    axes[0].set_ylabel("Makespan (s)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize="small",
               frameon=False)
    fig.suptitle(f"{experiment} · {workload}: makespan per scheduler (bars: median, "
                 "whiskers: min-max over repeats)", fontsize="medium")
    return fig


def _jitter(n: int, width: float = 0.28) -> np.ndarray:
    # Deterministic spread so the figure is reproducible.
    return np.linspace(-width, width, n) if n > 1 else np.zeros(n)


def tasks_per_worker_figure(
    summary: pd.DataFrame, samples: dict[str, M.TrialSamples], experiment: str, workload: str
) -> Figure:
    """Tasks per worker: every worker of every repeat as a dot, per scheduler; the even share
    (n_tasks / n_workers) as a line. A static split shows one count, a dynamic one a spread."""
    s = summary[(summary["experiment"] == experiment) & (summary["workload"] == workload)]
    ns = _pick_workers(s["n_workers"].dropna())
    fig = new_figure(min(3.2 + 2.6 * len(ns), 18), 4.2)
    axes = np.atleast_1d(fig.subplots(1, len(ns), squeeze=False)[0])
    for ax, n in zip(axes, ns, strict=True):
        sub = s[s["n_workers"] == n]
        keys = R.sort_trials(sub[["scheduler", "params_variant"]].drop_duplicates(),
                             ["scheduler", "params_variant"])
        for i, (_, k) in enumerate(keys.iterrows()):
            trials = sub[(sub["scheduler"] == k["scheduler"])
                         & (sub["params_variant"] == k["params_variant"])]
            counts = np.concatenate([samples[src].tasks_per_worker for src in trials["source"]
                                     if src in samples] or [np.array([])])
            ax.scatter(i + _jitter(len(counts)), counts, s=14, alpha=0.75,
                       color=scheduler_color(k["scheduler"]), edgecolors="none")
        share = pd.to_numeric(sub["n_tasks"]).median() / n if len(sub) else math.nan
        if np.isfinite(share):
            ax.axhline(share, color="black", linestyle="--", linewidth=1,
                       label="even share: tasks / workers")
        ax.set_xticks(range(len(keys)), [_bar_label(r) for _, r in keys.iterrows()],
                      rotation=30, ha="right", fontsize="small")
        ax.set_xlim(-0.6, max(len(keys), 1) - 0.4)
        ax.set_ylim(bottom=0)
        ax.set_title(_workers(n), fontsize="medium")
    axes[0].set_ylabel("Tasks per worker")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", fontsize="small", frameon=False)
    fig.suptitle(f"{experiment} · {workload}: tasks each worker ran (one dot per worker "
                 "and repeat)", fontsize="medium")
    return fig


def _pooled(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.array([], dtype="float64")


def _ecdf(ax: Axes, values: np.ndarray, label: str, color: str) -> None:
    v = np.sort(np.maximum(values[np.isfinite(values)], LOG_FLOOR_S))
    if len(v):
        ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=label, color=color)


def latency_figure(
    summary: pd.DataFrame, samples: dict[str, M.TrialSamples], experiment: str, workload: str
) -> Figure:
    """Distributions (ECDF, log time) of start latency and of gaps between tasks on a worker,
    one line per scheduler at the largest worker count it ran, all repeats pooled."""
    s = summary[(summary["experiment"] == experiment) & (summary["workload"] == workload)]
    fig = new_figure(11, 4.0)
    ax_lat, ax_gap = fig.subplots(1, 2, sharey=True)
    scheds = sorted(s["scheduler"].unique(), key=R.scheduler_rank)
    for sched in scheds:
        sub = s[s["scheduler"] == sched]
        n = int(sub["n_workers"].max())
        srcs = [x for x in sub.loc[sub["n_workers"] == n, "source"] if x in samples]
        label, color = f"{sched} ({n} w)", scheduler_color(sched)
        _ecdf(ax_lat, _pooled([samples[x].start_latency_s for x in srcs]), label, color)
        _ecdf(ax_gap, _pooled([samples[x].gaps_s for x in srcs]), label, color)
    ax_lat.set_xlabel("Start latency: start − submit (s)")
    ax_gap.set_xlabel("Gap between consecutive tasks on a worker (s)")
    ax_lat.set_ylabel("Fraction of tasks")
    for ax in (ax_lat, ax_gap):
        ax.set_xscale("log")
        ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax_lat.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6),
                   fontsize="small", frameon=False)
    fig.suptitle(f"{experiment} · {workload}: start latency and gaps (ECDF; values ≤ "
                 f"{LOG_FLOOR_S:g} s drawn at {LOG_FLOOR_S:g} s)", fontsize="medium")
    return fig


def _sweep_lines(ax: Axes, g: pd.DataFrame, x: str, metric: str) -> None:
    for (sched, variant), sub in g.groupby(["scheduler", "params_variant"], sort=False):
        sub = sub.sort_values(x)
        xs = sub[x].to_numpy(dtype="float64")
        med = sub[f"{metric}_median"].to_numpy(dtype="float64")
        label = f"{sched} ({variant})" if variant else sched
        ax.plot(xs, med, marker="o", label=label, color=scheduler_color(sched))
        ax.fill_between(xs, sub[f"{metric}_min"].to_numpy(dtype="float64"),
                        sub[f"{metric}_max"].to_numpy(dtype="float64"),
                        color=scheduler_color(sched), alpha=0.15, linewidth=0)


def sweep_workers_figure(groups: pd.DataFrame, experiment: str, workload: str) -> Figure:
    """Makespan and efficiency against the worker count, one line per scheduler."""
    g = groups[(groups["experiment"] == experiment) & (groups["workload"] == workload)]
    g = R.sort_trials(g, ["scheduler", "params_variant", "n_workers"])
    fig = new_figure(11, 4.2)
    ax_m, ax_e = fig.subplots(1, 2)
    _sweep_lines(ax_m, g, "n_workers", "makespan_s")
    _sweep_lines(ax_e, g, "n_workers", "efficiency")
    plain = g[g["params_variant"] == ""].groupby("n_workers")[["lower_bound_s_median",
                                                         "greedy_s_median"]].median()
    ax_m.plot(plain.index, plain["lower_bound_s_median"], "k--", label="lower bound")
    ax_m.plot(plain.index, plain["greedy_s_median"], "k:", label="greedy list schedule")
    ax_m.set_ylabel("Makespan (s)")
    ax_e.set_ylabel("Efficiency: busy / (workers × makespan)")
    ax_e.set_ylim(0, 1.05)
    for ax in (ax_m, ax_e):
        ax.set_xlabel("Workers")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    ax_m.legend(fontsize="small")
    fig.suptitle(f"{experiment} · {workload}: scaling with the number of workers "
                 "(median, band: min-max over repeats)", fontsize="medium")
    return fig


def sweep_tasklen_figure(groups: pd.DataFrame, experiment: str, shape: str,
                         n_workers: int) -> Figure:
    """Efficiency and makespan / lower bound against the mean task length, across the
    workloads of one shape, one line per scheduler."""
    g = groups[(groups["experiment"] == experiment) & (groups["shape"] == shape)
               & (groups["n_workers"] == n_workers)].copy()
    for s in ("median", "min", "max"):
        g[f"slowdown_{s}"] = g[f"makespan_s_{s}"] / g["lower_bound_s_median"]
    g = R.sort_trials(g, ["scheduler", "params_variant", "task_s_mean"])
    fig = new_figure(11, 4.2)
    ax_e, ax_s = fig.subplots(1, 2)
    _sweep_lines(ax_e, g, "task_s_mean", "efficiency")
    _sweep_lines(ax_s, g, "task_s_mean", "slowdown")
    ax_e.set_ylabel("Efficiency: busy / (workers × makespan)")
    ax_e.set_ylim(0, 1.05)
    ax_s.set_ylabel("Makespan / lower bound")
    ax_s.axhline(1.0, color="black", linestyle="--", linewidth=1)
    for ax in (ax_e, ax_s):
        ax.set_xscale("log")
        ax.set_xlabel("Mean task length (s)")
        ax.grid(True, alpha=0.3)
    ax_e.legend(fontsize="small")
    fig.suptitle(f"{experiment} · shape {shape} · {_workers(n_workers)}: effect of task length",
                 fontsize="medium")
    return fig


# ---------------------------------------------------------------------------------------------
# Which figures to draw for a results directory: the registry

#: Report sections a figure belongs to (the report places figures by section, not by kind).
SECTION_WORKLOAD = "workload"  # beside the table of one (experiment, workload)
SECTION_TASKLEN = "tasklen"  # task length sweeps, across the workloads of a shape
SECTION_PAIRED = "paired"  # paired timelines
SECTION_TIMELINE = "timeline"  # one trial's timeline


@dataclass
class DrawnFigure:
    """One figure written to disk, for the report."""

    kind: str  # the registry name: makespan, tasks_per_worker, ..., timeline, paired
    title: str
    files: list[Path]
    experiment: str = ""
    workload: str = ""
    trials: list[str] = field(default_factory=list)
    section: str = SECTION_WORKLOAD
    #: The Perfetto / Chrome trace file of a timeline's trials (None for other figures).
    trace: Path | None = None


@dataclass
class FigureSet:
    """What :func:`draw_all` drew, what it left out on purpose, and what failed."""

    figures: list[DrawnFigure] = field(default_factory=list)
    not_drawn: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def of_kind(self, *kinds: str) -> list[DrawnFigure]:
        """The figures of the given kinds, in drawing order."""
        return [f for f in self.figures if f.kind in kinds]

    def in_section(self, section: str, experiment: str | None = None,
                   workload: str | None = None) -> list[DrawnFigure]:
        """The figures of a report section (optionally of one experiment and workload), in
        drawing order."""
        return [f for f in self.figures if f.section == section
                and (experiment is None or f.experiment == experiment)
                and (workload is None or f.workload == workload)]


@dataclass(frozen=True)
class WorkloadFigure:
    """A summary figure drawn once per (experiment, workload).

    ``draw(results, groups, experiment, workload)`` makes the figure; ``applies(g)`` says
    whether it is worth drawing for that pair's rows ``g`` of :func:`results.group_summary`.
    """

    kind: str
    title: str
    draw: Callable[[R.Results, pd.DataFrame, str, str], Figure]
    applies: Callable[[pd.DataFrame], bool] = field(default=lambda g: True)  # always


def _makespan(results: R.Results, groups: pd.DataFrame, exp: str, wl: str) -> Figure:
    return makespan_figure(groups, exp, wl)


def _tasks_per_worker(results: R.Results, groups: pd.DataFrame, exp: str, wl: str) -> Figure:
    return tasks_per_worker_figure(results.summary, results.samples, exp, wl)


def _latency(results: R.Results, groups: pd.DataFrame, exp: str, wl: str) -> Figure:
    return latency_figure(results.summary, results.samples, exp, wl)


def _sweep_workers(results: R.Results, groups: pd.DataFrame, exp: str, wl: str) -> Figure:
    return sweep_workers_figure(groups, exp, wl)


def _several_worker_counts(g: pd.DataFrame) -> bool:
    return bool(g.groupby("scheduler")["n_workers"].nunique().max() > 1)


#: The per-(experiment, workload) figures, in the order they are drawn and shown.
WORKLOAD_FIGURES: tuple[WorkloadFigure, ...] = (
    WorkloadFigure("makespan", "Makespan per scheduler", _makespan),
    WorkloadFigure("tasks_per_worker", "Tasks per worker", _tasks_per_worker),
    WorkloadFigure("latency", "Start latency and gaps", _latency),
    WorkloadFigure("sweep_workers", "Scaling with workers", _sweep_workers,
                   _several_worker_counts),
)


#: A sweep of equal-task (``uniform``) workloads of at least this many lengths, such as the METG
#: study, is shown by its sweep figure alone.
MIN_SWEEP_POINTS = 3


def _is_tasklen_sweep(g: pd.DataFrame) -> bool:
    """Whether one (experiment, shape, workers) group is a sweep of task lengths: several
    workloads whose tasks differ in mean length."""
    return bool(g["workload"].nunique() > 1 and g["task_s_mean"].round(12).nunique() > 1)


def _drawable(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[pd.to_numeric(summary["makespan_s"], errors="coerce").notna()]


def select_timelines(
    summary: pd.DataFrame, max_timelines: int = DEFAULT_MAX_TIMELINES
) -> tuple[pd.DataFrame, int]:
    """First repeat of each (experiment, workload, n_workers, params_variant, scheduler) that
    has timed tasks, capped at ``max_timelines``; returns the rows and how many were left out.

    Under the cap, workloads take turns (so each gets some), largest worker count first
    (where balancing matters most); the result is in report order.
    """
    if summary.empty:
        return summary, 0
    d = R.sort_trials(_drawable(summary), [*R.GROUP_KEYS, "repeat", "trial_id"])
    firsts = d.drop_duplicates(list(R.GROUP_KEYS), keep="first").copy()
    firsts["_pos"] = range(len(firsts))
    by_n = firsts.sort_values(["n_workers", "_pos"], ascending=[False, True], kind="stable")
    by_n["_turn"] = by_n.groupby(["experiment", "workload"], sort=False).cumcount()
    chosen = by_n.sort_values(["_turn", "_pos"], kind="stable").head(max(max_timelines, 0))
    chosen = chosen.sort_values("_pos").drop(columns=["_pos", "_turn"])
    return chosen, max(0, len(firsts) - len(chosen))


def select_pairs(
    summary: pd.DataFrame, pairs: Sequence[tuple[str, str]] = PREFERRED_PAIRS
) -> list[tuple[pd.Series, pd.Series]]:
    """For each (experiment, workload): the first scheduler pair of ``pairs`` that both ran
    it, at the largest worker count they share (the talk used 12 engines), first repeat."""
    out = []
    d = R.sort_trials(_drawable(summary), [*R.GROUP_KEYS, "repeat", "trial_id"])
    for _, g in d.groupby(["experiment", "workload"], sort=False):
        for a, b in pairs:
            ga, gb = g[g["scheduler"] == a], g[g["scheduler"] == b]
            common = set(zip(ga["n_workers"], ga["params_variant"], strict=True)) & set(
                zip(gb["n_workers"], gb["params_variant"], strict=True))
            if not common:
                continue
            n, variant = max(common, key=lambda nv: (nv[0], nv[1] == ""))

            out.append((_first_at(ga, n, variant), _first_at(gb, n, variant)))
            break
    return out


def _first_at(trials: pd.DataFrame, n: int, variant: str) -> pd.Series:
    return trials[(trials["n_workers"] == n) & (trials["params_variant"] == variant)].iloc[0]


def _attempt(fs: FigureSet, what: str, fn: Callable[[], DrawnFigure | None]) -> None:
    fig, error = _outcome(what, fn)
    if error is not None:
        fs.errors.append(error)
    elif fig is not None:
        fs.figures.append(fig)


def _outcome(what: str, fn: Callable[[], DrawnFigure | None]
             ) -> tuple[DrawnFigure | None, str | None]:
    """(the figure drawn or None, or the error text)."""
    try:
        return fn(), None
    except Exception as exc:  # one bad figure must not sink the others
        return None, f"{what}: {type(exc).__name__}: {exc}"


#: From this many figures on, :func:`draw_all` draws in several processes (a worker process
#: costs about a second to start: imports, and the results sent to it).
MIN_PARALLEL_FIGURES = 12

#: One figure to draw: (what, for an error message; kind; arguments). Plain data, so that a
#: worker process can be sent it.
_Job = tuple[str, str, tuple[Any, ...]]


def draw_all(
    results: R.Results,
    out_dir: Path,
    *,
    max_timelines: int = DEFAULT_MAX_TIMELINES,
    pairs: Sequence[tuple[str, str]] = PREFERRED_PAIRS,
    formats: Sequence[str] = FORMATS,
    groups: pd.DataFrame | None = None,
    n_jobs: int | None = None,
    kinds: Sequence[str] | None = None,
) -> FigureSet:
    """Draw the summary figures of :data:`WORKLOAD_FIGURES`, the task length sweeps, a
    selection of timelines and the paired timelines. ``groups``: the
    :func:`results.group_summary` of ``results`` if the caller has it.

    ``n_jobs`` processes draw (this one among them; default :func:`default_jobs`, or 1 for
    fewer than :data:`MIN_PARALLEL_FIGURES` figures); the figures, their files and their order
    are the same whatever it is. ``kinds``: only these of :data:`WORKLOAD_FIGURES` (default:
    all); a quick report draws the makespan figures alone.
    """
    fs = FigureSet()
    summary = results.summary
    if summary.empty:
        return fs
    out_dir = Path(out_dir)
    if groups is None:
        groups = R.group_summary(summary)
    jobs: list[_Job] = []
    sweeps = [(key, g) for key, g in groups.groupby(["experiment", "shape", "n_workers"],
                                                    sort=False) if _is_tasklen_sweep(g)]
    # A point of a task-length sweep (one of twenty granularity workloads, say) is shown by its
    # sweep figure; three figures per point would make most of the report and its time.
    points = {(exp, wl) for (exp, shape, _), g in sweeps
              if shape == "uniform" and g["workload"].nunique() >= MIN_SWEEP_POINTS
              for wl in g["workload"].unique()}
    # The payload and arrivals studies have figures of their own (workload_report).
    from .workload_report import STUDIES

    points |= {(exp, wl) for exp, wl in zip(groups["experiment"], groups["workload"],
                                             strict=True) if exp in STUDIES}
    if kinds is not None:
        unknown = sorted(set(kinds) - {s.kind for s in WORKLOAD_FIGURES})
        if unknown:
            raise ValueError(f"unknown figure kind {unknown[0]!r}; allowed: "
                             + ", ".join(s.kind for s in WORKLOAD_FIGURES))
        skipped = [s.kind for s in WORKLOAD_FIGURES if s.kind not in kinds]
        if skipped:
            fs.not_drawn.append(f"per-workload {', '.join(skipped)} figures: not drawn "
                                "(--figure-kinds)")
    for (exp, wl), g in groups.groupby(["experiment", "workload"], sort=False):
        if (exp, wl) in points:
            continue
        for i, spec in enumerate(WORKLOAD_FIGURES):
            if kinds is not None and spec.kind not in kinds:
                continue
            if spec.applies(g):
                jobs.append((f"{spec.kind} {exp}/{wl}", "workload", (i, str(exp), str(wl))))
    for (exp, shape, n), _g in sweeps:
        jobs.append((f"sweep_tasklen {exp}/{shape}/w{n}", "tasklen",
                     (str(exp), str(shape), int(n))))
    in_sweep = [(e, w) in points for e, w in zip(summary["experiment"], summary["workload"],
                                                  strict=True)]
    chosen, left_out = select_timelines(summary[[not x for x in in_sweep]], max_timelines)
    for _, row in chosen.iterrows():
        jobs.append((f"timeline {row['trial_id']}", "timeline", (row,)))
    if left_out:
        fs.not_drawn.append(f"{left_out} more (experiment, workload, workers, scheduler) "
                            f"groups have no timeline: capped at {max_timelines}")
    no_time = summary[pd.to_numeric(summary["makespan_s"], errors="coerce").isna()]
    for tid in no_time["trial_id"]:
        fs.not_drawn.append(f"{tid}: no timeline, no task has start and end stamps")
    for a, b in select_pairs(summary, pairs):
        if (a["experiment"], a["workload"]) in points:
            continue
        jobs.append((f"paired {a['trial_id']} vs {b['trial_id']}", "paired", (a, b)))
    if n_jobs is None:
        n_jobs = default_jobs() if len(jobs) >= MIN_PARALLEL_FIGURES else 1
    for fig, error in _draw_jobs(results, groups, out_dir, tuple(formats), jobs, n_jobs):
        if error is not None:
            fs.errors.append(error)
        elif fig is not None:
            fs.figures.append(fig)
    return fs


def _draw_job(results: R.Results, groups: pd.DataFrame, out_dir: Path,
              formats: Sequence[str], job: _Job) -> tuple[DrawnFigure | None, str | None]:
    """Draw one job's figure: (the figure, or the error text)."""
    what, kind, args = job
    fn: Callable[[], DrawnFigure]
    if kind == "workload":
        i, exp, wl = args
        fn = partial(_workload_figure, WORKLOAD_FIGURES[i], results, groups, exp, wl, out_dir,
                     formats)
    elif kind == "tasklen":
        exp, shape, n = args
        fn = partial(_tasklen_figure, groups, exp, shape, n, out_dir, formats)
    elif kind == "timeline":
        fn = partial(_one_timeline, results, args[0], out_dir, formats)
    else:
        fn = partial(_one_pair, results, args[0], args[1], out_dir, formats)
    return _outcome(what, fn)


#: What a worker process draws with: set once by :func:`_worker_start`.
_WORKER: dict[str, Any] = {}


def _worker_start(results: R.Results, groups: pd.DataFrame, out_dir: Path,
                  formats: tuple[str, ...]) -> None:
    _WORKER.update(results=results, groups=groups, out_dir=out_dir, formats=formats)


def _worker_draw(job: _Job) -> tuple[DrawnFigure | None, str | None]:
    return _draw_job(_WORKER["results"], _WORKER["groups"], _WORKER["out_dir"],
                     _WORKER["formats"], job)


def _draw_jobs(results: R.Results, groups: pd.DataFrame, out_dir: Path,
               formats: tuple[str, ...], jobs: list[_Job], n_jobs: int
               ) -> list[tuple[DrawnFigure | None, str | None]]:
    """Each job's outcome, in job order, drawn by ``n_jobs`` processes (:mod:`.parallel`)."""
    initargs = (_for_workers(results, jobs), groups, out_dir, formats) if n_jobs > 1 else ()
    return run_ordered(partial(_draw_job, results, groups, out_dir, formats), jobs, n_jobs,
                       worker=_worker_draw, initializer=_worker_start, initargs=initargs)


def _for_workers(results: R.Results, jobs: list[_Job]) -> R.Results:
    """``results`` without the records and task times the jobs do not read (the timelines
    read a few trials'): less to send to each worker."""
    sources = {str(r["source"]) for _, kind, args in jobs if kind in ("timeline", "paired")
               for r in args}
    return R.Results(results.results_dir, results.summary, results.samples,
                     results.environments, results.broken, results.n_files,
                     {k: v for k, v in results.kept.items() if k in sources})


def _save(fig: Figure, stem: Path, formats: Sequence[str], record: DrawnFigure) -> DrawnFigure:
    record.files = save_figure(fig, stem, formats)
    return record


def _workload_figure(spec: WorkloadFigure, results: R.Results, groups: pd.DataFrame, exp: str,
                     wl: str, out_dir: Path, formats: Sequence[str]) -> DrawnFigure:
    return _save(spec.draw(results, groups, exp, wl), out_dir / slug(spec.kind, exp, wl),
                 formats, DrawnFigure(spec.kind, f"{spec.title}: {exp} · {wl}", [], exp, wl,
                                      section=SECTION_WORKLOAD))


def _tasklen_figure(groups: pd.DataFrame, exp: str, shape: str, n: int, out_dir: Path,
                    formats: Sequence[str]) -> DrawnFigure:
    return _save(sweep_tasklen_figure(groups, exp, shape, n),
                 out_dir / slug("sweep_tasklen", exp, shape, f"w{n}"), formats,
                 DrawnFigure("sweep_tasklen", f"Task length: {exp} · {shape} · {_workers(n)}",
                             [], exp, shape, section=SECTION_TASKLEN))


def write_trace(trials: Sequence[pd.DataFrame], stem: Path) -> Path:
    """The Perfetto / Chrome trace of a timeline's trials beside its image, ``stem.trace.json``
    (:mod:`.trace`; trials overlaid from 0, as the figure draws them)."""
    from .trace import TRACE_SUFFIX, trace_document

    path = stem.with_name(stem.name + TRACE_SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Compact and without NaN (not JSON): Perfetto and chrome://tracing read it as is.
    path.write_text(json.dumps(trace_document(trials), separators=(",", ":"), allow_nan=False))
    return path


def _one_timeline(results: R.Results, row: pd.Series, out_dir: Path,
                  formats: Sequence[str]) -> DrawnFigure:
    df = results.records(row["source"])
    fig = timeline_figure(df)
    variant = f" ({row['params_variant']})" if row["params_variant"] else ""
    title = (f"{row['scheduler']} · {row['workload']} · {_workers(row['n_workers'])}{variant}"
             f" · repeat {row['repeat']}")
    stem = out_dir / slug("timeline", row["experiment"], row["trial_id"])
    return _save(fig, stem, formats,
                 DrawnFigure("timeline", title, [], row["experiment"], row["workload"],
                             [row["trial_id"]], section=SECTION_TIMELINE,
                             trace=write_trace([df], stem)))


def _one_pair(results: R.Results, a: pd.Series, b: pd.Series, out_dir: Path,
              formats: Sequence[str]) -> DrawnFigure:
    dfs = [results.records(a["source"]), results.records(b["source"])]
    fig = paired_timeline_figure(*dfs)
    title = (f"{a['scheduler']} vs {b['scheduler']} · {a['workload']} · "
             f"{_workers(a['n_workers'])}")
    stem = out_dir / slug("paired", a["experiment"], a["workload"], f"w{a['n_workers']}",
                          a["scheduler"], "vs", b["scheduler"])
    return _save(fig, stem, formats, DrawnFigure("paired", title, [], a["experiment"],
                                                 a["workload"], [a["trial_id"], b["trial_id"]],
                                                 section=SECTION_PAIRED,
                                                 trace=write_trace(dfs, stem)))


__all__ = [
    "FORMATS", "ORDER_CMAP", "PREFERRED_PAIRS", "SECTION_PAIRED", "SECTION_TASKLEN",
    "SECTION_TIMELINE", "SECTION_WORKLOAD", "WORKLOAD_FIGURES", "DrawnFigure", "FigureSet",
    "WorkloadFigure", "cubehelix_cmap", "draw_all", "draw_timeline", "draw_trial",
    "drawn_collection", "latency_figure", "makespan_figure", "new_figure",
    "paired_timeline_figure", "save_figure", "scheduler_color", "select_pairs",
    "select_timelines", "slug", "sweep_tasklen_figure", "sweep_workers_figure",
    "tasks_per_worker_figure", "timeline_figure", "timeline_rects", "timeline_size",
    "timeline_title", "write_trace",
]
