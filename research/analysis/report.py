"""The report of a results directory: ``index.html``, ``report.md``, ``summary.csv``,
``claims.csv`` and ``figures/``.

:func:`make_report` is the whole job (load, check the claims, draw, write); the command line
(``python -m research report``) and ``analysis/report.py`` both call it. The report is built as
one list of blocks (heading, paragraph, list, table, figures); ``index.html`` is rendered from
them through the Jinja2 template ``templates/report.html.j2`` and ``report.md`` is written from
the same blocks, so both say the same thing.

The HTML is self-contained (inline CSS, no JavaScript, figures as files beside it), so it opens
offline. Every trial the directory holds is accounted for: analysed, failed (and why), or
broken (and why).
"""

from __future__ import annotations

import datetime as _dt
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from .. import schema
from . import claims as C
from . import figures as F
from . import results as R

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
    "n_tasks", "makespan_s", "wall_s", "lower_bound_s", "greedy_s", "model_s", "model",
    "efficiency", "tasks_per_worker_min", "tasks_per_worker_max", "workers_used", "mean_gap_s",
    "max_gap_s", "start_latency_median_s", "return_latency_median_s", "n_errors",
    "trial_status", "note",
)


#: The CSS class of a verdict cell, from the verdict constants (anything else: ``warn``).
VERDICT_CLASSES: dict[str, str] = {C.REPRODUCED: "pass", C.NOT_REPRODUCED: "fail",
                                   C.NOT_RUN: "warn"}
TEMPLATE = "report.html.j2"
#: The text of a timeline's link to its trace file (Perfetto / Chrome trace-event JSON).
TRACE_LINK = "Perfetto trace"
#: The links at the top of the HTML report: (anchor, text).
NAV: tuple[tuple[str, str], ...] = (
    ("claims", "Claims"), ("problems", "Failures"), ("results", "Results"),
    ("measure", "Overhead & simulator"),
    ("timelines", "Timelines"), ("environment", "Environment"), ("trials", "All trials"))


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    index_html: Path
    markdown: Path
    summary_csv: Path
    figures: F.FigureSet
    results: R.Results
    claims: pd.DataFrame | None = None
    claims_error: str | None = None


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
        return f"{x:.4g}" if 1e-3 <= abs(float(x)) < 1e5 else f"{x:.3g}"
    return str(x)


def _range(med: float, lo: float, hi: float) -> str:
    if not np.isfinite(med):
        return ""
    if np.isclose(lo, hi, rtol=1e-9, atol=0):
        return fmt(med)
    return f"{fmt(med)} [{fmt(lo)}–{fmt(hi)}]"


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)



def table_cells(df: pd.DataFrame, cell_class: Callable[[str, Any], str] | None = None
                ) -> list[list[tuple[str, str]]]:
    """Each row's cells as (text, CSS classes); ``cell_class(column, value)`` may add a class.
    Numbers get ``num`` (right-aligned)."""
    rows = []
    for row in df.itertuples(index=False):
        cells = []
        for col, v in zip(df.columns, row, strict=True):
            cls = ["num"] if _is_num(v) else []
            if cell_class:
                cls.append(cell_class(str(col), v))
            cells.append((fmt(v), " ".join(c for c in cls if c)))
        rows.append(cells)
    return rows


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
        row = {k: g[k] for k in R.GROUP_KEYS}
        row["trials"] = f"{g['n_trials']}" + (f" ({g['n_failed']} failed)" if g["n_failed"]
                                               else "")
        row["lower bound (s)"] = fmt(g["lower_bound_s_median"])
        row["greedy (s)"] = fmt(g["greedy_s_median"])
        # The scheduler's own model (models.SCHEDULER_MODELS), and what it modelled.
        row["model (s)"] = fmt(g["model_s_median"]) if "model_s_median" in g else ""
        row["model"] = str(g["model"]) if "model" in g else ""
        for m, label, scale in GROUP_TABLE_METRICS:
            row[label] = _range(*(scale * g[f"{m}_{s}"] for s in ("median", "min", "max")))
        lo, hi = g["tasks_per_worker_min_min"], g["tasks_per_worker_max_max"]
        row["tasks/worker"] = ("" if not np.isfinite(lo) else fmt(int(lo)) if lo == hi
                               else f"{int(lo)}–{int(hi)}")
        row["errors"] = fmt(g["n_errors_max"]) if g["n_errors_max"] else ""
        rows.append(row)
    return pd.DataFrame(rows)


