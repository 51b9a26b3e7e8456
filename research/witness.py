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

    Differences are native minus ours, over tasks present in both with both stamps. Returns
    the count matched, and the median and max of the absolute differences, for start and end.
    """
    ours = rows[["task_id", "start_ns", "end_ns"]].dropna()
    theirs = native.dropna(subset=["task_id", "start_ns", "end_ns"])
    if theirs.empty or ours.empty:
        return {"matched": 0}
    theirs = theirs.astype({"task_id": "int64"}).drop_duplicates("task_id")
    both = ours.astype("int64").merge(theirs[["task_id", "start_ns", "end_ns"]].astype("int64"),
                                      on="task_id", suffixes=("", "_native"))
    if both.empty:
        return {"matched": 0}
    out: dict[str, Any] = {"matched": int(len(both)), "source": str(native["source"].iloc[0])}
    for edge in ("start", "end"):
        diff_ms = (both[f"{edge}_ns_native"] - both[f"{edge}_ns"]) / 1e6
        out[f"{edge}_median_ms"] = float(diff_ms.median())
        out[f"{edge}_abs_median_ms"] = float(diff_ms.abs().median())
        out[f"{edge}_abs_max_ms"] = float(diff_ms.abs().max())
    return out
