"""The report's section on users' workloads (issue 12): what payloads cost, and how schedulers
queue tasks that arrive over time.

``payload``: no-op tasks carrying ``input_bytes`` and returning ``output_bytes`` of the same
size, one workload per size (experiments/payload.toml). Per-task time = wall / tasks; the
payload's cost is the per-task time beyond the same scheduler's no-payload run, bytes per
second = (input + output bytes) / that extra time, and the transfer share = 1 - no-payload
time / time: the payload "dominates" from the smallest size at which it is at least half.

``arrivals``: tasks submitted at Poisson times (experiments/arrivals.toml). The offered load is
measured, not taken from the config: arrival rate = (tasks - 1) / submit span, utilisation =
rate x mean task time / workers. Response time (receive - submit) and queueing delay (start -
submit), median and 95th percentile, come from the summary.

Writes ``payload.csv`` and ``arrivals.csv`` beside ``summary.csv``, and one figure each.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from . import figures as F
from . import results as R

PAYLOAD_STUDY = "payload"
ARRIVALS_STUDY = "arrivals"
#: These studies are shown by this section's tables and figures, not per workload.
STUDIES = (PAYLOAD_STUDY, ARRIVALS_STUDY)
SECTION = "workloads"
#: The payload "dominates" from the size at which it is this share of the per-task time.
DOMINANT_SHARE = 0.5

PAYLOAD_COLUMNS = ("scheduler", "n_workers", "payload_bytes", "n_tasks", "per_task_ms",
                   "extra_ms", "transfer_share", "mb_per_s")
ARRIVALS_COLUMNS = ("scheduler", "workload", "n_workers", "n_tasks", "rate_per_s",
                    "utilisation", "response_median_ms", "response_p95_ms",
                    "queueing_median_ms", "queueing_p95_ms", "task_ms")


def _ok(summary: pd.DataFrame, study: str) -> pd.DataFrame:
    if summary.empty or "experiment" not in summary:
        return summary.iloc[0:0]
    s = summary[(summary["experiment"] == study)
                & (summary["trial_status"].astype(str) != "failed")]
    return s[pd.to_numeric(s["wall_s"], errors="coerce") > 0]


def payload_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (scheduler, workers, payload size) of the payload study: medians over
    repeats. ``payload_bytes`` counts one way (the study sends the same size back)."""
    s = _ok(summary, PAYLOAD_STUDY).copy()
    if s.empty:
        return pd.DataFrame(columns=PAYLOAD_COLUMNS)
    s["payload_bytes"] = pd.to_numeric(s["input_bytes"], errors="coerce").fillna(0)
    s["both_ways"] = s["payload_bytes"] + pd.to_numeric(s["output_bytes"],
                                                        errors="coerce").fillna(0)
    s["per_task_s"] = s["wall_s"].astype(float) / s["n_tasks"].astype(float)
    rows = []
    for (sched, n), g in s.groupby(["scheduler", "n_workers"], sort=False):
        per = g.groupby("payload_bytes").agg(per_task_s=("per_task_s", "median"),
                                             both=("both_ways", "median"),
                                             n_tasks=("n_tasks", "median"))
        base = float(per.loc[0, "per_task_s"]) if 0 in per.index else math.nan
        for size, r in per.sort_index().iterrows():
            extra = r["per_task_s"] - base
            rows.append({
                "scheduler": sched, "n_workers": int(n), "payload_bytes": int(size),
                "n_tasks": int(r["n_tasks"]), "per_task_ms": 1e3 * r["per_task_s"],
                "extra_ms": 1e3 * extra if size else math.nan,
                "transfer_share": 1 - base / r["per_task_s"] if size else math.nan,
                "mb_per_s": (r["both"] / extra / 1e6 if size and extra > 0 else math.nan),
            })
    out = pd.DataFrame(rows, columns=PAYLOAD_COLUMNS)
    return R.sort_trials(out, ["scheduler", "n_workers", "payload_bytes"])


def dominant_from(table: pd.DataFrame) -> pd.DataFrame:
    """Per scheduler: the smallest payload size whose transfer share is at least
    :data:`DOMINANT_SHARE` (NaN if none), and the bytes per second at the largest size."""
    rows = []
    for (sched, n), g in table.groupby(["scheduler", "n_workers"], sort=False):
        over = g[g["transfer_share"] >= DOMINANT_SHARE]
        big = g[g["payload_bytes"] == g["payload_bytes"].max()]
        rows.append({"scheduler": sched, "n_workers": n,
                     "dominates_from_bytes": (int(over["payload_bytes"].min()) if len(over)
                                              else math.nan),
                     "mb_per_s_at_largest": float(big["mb_per_s"].iloc[0]) if len(big)
                     else math.nan})
    return pd.DataFrame(rows)


def payload_figure(table: pd.DataFrame) -> Any:
    """Per-task time against payload size (log-log), one line per scheduler; the no-payload
    time as a dotted line."""
    fig = F.new_figure(6.4, 4.4)
    ax = fig.subplots()
    for (sched, _n), g in table.groupby(["scheduler", "n_workers"], sort=False):
        color = F.scheduler_color(str(sched))
        sized = g[g["payload_bytes"] > 0]
        ax.plot(sized["payload_bytes"], sized["per_task_ms"], marker="o", color=color,
                label=str(sched), lw=1)
        base = g[g["payload_bytes"] == 0]
        if len(base):
            ax.axhline(float(base["per_task_ms"].iloc[0]), color=color, ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Payload per task, each way (bytes)")
    ax.set_ylabel("Wall time per task (ms)")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize="small")
    ax.set_title("No-op tasks with a payload; dotted: the same without", fontsize="medium")
    return fig