def problems_tables(results: R.Results) -> dict[str, pd.DataFrame]:
    """Broken files, failed trials, trials with task errors, and other notes."""
    s = results.summary
    broken = pd.DataFrame([{"file": str(b.path), "reason": b.reason} for b in results.broken],
                          columns=["file", "reason"])
    cols = ["trial_id", "scheduler", "workload", "n_workers", "repeat", "trial_error",
            "n_errors", "first_error", "note"]
    if s.empty:
        empty = pd.DataFrame(columns=cols)
        return {"broken": broken, "failed": empty, "errors": empty, "notes": empty}
    failed = s[s["trial_status"].astype(str).eq(schema.TRIAL_FAILED)]
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


def verdict_class(col: str, v: Any) -> str:
    """The CSS class of a claims-table cell: by verdict in the ``verdict`` column."""
    if col != "verdict":
        return ""
    return VERDICT_CLASSES.get(str(v), "warn")


# ---------------------------------------------------------------------------------------------
# Building: the report as blocks, then as HTML (template) and markdown


def _rel(path: Path, out_dir: Path) -> str:
    return path.relative_to(out_dir).as_posix()


def _png(fig: F.DrawnFigure) -> Path | None:
    return next((p for p in fig.files if p.suffix == ".png"), None)


@dataclass
class Block:
    """One piece of the report; ``kind`` is heading, para, items, table or figures."""

    kind: str
    text: str = ""
    level: int = 2
    anchor: str = ""
    cls: str = ""
    items: list[str] = field(default_factory=list)
    df: pd.DataFrame | None = None
    cell_class: Callable[[str, Any], str] | None = None
    folded: str = ""
    figures: list[F.DrawnFigure] = field(default_factory=list)


