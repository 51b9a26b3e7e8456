"""The measurement's own accuracy, per scheduler: how long sleeps last beyond their plan, the
timer slack workers ran with, and how far our in-task stamps are from each system's own
records (the native witness)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def sleep_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per scheduler: trials with sleep bodies, the median of their median sleep overshoot and
    the largest 95th percentile, in microseconds, and the worker timer slack recorded."""
    cols = ["scheduler", "sleep trials", "overshoot median (us)", "overshoot p95 max (us)",
            "timer slack (ns)"]
    if summary.empty or "sleep_error_median_s" not in summary.columns:
        return pd.DataFrame(columns=cols)
    s = summary[pd.to_numeric(summary["sleep_error_median_s"], errors="coerce").notna()]
    rows = []
    for sched, g in s.groupby("scheduler", sort=False):
        slack = sorted({str(x) for x in g.get("timer_slack_ns", pd.Series([], dtype=object))
                        if str(x)})
        rows.append({"scheduler": sched, "sleep trials": len(g),
                     "overshoot median (us)": 1e6 * float(g["sleep_error_median_s"].median()),
                     "overshoot p95 max (us)": 1e6 * float(g["sleep_error_p95_s"].max()),
                     "timer slack (ns)": ", ".join(slack) or "not recorded"})
    from .results import sort_trials

    return sort_trials(pd.DataFrame(rows, columns=cols), ["scheduler"])


def witness_table(results: Any) -> pd.DataFrame:
    """Per scheduler with a native witness: trials compared, and the median and max of the
    per-trial |native - ours| start and end differences, in milliseconds."""
    cols = ["scheduler", "source", "trials", "start |diff| median (ms)", "start |diff| max (ms)",
            "end |diff| median (ms)", "end |diff| max (ms)"]
    rows: dict[str, list[dict[str, Any]]] = {}
    for _, row in results.summary.iterrows():
        try:
            w = results.metadata(row["source"])["trial"].get("witness")
        except Exception:  # an unreadable file is already listed as broken
            continue
        if isinstance(w, dict) and w.get("matched"):
            rows.setdefault(str(row["scheduler"]), []).append(w)
    out = []
    for sched, ws in rows.items():
        def med(key: str, ws: list[dict[str, Any]] = ws) -> float:
            v = [float(x[key]) for x in ws if isinstance(x.get(key), int | float)]
            return float(np.median(v)) if v else math.nan

        def mx(key: str, ws: list[dict[str, Any]] = ws) -> float:
            v = [float(x[key]) for x in ws if isinstance(x.get(key), int | float)]
            return float(max(v)) if v else math.nan

        out.append({"scheduler": sched, "source": str(ws[0].get("source", "")),
                    "trials": len(ws), "start |diff| median (ms)": med("start_abs_median_ms"),
                    "start |diff| max (ms)": mx("start_abs_max_ms"),
                    "end |diff| median (ms)": med("end_abs_median_ms"),
                    "end |diff| max (ms)": mx("end_abs_max_ms")})
    from .results import sort_trials

    return sort_trials(pd.DataFrame(out, columns=cols), ["scheduler"])


__all__ = ["sleep_table", "witness_table"]
