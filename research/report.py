"""The report of a results directory: ``index.html``, ``report.md``, ``summary.csv``,
``claims.csv`` (when claims are given) and ``figures/``.

The HTML is self-contained (inline CSS, no JavaScript, figures as files beside it), so it opens
offline. Every trial the directory holds is accounted for: analysed, failed (and why), or
broken (and why).

CLAIMS HOOK: a claims table (columns :data:`CLAIM_COLUMNS`, produced by
``analysis/claims.py``'s ``evaluate(summary_df, results_dir)``) goes at the top of the report
when passed as ``build_report(..., claims=df)``.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import figures as F
from . import metrics as M

CLAIM_COLUMNS: tuple[str, ...] = ("claim", "talk_value", "our_value", "tolerance", "verdict",
                                  "note")
#: Metrics shown in the per-group table as "median [min–max]".
#: (metric, column label, scale): gaps and latencies read better in milliseconds.
GROUP_TABLE_METRICS: tuple[tuple[str, str, float], ...] = (
    ("makespan_s", "makespan (s)", 1.0), ("wall_s", "wall (s)", 1.0),
    ("efficiency", "efficiency", 1.0), ("mean_gap_s", "mean gap (ms)", 1e3),
    ("start_latency_median_s", "start latency (ms)", 1e3),
    ("return_latency_median_s", "return latency (ms)", 1e3),
)
TRIAL_TABLE_COLUMNS: tuple[str, ...] = (
    "experiment", "trial_id", "scheduler", "workload", "n_workers", "params_variant", "repeat",
    "n_tasks", "makespan_s", "wall_s", "lower_bound_s", "greedy_s", "efficiency",
    "tasks_per_worker_min", "tasks_per_worker_max", "workers_used", "mean_gap_s", "max_gap_s",
    "start_latency_median_s", "return_latency_median_s", "n_errors", "trial_status", "note",
)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
.pass { background: #dff0d8 !important; } .fail { background: #f2dede !important; }
.warn { background: #fcf8e3 !important; }
.note { color: #555; font-size: .9em; }
.box { border-left: 4px solid #c44e52; background: #fdf3f3; padding: .4em .8em; }
.ok { border-left: 4px solid #55a868; background: #f3faf4; padding: .4em .8em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #444; }
details { margin: .5em 0; } summary { cursor: pointer; font-weight: 600; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    index_html: Path
    markdown: Path
    summary_csv: Path
    figures: F.FigureSet
    results: M.Results


# ---------------------------------------------------------------------------------------------
# Formatting


def fmt(x: Any) -> str:
    """A table cell: 4 significant digits for floats, '' for missing, ints as ints."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return ""
    if isinstance(x, bool | np.bool_):
        return "yes" if x else ""
    if isinstance(x, float | np.floating):
        if x == 0:
            return "0"
        return f"{x:.4g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.3g}"
    return str(x)


def _range(med: float, lo: float, hi: float) -> str:
    if not np.isfinite(med):
        return ""
    if np.isclose(lo, hi, rtol=1e-9, atol=0):
        return fmt(med)
    return f"{fmt(med)} [{fmt(lo)}–{fmt(hi)}]"


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def html_table(df: pd.DataFrame, cell_class: Callable[[str, Any], str] | None = None) -> str:
    """An escaped HTML table; ``cell_class(column, value)`` may add a CSS class to a cell."""
    if df.empty:
        return "<p class='note'>(none)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for col, v in zip(df.columns, row, strict=True):
            cls = ["num"] if _is_num(v) else []
            if cell_class:
                cls.append(cell_class(str(col), v))
            attr = f" class='{' '.join(c for c in cls if c)}'" if any(cls) else ""
            cells.append(f"<td{attr}>{html.escape(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def md_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table."""
    if df.empty:
        return "(none)\n"

    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in df.columns) + " |",
             "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Tables


def group_table(groups: pd.DataFrame) -> pd.DataFrame:
    """Per (experiment, workload, n_workers, params_variant, scheduler): medians with min–max."""
    rows = []
    for _, g in groups.iterrows():
        row = {k: g[k] for k in M.GROUP_KEYS}
        row["trials"] = f"{g['n_trials']}" + (f" ({g['n_failed']} failed)" if g["n_failed"]
                                               else "")
        row["lower bound (s)"] = fmt(g["lower_bound_s_median"])
        row["greedy (s)"] = fmt(g["greedy_s_median"])
        for m, label, scale in GROUP_TABLE_METRICS:
            row[label] = _range(*(scale * g[f"{m}_{s}"] for s in ("median", "min", "max")))
        lo, hi = g["tasks_per_worker_min_min"], g["tasks_per_worker_max_max"]
        row["tasks/worker"] = ("" if not np.isfinite(lo) else fmt(int(lo)) if lo == hi
                               else f"{int(lo)}–{int(hi)}")
        row["errors"] = fmt(g["n_errors_max"]) if g["n_errors_max"] else ""
        rows.append(row)
    return pd.DataFrame(rows)