class _Doc:
    """The report's blocks, in order."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []

    def heading(self, text: str, level: int = 2, anchor: str = "") -> None:
        self.blocks.append(Block("heading", text, level=level, anchor=anchor))

    def para(self, text: str, cls: str = "") -> None:
        self.blocks.append(Block("para", text, cls=cls))

    def items(self, lines: Sequence[str]) -> None:
        if lines:
            self.blocks.append(Block("items", items=list(lines)))

    def table(self, df: pd.DataFrame, *, cell_class: Callable[[str, Any], str] | None = None,
              folded: str = "") -> None:
        self.blocks.append(Block("table", df=df, cell_class=cell_class, folded=folded))

    def figures(self, figs: Sequence[F.DrawnFigure]) -> None:
        drawn = [f for f in figs if _png(f) is not None]
        if drawn:
            self.blocks.append(Block("figures", figures=drawn))


def _md_block(b: Block, out_dir: Path) -> list[str]:
    if b.kind == "heading":
        return [f"{'#' * b.level} {b.text}\n"]
    if b.kind == "para":
        return [f"{'> ' if b.cls == 'box' else ''}{b.text}\n"]
    if b.kind == "items":
        return ["\n".join(f"- {x}" for x in b.items) + "\n"]
    if b.kind == "table":
        assert b.df is not None
        return [md_table(b.df)]
    out = []
    for fig in b.figures:
        png = _png(fig)
        assert png is not None
        trials = f" (trials: {', '.join(fig.trials)})" if fig.trials else ""
        trace = (f" [Perfetto trace]({_rel(fig.trace, out_dir)})" if fig.trace is not None
                 else "")
        out.append(f"![{fig.title}]({_rel(png, out_dir)})\n\n*{fig.title}{trials}*{trace}\n")
    return out


def render_markdown(blocks: Sequence[Block], title: str, out_dir: Path) -> str:
    """``report.md``: the blocks as GitHub-flavoured markdown."""
    parts = [p for b in blocks for p in _md_block(b, out_dir)]
    return f"# {title}\n\n" + "\n".join(parts)


def _html_context(b: Block, out_dir: Path) -> dict[str, Any]:
    ctx: dict[str, Any] = {"kind": b.kind, "text": b.text, "level": b.level,
                           "anchor": b.anchor, "cls": b.cls, "lines": b.items,
                           "folded": b.folded}
    if b.kind == "table":
        assert b.df is not None
        ctx["table"] = {"columns": [str(c) for c in b.df.columns],
                        "rows": table_cells(b.df, b.cell_class)}
    if b.kind == "figures":
        ctx["figures"] = []
        for fig in b.figures:
            png = _png(fig)
            assert png is not None
            trials = f" — trials: {', '.join(fig.trials)}" if fig.trials else ""
            ctx["figures"].append({
                "png": _rel(png, out_dir), "title": fig.title, "caption": fig.title + trials,
                "links": [(_rel(p, out_dir), p.suffix[1:].upper()) for p in fig.files]
                + ([(_rel(fig.trace, out_dir), TRACE_LINK)] if fig.trace is not None else [])})
    return ctx


def _environment_jinja() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("research.analysis", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True)


def render_html(blocks: Sequence[Block], title: str, out_dir: Path) -> str:
    """``index.html``: the blocks through the template (all text escaped by Jinja2)."""
    template = _environment_jinja().get_template(TEMPLATE)
    return template.render(title=title, nav=NAV,
                           blocks=[_html_context(b, out_dir) for b in blocks])


# ---------------------------------------------------------------------------------------------
# Sections


def _overview(doc: _Doc, results: R.Results, results_dir: Path) -> None:
    s = results.summary
    n_failed = int(s["trial_status"].astype(str).eq(schema.TRIAL_FAILED).sum()) if len(s) else 0
    doc.para(f"Results directory: {results_dir} — {results.n_files} record file(s), "
             f"{len(s)} trial(s) analysed, {n_failed} failed trial(s), "
             f"{len(results.broken)} file(s) or directories that could not be analysed. "
             f"Generated {_dt.datetime.now().isoformat(timespec='seconds')}.")
    if len(s):
        exps = s.groupby("experiment").agg(trials=("trial_id", "size"),
                                           schedulers=("scheduler", _schedulers_text),
                                           workloads=("workload", _sorted_text)).reset_index()
        doc.table(exps)
    doc.para("Definitions: makespan = last in-task end − first in-task start; wall = last "
             "receive − first submit (client side); busy = Σ(end − start); lower bound = "
             "max(Σ planned / workers, max planned); greedy = list scheduling of the planned "
             "durations in task order (what an ideal dynamic scheduler achieves); efficiency = "
             "busy / (workers × makespan); gap = idle time between consecutive tasks on one "
             "worker; start latency = start − submit; return latency = receive − end. Medians "
             "over repeats with [min–max]; failed trials are left out of those statistics.",
             "note")


def _schedulers_text(x: pd.Series) -> str:
    return ", ".join(sorted(set(x), key=R.scheduler_rank))


def _sorted_text(x: pd.Series) -> str:
    return ", ".join(sorted(set(x)))


def _prime_table(doc: _Doc, results_dir: Path) -> None:
    table = C.prime_speedups(results_dir)
    if table is None:
        return
    doc.heading("The talk's prime benchmark, by its method", 3)
    doc.para("timeit best of repeats, pool made inside each timed call; the talk ran on 12 "
             "cores, this run on the cores shown.", "note")
    doc.table(table)


def _claims(doc: _Doc, claims: pd.DataFrame | None, claims_error: str | None) -> None:
    # The claims are the point of the study: the top of the report on purpose.
    doc.heading("Claims from the talk", anchor="claims")
    if claims_error:
        doc.para(f"The claims could not be evaluated: {claims_error}", "box")
    if claims is None:
        if not claims_error:
            doc.para("No claims table was given.", "note")
        return
    table, problem = claims_table(claims)
    if problem:
        doc.para(problem, "box")
    doc.table(table, cell_class=verdict_class)


def _problems(doc: _Doc, results: R.Results) -> None:
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
        doc.figures(fs.in_section(F.SECTION_WORKLOAD, str(exp), str(wl)))
    tasklen = fs.in_section(F.SECTION_TASKLEN)
    if tasklen:
        doc.heading("Task length sweeps", 3)
        doc.figures(tasklen)


def _timelines(doc: _Doc, fs: F.FigureSet, max_timelines: int) -> None:
    doc.heading("Timelines", anchor="timelines")
    doc.para("One row per worker, one bar per task from its in-task start to its end, time from "
             "the trial's first start; bar colour = the task's order within its worker (as in "
             "the talk); dashed line = lower bound, dotted = greedy list schedule; a red edge "
             "marks a task whose status is error. Each timeline links to its Perfetto trace "
             "(open it at ui.perfetto.dev or chrome://tracing).", "note")
    paired = fs.in_section(F.SECTION_PAIRED)
    if paired:
        doc.heading("Paired timelines (same time axis)", 3)
        doc.figures(paired)
    single = fs.in_section(F.SECTION_TIMELINE)
    doc.heading(f"Per trial ({len(single)} drawn)", 3)
    doc.para(f"Drawn: the first repeat of each (experiment, workload, workers, scheduler), at "
             f"most {max_timelines}; under the cap workloads take turns, largest worker count "
             "first (--max-timelines raises the cap). "
             "`python analysis/trace.py FILE` exports the trace of any other trial.", "note")
    doc.items([f"{f.title}: {', '.join(f.trials)}" for f in single])
    if fs.not_drawn:
        doc.para("Not drawn:")
        doc.items(fs.not_drawn)
    doc.figures(single)


def _mixed_setups(doc: _Doc, results: R.Results) -> None:
    """Say at the top when the results come from more than one setup (another commit, dirty
    tree, library versions, host): a resumed sweep can mix them (``run --rerun-stale``)."""
    n = len(results.environments)
    if n > 1:
        doc.para(f"These results mix {n} setups (commit, library versions or machine differ); "
                 "numbers from different setups sit side by side below. See the Environment "
                 "section; `python -m research run ... --rerun-stale` remeasures the trials "
                 "made with other code or versions.", "box")


def _environment(doc: _Doc, results: R.Results) -> None:
    doc.heading("Environment", anchor="environment")
    doc.para("Where each result came from, from the metadata stored in each file (one row per "
             "distinct machine and software setup).", "note")
    doc.table(results.environments)


def build_report(
    results_dir: Path | str,
    out_dir: Path | str,
    claims: pd.DataFrame | None = None,
    *,
    claims_error: str | None = None,
    results: R.Results | None = None,
    max_timelines: int = F.DEFAULT_MAX_TIMELINES,
    pairs: Sequence[tuple[str, str]] = F.PREFERRED_PAIRS,
    calibration: Path | None = None,
    formats: Sequence[str] = F.FORMATS,
    figure_kinds: Sequence[str] | None = None,
) -> Report:
    """Analyse ``results_dir`` and write the report into ``out_dir``.

    ``claims`` (columns :data:`CLAIM_COLUMNS`) is shown at the top and written to
    ``claims.csv``; ``claims_error`` explains why it is missing. Pass ``results`` from
    :func:`results.load_results` to avoid reading the files twice. Never raises for bad
    result files: they are listed in the report. :func:`make_report` also checks the claims.
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if results is None:
        results = R.load_results(results_dir)
    summary_csv = out_dir / "summary.csv"
    R.summary_for_csv(results.summary).to_csv(summary_csv, index=False)
    if claims is not None:
        claims.to_csv(out_dir / "claims.csv", index=False)
    groups = R.group_summary(results.summary)
    fs = F.draw_all(results, out_dir / "figures", max_timelines=max_timelines, pairs=pairs,
                    formats=formats, groups=groups, kinds=figure_kinds)

    doc = _Doc()
    _claims(doc, claims, claims_error)
    _mixed_setups(doc, results)
    _prime_table(doc, Path(results_dir))
    doc.heading("Overview")
    _overview(doc, results, results_dir)
    _problems(doc, results)
    if not results.summary.empty:
        _results_section(doc, groups, fs)
        from .measure_report import measure_section

        measure_section(doc, results, out_dir, calibration)
        from .workload_report import workload_section

        workload_section(doc, results, out_dir)
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
    index.write_text(render_html(doc.blocks, title, out_dir), encoding="utf-8")
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(doc.blocks, title, out_dir), encoding="utf-8")
    return Report(index, markdown, summary_csv, fs, results, claims, claims_error)