def arrivals_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (scheduler, workload, workers) of the arrivals study: medians over
    repeats, with the measured arrival rate and utilisation."""
    s = _ok(summary, ARRIVALS_STUDY).copy()
    if s.empty or "submit_span_s" not in s:
        return pd.DataFrame(columns=ARRIVALS_COLUMNS)
    span = pd.to_numeric(s["submit_span_s"], errors="coerce")
    s["rate_per_s"] = (s["n_tasks"].astype(float) - 1) / span.where(span > 0)
    s["utilisation"] = (s["rate_per_s"] * pd.to_numeric(s["task_s_mean"], errors="coerce")
                        / s["n_workers"].astype(float))
    rows = []
    for (sched, wl, n), g in s.groupby(["scheduler", "workload", "n_workers"], sort=False):
        med = {c: float(pd.to_numeric(g[c], errors="coerce").median())
               for c in ("rate_per_s", "utilisation", "response_median_s", "response_p95_s",
                         "queueing_median_s", "queueing_p95_s", "task_s_mean", "n_tasks")}
        rows.append({
            "scheduler": sched, "workload": wl, "n_workers": int(n),
            "n_tasks": int(med["n_tasks"]), "rate_per_s": med["rate_per_s"],
            "utilisation": med["utilisation"],
            "response_median_ms": 1e3 * med["response_median_s"],
            "response_p95_ms": 1e3 * med["response_p95_s"],
            "queueing_median_ms": 1e3 * med["queueing_median_s"],
            "queueing_p95_ms": 1e3 * med["queueing_p95_s"],
            "task_ms": 1e3 * med["task_s_mean"],
        })
    out = pd.DataFrame(rows, columns=ARRIVALS_COLUMNS)
    return R.sort_trials(out, ["scheduler", "n_workers", "utilisation"])


def arrivals_figure(table: pd.DataFrame) -> Any:
    """Queueing delay (median and p95) against measured utilisation, one line per scheduler."""
    fig = F.new_figure(6.4, 4.4)
    ax = fig.subplots()
    for (sched, _n), g in table.groupby(["scheduler", "n_workers"], sort=False):
        g = g.sort_values("utilisation")
        color = F.scheduler_color(str(sched))
        ax.plot(g["utilisation"], g["queueing_median_ms"], marker="o", color=color,
                label=f"{sched} median", lw=1)
        ax.plot(g["utilisation"], g["queueing_p95_ms"], marker="^", color=color, ls="--",
                label=f"{sched} p95", lw=1)
    ax.set_xlabel("Utilisation: arrival rate × mean task time / workers (measured)")
    ax.set_ylabel("Queueing delay: start - submit (ms)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    ax.set_title("Poisson arrivals: how long tasks wait for a worker", fontsize="medium")
    return fig


def _figure(doc: Any, fig: Any, out_dir: Path, kind: str, title: str) -> None:
    files = F.save_figure(fig, out_dir / "figures" / F.slug(kind))
    doc.figures([F.DrawnFigure(kind, title, files, section=SECTION)])


def workload_section(doc: Any, results: R.Results, out_dir: Path) -> None:
    """The section: the payload and arrivals tables and figures (each only when its study
    ran); writes payload.csv and arrivals.csv."""
    summary = results.summary
    pay, arr = payload_table(summary), arrivals_table(summary)
    if pay.empty and arr.empty:
        return
    doc.heading("Payloads and arrivals", anchor="workloads")
    if not pay.empty:
        pay.to_csv(out_dir / "payload.csv", index=False)
        doc.heading("What a payload costs", 3)
        doc.para("No-op tasks, each sending and receiving a payload of the size shown (random "
                 "bytes). per_task_ms = wall / tasks; extra_ms = that minus the same "
                 "scheduler's no-payload run; transfer_share = extra / per-task time; mb_per_s "
                 "= bytes both ways / extra time. One repeat of few tasks: a survey; a "
                 "negative extra_ms (the no-payload run was the slower) is below its noise.",
                 "note")
        doc.table(pay)
        dom = dominant_from(pay)
        doc.para(f"Where the payload is at least {DOMINANT_SHARE:.0%} of the per-task time "
                 "(smallest such size), and the rate at the largest size:")
        doc.table(dom)
        _figure(doc, payload_figure(pay), out_dir, "payload", "Per-task time against payload")
    if not arr.empty:
        arr.to_csv(out_dir / "arrivals.csv", index=False)
        doc.heading("Tasks arriving over time", 3)
        doc.para("Poisson arrivals; each task has its own submit stamp. rate_per_s and "
                 "utilisation are measured from the submit stamps ((tasks - 1) / submit span; "
                 "× mean task time / workers). Response = receive - submit, queueing = start - "
                 "submit; medians and 95th percentiles over a trial's tasks.", "note")
        doc.table(arr)
        _figure(doc, arrivals_figure(arr), out_dir, "arrivals",
                "Queueing delay against utilisation")


def draw_workload_figures(results: R.Results, fig_dir: Path,
                          formats: tuple[str, ...] | list[str] = F.FORMATS) -> list[Path]:
    """This section's figures alone (for the ``figures`` command)."""
    files: list[Path] = []
    pay, arr = payload_table(results.summary), arrivals_table(results.summary)
    if not pay.empty:
        files += F.save_figure(payload_figure(pay), fig_dir / F.slug("payload"), formats)
    if not arr.empty:
        files += F.save_figure(arrivals_figure(arr), fig_dir / F.slug("arrivals"), formats)
    return files


__all__ = ["ARRIVALS_STUDY", "DOMINANT_SHARE", "PAYLOAD_STUDY", "STUDIES", "arrivals_figure",
           "arrivals_table", "dominant_from", "draw_workload_figures", "payload_figure",
           "payload_table", "workload_section"]
