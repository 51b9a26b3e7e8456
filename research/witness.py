"""The native witness: each system's own timing records, compared with our in-task stamps.

Adapters that can (ipyparallel, Dask, Ray) return a native table with at least the columns in
:data:`NATIVE_COLUMNS`; one row per task where the system records per task, or one row per
message (chunk, engine block) with ``task_id`` null and ``task_ids`` listing what it carried.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

#: Columns every native table has. ``*_ns`` are wall-clock nanoseconds as the system reports
#: them; ``source`` names the record (``ipp.metadata``, ``dask.task_stream``, ``ray.timeline``).
NATIVE_COLUMNS = ("task_id", "worker", "start_ns", "end_ns", "source")


def compare(rows: pd.DataFrame, native: pd.DataFrame) -> dict[str, Any]:
    """How far our in-task start/end stamps are from the native ones, in milliseconds.

    Differences are native minus ours. A native record that carried several tasks (a DirectView
    block, a chunk) is compared with the first start and the last end of its tasks. Returns the
    number of records matched, and the median and max of the absolute differences.
    """
    ours = rows[["task_id", "start_ns", "end_ns"]].dropna().astype("int64")
    theirs = native.dropna(subset=["start_ns", "end_ns"]).reset_index(drop=True)
    if theirs.empty or ours.empty:
        return {"matched": 0}
    if "task_ids" in theirs.columns:
        ids = [list(t) if t is not None and len(t) else [k] for t, k in
               zip(theirs["task_ids"], theirs["task_id"], strict=True)]
    else:
        ids = [[k] for k in theirs["task_id"]]
    members = pd.DataFrame({"record": range(len(ids)), "task_id": ids}).explode("task_id")
    members = members.dropna().astype("int64").merge(ours, on="task_id")
    if members.empty:
        return {"matched": 0}
    per = members.groupby("record").agg(start_ns=("start_ns", "min"), end_ns=("end_ns", "max"))
    both = per.join(theirs[["start_ns", "end_ns"]].astype("int64").add_suffix("_native"))
    out: dict[str, Any] = {"matched": int(len(both)), "tasks_matched": int(len(members)),
                           "source": str(native["source"].iloc[0])}
    for edge in ("start", "end"):
        diff_ms = (both[f"{edge}_ns_native"] - both[f"{edge}_ns"]) / 1e6
        out[f"{edge}_median_ms"] = float(diff_ms.median())
        out[f"{edge}_abs_median_ms"] = float(diff_ms.abs().median())
        out[f"{edge}_abs_max_ms"] = float(diff_ms.abs().max())
    return out