def problems_tables(results: M.Results) -> dict[str, pd.DataFrame]:
    """Broken files, failed trials, trials with task errors, and other notes."""
    s = results.summary
    broken = pd.DataFrame([{"file": str(b.path), "reason": b.reason} for b in results.broken],
                          columns=["file", "reason"])
    cols = ["trial_id", "scheduler", "workload", "n_workers", "repeat", "trial_error",
            "n_errors", "first_error", "note"]
    if s.empty:
        empty = pd.DataFrame(columns=cols)
        return {"broken": broken, "failed": empty, "errors": empty, "notes": empty}
    failed = s[s["trial_status"].astype(str).eq("failed")]
    errors = s[~s.index.isin(failed.index) & (pd.to_numeric(s["n_errors"]) > 0)]
    noted = s[~s.index.isin(failed.index) & ~s.index.isin(errors.index)
              & ((s["note"].astype(str) != "") | s["oversubscribed"].astype(bool))].copy()
    noted["note"] = [
        "; ".join(x for x in (n, "oversubscribed: more CPU-bound workers than cores" if o else "")
                  if x) for n, o in zip(noted["note"], noted["oversubscribed"], strict=True)]
    return {"broken": broken, "failed": failed[cols], "errors": errors[cols],
            "notes": noted[["trial_id", "scheduler", "workload", "n_workers", "repeat", "note"]]}


def claims_table(claims: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The claims as given (the evaluator chooses the column order), and a problem text if
    required columns are missing."""
    missing = [c for c in CLAIM_COLUMNS if c not in claims.columns]
    problem = f"claims table lacks column(s): {', '.join(missing)}" if missing else ""
    return claims.reset_index(drop=True), problem


def _verdict_class(col: str, v: Any) -> str:
    if col != "verdict":
        return ""
    text = str(v).strip().lower()
    if text.startswith("not run"):
        return "warn"  # no data: not a verdict either way
    if text.startswith(("pass", "ok", "yes", "agree", "reproduced", "match")):
        return "pass"
    if text.startswith(("fail", "disagree", "not reproduced", "no")):
        return "fail"
    return "warn"


# ---------------------------------------------------------------------------------------------
# Building


def _rel(path: Path, out_dir: Path) -> str:
    return path.relative_to(out_dir).as_posix()


def _png(fig: F.DrawnFigure) -> Path | None:
    return next((p for p in fig.files if p.suffix == ".png"), None)


def _html_figure(fig: F.DrawnFigure, out_dir: Path) -> str:
    png = _png(fig)
    if png is None:
        return ""
    links = " · ".join(f"<a href='{html.escape(_rel(p, out_dir))}'>{p.suffix[1:].upper()}</a>"
                       for p in fig.files)
    trials = f" — trials: {', '.join(fig.trials)}" if fig.trials else ""
    return (f"<figure><img src='{html.escape(_rel(png, out_dir))}' alt='{html.escape(fig.title)}'"
            f" loading='lazy'><figcaption>{html.escape(fig.title + trials)} ({links})"
            "</figcaption></figure>")


def _md_figure(fig: F.DrawnFigure, out_dir: Path) -> str:
    png = _png(fig)
    if png is None:
        return ""
    trials = f" (trials: {', '.join(fig.trials)})" if fig.trials else ""
    return f"![{fig.title}]({_rel(png, out_dir)})\n\n*{fig.title}{trials}*\n"


class _Doc:
    """Writes the same content as HTML and as markdown, section by section."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.html: list[str] = []
        self.md: list[str] = []

    def heading(self, text: str, level: int = 2, anchor: str = "") -> None:
        ident = f" id='{anchor}'" if anchor else ""
        self.html.append(f"<h{level}{ident}>{html.escape(text)}</h{level}>")
        self.md.append(f"{'#' * level} {text}\n")

    def para(self, text: str, cls: str = "") -> None:
        attr = f" class='{cls}'" if cls else ""
        self.html.append(f"<p{attr}>{html.escape(text)}</p>")
        self.md.append(f"{'> ' if cls == 'box' else ''}{text}\n")

    def items(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        self.html.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines)
                         + "</ul>")
        self.md.append("\n".join(f"- {x}" for x in lines) + "\n")

    def table(self, df: pd.DataFrame, *, cell_class: Callable[[str, Any], str] | None = None,
              folded: str = "") -> None:
        tab = html_table(df, cell_class)
        self.html.append(f"<details><summary>{html.escape(folded)}</summary>{tab}</details>"
                         if folded else tab)
        self.md.append(md_table(df))

    def figures(self, figs: Sequence[F.DrawnFigure]) -> None:
        for fig in figs:
            self.html.append(_html_figure(fig, self.out_dir))
            self.md.append(_md_figure(fig, self.out_dir))

    def raw_html(self, text: str) -> None:
        self.html.append(text)