def evaluate_claims(summary: pd.DataFrame, results_dir: Path
                    ) -> tuple[pd.DataFrame | None, str | None]:
    """(claims table or None, error text or None); never raises. Each claim already reports
    its own failure; this catches what is left (a broken claims table itself)."""
    try:
        return C.evaluate(summary, results_dir), None
    except Exception as exc:  # a broken claims table must not cost us the report
        traceback.print_exc(file=sys.stderr)
        return None, f"{type(exc).__name__}: {exc}"


def make_report(results_dir: Path | str, out_dir: Path | str | None = None, *,
                max_timelines: int = F.DEFAULT_MAX_TIMELINES,
                calibration: Path | None = None,
                formats: Sequence[str] = F.FORMATS,
                figure_kinds: Sequence[str] | None = None,
                fit_calibration: Path | None = None) -> Report:
    """Load ``results_dir``, check the claims and write the whole report into ``out_dir``
    (default ``results_dir/report``). Raises FileNotFoundError if ``results_dir`` is absent.

    ``fit_calibration``: first fit the simulator's calibration on these results (as
    ``python -m research calibrate`` does), write it there and use it, reading the results
    once for both. If nothing can be fitted the report uses ``calibration`` (or the shipped
    defaults) and says so."""
    results_dir = Path(results_dir)
    if not results_dir.exists():
        raise FileNotFoundError(f"{results_dir}: no such results directory")
    out = Path(out_dir) if out_dir is not None else results_dir / "report"
    results = R.load_results(results_dir)
    if fit_calibration is not None:
        from ..simulate import calibration as cal_mod

        try:
            fitted = cal_mod.fit(results)
        except Exception as exc:  # the report still comes, with the defaults
            print(f"calibration failed ({type(exc).__name__}: {exc}); the report uses "
                  f"{calibration or 'the shipped defaults'}", file=sys.stderr)
        else:
            if fitted.schedulers:
                calibration = fitted.write(fit_calibration)
            else:
                print(f"{results_dir}: no completed trial of the studies "
                      f"{', '.join(cal_mod.CALIBRATION_STUDIES)} to fit the calibration on",
                      file=sys.stderr)
    claims, claims_error = evaluate_claims(results.summary, results_dir)
    return build_report(results_dir, out, claims, claims_error=claims_error, results=results,
                        max_timelines=max_timelines, calibration=calibration, formats=formats,
                        figure_kinds=figure_kinds)


__all__ = ["CLAIM_COLUMNS", "TRACE_LINK", "VERDICT_CLASSES", "Block", "Report", "build_report",
           "claims_table", "evaluate_claims", "fmt", "group_table", "make_report", "md_table",
           "problems_tables", "render_html", "render_markdown", "table_cells", "verdict_class"]
