"""The native-witness comparison, on hand-built records."""

from __future__ import annotations

import pandas as pd
import pytest

from research.witness import compare

MS = 1_000_000


def _ours() -> pd.DataFrame:
    return pd.DataFrame({"task_id": [0, 1, 2, 3], "start_ns": [0, 10 * MS, 0, 30 * MS],
                         "end_ns": [10 * MS, 20 * MS, 30 * MS, 40 * MS]})


def test_per_task_records() -> None:
    native = pd.DataFrame({"task_id": [0, 1, 2, 3], "worker": "w", "source": "x",
                           "start_ns": [1 * MS, 10 * MS, 0, 33 * MS],
                           "end_ns": [10 * MS, 22 * MS, 30 * MS, 40 * MS]})
    out = compare(_ours(), native)
    assert out["matched"] == 4
    assert out["start_abs_max_ms"] == pytest.approx(3.0)
    assert out["start_abs_median_ms"] == pytest.approx(0.5)
    assert out["end_abs_max_ms"] == pytest.approx(2.0)


def test_block_records_compare_first_start_and_last_end() -> None:
    native = pd.DataFrame({"task_id": [None, None], "task_ids": [[0, 1], [2, 3]],
                           "worker": "w", "source": "blocks",
                           "start_ns": [-1 * MS, 0], "end_ns": [21 * MS, 40 * MS]})
    native["task_id"] = native["task_id"].astype("Int64")
    out = compare(_ours(), native)
    assert out["matched"] == 2 and out["tasks_matched"] == 4
    assert out["start_median_ms"] == pytest.approx(-0.5)
    assert out["end_abs_max_ms"] == pytest.approx(1.0)


def test_nothing_to_match() -> None:
    native = pd.DataFrame({"task_id": [9], "worker": "w", "source": "x", "start_ns": [0],
                           "end_ns": [1]})
    assert compare(_ours(), native) == {"matched": 0}