def _overview(doc: _Doc, results: M.Results, results_dir: Path) -> None:
    s = results.summary
    n_failed = int(s["trial_status"].astype(str).eq("failed").sum()) if len(s) else 0
    doc.para(f"Results directory: {results_dir} — {results.n_files} record file(s), "
             f"{len(s)} trial(s) analysed, {n_failed} failed trial(s), "
             f"{len(results.broken)} file(s) or directories that could not be analysed. "
             f"Generated {_dt.datetime.now().isoformat(timespec='seconds')}.")
    if len(s):
        exps = s.groupby("experiment").agg(trials=("trial_id", "size"),
                                           schedulers=("scheduler", lambda x: ", ".join(
                                               sorted(set(x), key=M.scheduler_rank))),
                                           workloads=("workload", lambda x: ", ".join(
                                               sorted(set(x))))).reset_index()
        doc.table(exps)
    doc.para("Definitions: makespan = last in-task end − first in-task start; wall = last "
             "receive − first submit (client side); busy = Σ(end − start); lower bound = "
             "max(Σ planned / workers, max planned); greedy = list scheduling of the planned "
             "durations in task order (what an ideal dynamic scheduler achieves); efficiency = "
             "busy / (workers × makespan); gap = idle time between consecutive tasks on one "
             "worker; start latency = start − submit; return latency = receive − end. Medians "
             "over repeats with [min–max]; failed trials are left out of those statistics.",
             "note")


def _prime_table(doc: _Doc, results_dir: Path) -> None:
    from .claims import prime_speedups

    table = prime_speedups(results_dir)
    if table is None:
        return
    doc.heading("The talk's prime benchmark, by its method", 3)
    doc.para("timeit best of repeats, pool made inside each timed call; the talk ran on 12 "
             "cores, this run on the cores shown.", "note")
    doc.table(table)


def _claims(doc: _Doc, claims: pd.DataFrame | None, claims_error: str | None) -> None:
    # CLAIMS HOOK: this section is the top of the report on purpose.
    doc.raw_html("<!-- CLAIMS HOOK: build_report(..., claims=DataFrame[claim, talk_value, "
                 "our_value, tolerance, verdict, note]) renders here -->")
    doc.heading("Claims from the talk", anchor="claims")
    if claims_error:
        doc.para(f"The claims could not be evaluated: {claims_error}", "box")
    if claims is None:
        if not claims_error:
            doc.para("No claims table (analysis/claims.py is not present or returned nothing).",
                     "note")
        return
    table, problem = claims_table(claims)
    if problem:
        doc.para(problem, "box")
    doc.table(table, cell_class=_verdict_class)


def _problems(doc: _Doc, results: M.Results) -> None:
    doc.heading("Failures and problems", anchor="problems")
    p = problems_tables(results)
    if all(t.empty for t in p.values()):
        doc.para("Every file was read and every trial completed without task errors.", "ok")
        return
    for key, title in (("broken", "Files that could not be analysed"),
                       ("failed", "Failed trials (the trial did not complete)"),
                       ("errors", "Trials with task errors"),
                       ("notes", "Notes on trials")):
        if not p[key].empty:
            doc.heading(f"{title} ({len(p[key])})", 3)
            doc.table(p[key])


def _results_section(doc: _Doc, groups: pd.DataFrame, fs: F.FigureSet) -> None:
    doc.heading("Results per scheduler", anchor="results")
    for (exp, wl), g in groups.groupby(["experiment", "workload"], sort=False):
        doc.heading(f"{exp} · {wl}", 3)
        doc.table(group_table(g).drop(columns=["experiment", "workload"]))
        doc.figures([f for f in fs.figures if f.kind in ("makespan", "tasks_per_worker",
                                                         "latency", "sweep_workers")
                     and f.experiment == exp and f.workload == wl])
    tasklen = fs.of_kind("sweep_tasklen")
    if tasklen:
        doc.heading("Task length sweeps", 3)
        doc.figures(tasklen)


def _timelines(doc: _Doc, fs: F.FigureSet, max_timelines: int) -> None:
    doc.heading("Timelines", anchor="timelines")
    doc.para("One row per worker, one bar per task from its in-task start to its end, time from "
             "the trial's first start; bar colour = the task's order within its worker (as in "
             "the talk); dashed line = lower bound, dotted = greedy list schedule; a red edge "
             "marks a task whose status is error.", "note")
    paired = fs.of_kind("paired")
    if paired:
        doc.heading("Paired timelines (same time axis)", 3)
        doc.figures(paired)
    single = fs.of_kind("timeline")
    doc.heading(f"Per trial ({len(single)} drawn)", 3)
    doc.para(f"Drawn: the first repeat of each (experiment, workload, workers, scheduler), at "
             f"most {max_timelines}; under the cap workloads take turns, largest worker count "
             "first (--max-timelines raises the cap). "
             "`python analysis/trace.py FILE` exports any trial for Perfetto.", "note")
    doc.items([f"{f.title}: {', '.join(f.trials)}" for f in single])
    if fs.not_drawn:
        doc.para("Not drawn:")
        doc.items(fs.not_drawn)
    doc.figures(single)


def _environment(doc: _Doc, results: M.Results) -> None:
    doc.heading("Environment", anchor="environment")
    doc.para("Where each result came from, from the metadata stored in each file (one row per "
             "distinct machine and software setup).", "note")
    doc.table(results.environments)


def _write_html(doc: _Doc, path: Path, title: str) -> None:
    nav = " · ".join(f"<a href='#{a}'>{t}</a>" for a, t in (
        ("claims", "Claims"), ("problems", "Failures"), ("results", "Results"),
        ("timelines", "Timelines"), ("environment", "Environment"), ("trials", "All trials")))
    path.write_text(
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{nav}</p>" + "\n".join(doc.html) + "</body></html>\n",
        encoding="utf-8")


def build_report(
    results_dir: Path | str,
    out_dir: Path | str,
    claims: pd.DataFrame | None = None,
    *,
    claims_error: str | None = None,
    results: M.Results | None = None,
    max_timelines: int = F.DEFAULT_MAX_TIMELINES,
    pairs: Sequence[tuple[str, str]] = F.PREFERRED_PAIRS,
) -> Report:
    """Analyse ``results_dir`` and write the report into ``out_dir``.

    ``claims`` (columns :data:`CLAIM_COLUMNS`) is shown at the top and written to
    ``claims.csv``; ``claims_error`` explains why it is missing. Pass ``results`` from
    :func:`metrics.load_results` to avoid reading the files twice. Never raises for bad
    result files: they are listed in the report.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if results is None:
        results = M.load_results(results_dir)
    summary_csv = out_dir / "summary.csv"
    M.summary_for_csv(results.summary).to_csv(summary_csv, index=False)
    if claims is not None:
        claims.to_csv(out_dir / "claims.csv", index=False)
    fs = F.draw_all(results, out_dir / "figures", max_timelines=max_timelines, pairs=pairs)
    groups = M.group_summary(results.summary)

    doc = _Doc(out_dir)
    _claims(doc, claims, claims_error)
    _prime_table(doc, Path(results_dir))
    doc.heading("Overview")
    _overview(doc, results, results_dir)
    _problems(doc, results)
    if not results.summary.empty:
        _results_section(doc, groups, fs)
        _timelines(doc, fs, max_timelines)
    _environment(doc, results)
    doc.heading("All trials", anchor="trials")
    doc.para("The same numbers as summary.csv (one row per trial).", "note")
    cols = [c for c in TRIAL_TABLE_COLUMNS if c in results.summary.columns]
    doc.table(results.summary[cols], folded=f"{len(results.summary)} trial(s)")
    if fs.errors:
        doc.heading("Figures that could not be drawn", 3)
        doc.items(fs.errors)

    title = f"Load balancing report: {results_dir.name or results_dir}"
    index = out_dir / "index.html"
    _write_html(doc, index, title)
    markdown = out_dir / "report.md"
    markdown.write_text(f"# {title}\n\n" + "\n".join(doc.md), encoding="utf-8")
    return Report(index, markdown, summary_csv, fs, results)


__all__ = ["CLAIM_COLUMNS", "Report", "build_report", "claims_table", "fmt", "group_table",
           "html_table", "md_table", "problems_tables"]
