"""Metrics against hand-built timelines with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research import schema
from research.analysis import metrics as M
from research.analysis import models
from research.analysis import results as R

from analysis_data import (
    T0,
    build_results_dir,
    list_schedule,
    records,
    static_blocks,
    talk_worst_case,
    task,
    write,
    write_bare,
)

EXACT = {"rel": 1e-12, "abs": 1e-12}


@pytest.fixture
def mixed() -> pd.DataFrame:
    """3 workers (worker-2 never gets a task), one task that never ran, one unplanned task."""
    return records([
        task(0, "worker-0", 0.0, 1.0, planned=1.0, receive=1.1),
        task(1, "worker-0", 1.5, 2.0, planned=0.5, receive=2.2),
        task(2, "worker-1", 0.25, 1.25, planned=1.0, receive=1.5),
        task(3, None, None, None, planned=0.5, status=schema.STATUS_ERROR, error="no result: lost"),
        task(4, "worker-0", 2.0, 3.0, receive=3.0),  # planned NaN: measured 1.0 s counts
    ], n_workers=3)


def test_hand_built_timeline_gives_exact_metrics(mixed: pd.DataFrame) -> None:
    m = M.trial_metrics(mixed)
    assert m["n_tasks"] == 5
    assert m["n_errors"] == 1
    assert m["makespan_s"] == pytest.approx(3.0, **EXACT)
    assert m["wall_s"] == pytest.approx(3.0, **EXACT)
    assert m["busy_s"] == pytest.approx(3.5, **EXACT)
    # Work 1 + 0.5 + 1 + 0.5 (planned, though it never ran) + 1 (measured) = 4 on 3 workers.
    assert m["lower_bound_s"] == pytest.approx(4 / 3, **EXACT)
    # Greedy in index order: 1.0|0.5|1.0, then 0.5 -> the worker free at 0.5, 1.0 -> at 1.0.
    assert m["greedy_s"] == pytest.approx(2.0, **EXACT)
    assert m["efficiency"] == pytest.approx(3.5 / (3 * 3.0), **EXACT)
    assert (m["tasks_per_worker_min"], m["tasks_per_worker_max"]) == (0, 3)
    assert m["workers_used"] == 2
    # worker-0: 1.0 -> 1.5 (0.5 idle), 2.0 -> 2.0 (0); worker-1 has a single task.
    assert m["mean_gap_s"] == pytest.approx(0.25, **EXACT)
    assert m["max_gap_s"] == pytest.approx(0.5, **EXACT)
    assert m["start_latency_median_s"] == pytest.approx((0.25 + 1.5) / 2, **EXACT)
    assert m["return_latency_median_s"] == pytest.approx((0.1 + 0.2) / 2, **EXACT)
    assert "1 of 5 tasks have no start/end stamps" in m["note"]
    assert "1 of 3 workers ran no task" in m["note"]


def test_all_tasks_failed_gives_nan_timings_and_a_note() -> None:
    df = records([task(i, None, None, None, planned=0.2, status=schema.STATUS_ERROR, error="boom")
                  for i in range(3)], n_workers=2)
    m = M.trial_metrics(df)
    for key in ("makespan_s", "wall_s", "busy_s", "efficiency", "mean_gap_s", "max_gap_s",
                "start_latency_median_s", "return_latency_median_s"):
        assert math.isnan(m[key]), key
    assert m["n_errors"] == 3
    assert m["workers_used"] == 0
    assert (m["tasks_per_worker_min"], m["tasks_per_worker_max"]) == (0, 0)
    assert m["lower_bound_s"] == pytest.approx(0.3, **EXACT)  # the plan is still known
    assert "all 3 tasks failed" in m["note"]


def test_no_rows_is_not_a_crash() -> None:
    m = M.trial_metrics(records([task(0, "w", 0, 1)]).iloc[0:0])
    assert m["n_tasks"] == 0
    assert math.isnan(m["makespan_s"])
    assert "no task rows" in m["note"]


def test_failed_task_with_stamps_counts_as_error_but_keeps_its_time() -> None:
    df = records([task(0, "worker-0", 0.0, 1.0, planned=1.0),
                  task(1, "worker-0", 1.0, 1.5, planned=1.0, status=schema.STATUS_ERROR,
                       error="raised")],
                 n_workers=1)
    m = M.trial_metrics(df)
    assert m["n_errors"] == 1
    assert m["makespan_s"] == pytest.approx(1.5, **EXACT)
    assert m["busy_s"] == pytest.approx(1.5, **EXACT)


def test_nanosecond_gaps_survive_epoch_scale_stamps() -> None:
    df = records([task(0, "worker-0", 0.0, 1.0), task(1, "worker-0", 1.000000001, 2.0)],
                 n_workers=1)
    assert df["start_ns"].iloc[1] - df["end_ns"].iloc[0] == 1
    assert M.trial_metrics(df)["max_gap_s"] == pytest.approx(1e-9, rel=1e-9)
    assert M.task_times(df).attrs["origin_ns"] == T0


def test_overlapping_tasks_on_one_label_are_not_negative_idle() -> None:
    df = records([task(0, "w", 0.0, 1.0), task(1, "w", 0.5, 1.5)], n_workers=1)
    assert M.trial_metrics(df)["max_gap_s"] == 0.0


def test_talk_worst_case_bounds_and_static_blocks() -> None:
    durations = talk_worst_case(12)
    assert models.lower_bound(durations, 12) == pytest.approx(38.8 / 12)
    assert models.greedy_makespan(durations, 12) == pytest.approx(3.4)
    direct = M.trial_metrics(records(static_blocks(durations, 12), n_workers=12))
    assert direct["makespan_s"] == pytest.approx(12.2)
    assert (direct["tasks_per_worker_min"], direct["tasks_per_worker_max"]) == (12, 13)
    lb = M.trial_metrics(records(list_schedule(durations, 12), n_workers=12))
    assert lb["makespan_s"] == pytest.approx(lb["greedy_s"])
    assert lb["tasks_per_worker_min"] < lb["tasks_per_worker_max"]


def test_greedy_and_bound_edge_cases() -> None:
    assert models.greedy_makespan([3.0, 1.0, 1.0, 1.0], 2) == pytest.approx(3.0)
    assert models.greedy_makespan([1.0, 1.0, 3.0], 2) == pytest.approx(4.0)  # order matters
    assert models.greedy_makespan([2.0, 5.0], 4) == pytest.approx(5.0)
    assert models.greedy_makespan([1.0, 2.0], 1) == pytest.approx(3.0)
    assert math.isnan(models.greedy_makespan([], 3))
    assert math.isnan(models.lower_bound([math.nan], 3))
    assert models.lower_bound([1.0, 1.0, 4.0], 3) == pytest.approx(4.0)


def test_order_and_rows_follow_start_time_and_natural_labels() -> None:
    df = records([task(0, "engine-10", 0.0, 1.0), task(1, "engine-2", 0.5, 1.0),
                  task(2, "engine-2", 0.0, 0.4), task(3, "engine-10", 1.0, 2.0)], n_workers=2)
    t = M.task_times(df)
    assert M.worker_labels(t) == ["engine-2", "engine-10"]
    assert t["row"].tolist() == [1, 0, 0, 1]
    assert t["order"].tolist() == [0, 1, 0, 1]


def test_load_results_mixes_good_and_broken_files(tmp_path: Path) -> None:
    build_results_dir(tmp_path)
    exp = tmp_path / "exp"
    good = records([task(0, "worker-0", 0, 1, planned=1)], scheduler="bare", n_workers=1)
    write_bare(good, exp / "bare.parquet")  # no research metadata: still analysed
    write_bare(good.drop(columns=["end_ns", "worker"]), exp / "nocols.parquet")
    (exp / "garbage.parquet").write_bytes(b"not a parquet file")
    write_bare(good, exp / ".hidden.parquet")
    write_bare(good, exp / "x.native.parquet")
    write_bare(good, exp / ".superseded" / "old.parquet")
    failed = records([task(i, None, None, None, status=schema.STATUS_ERROR, error="timeout")
                      for i in range(2)], scheduler="ipp-lb", workload="dead", repeat=0)
    write(failed, tmp_path, status=schema.TRIAL_FAILED, error="TrialFailed: timeout after 5 s")

    res = R.load_results(tmp_path)
    broken = {b.path.name: b.reason for b in res.broken}
    assert set(broken) == {"nocols.parquet", "garbage.parquet"}
    assert "end_ns" in broken["nocols.parquet"] and "worker" in broken["nocols.parquet"]
    s = res.summary
    assert len(s) == 16 + 1 + 1
    assert list(s.columns[:len(R.ID_COLUMNS) + len(M.METRICS)]) == [*R.ID_COLUMNS, *M.METRICS]
    bare = s[s["scheduler"] == "bare"].iloc[0]
    assert bare["trial_status"] == "unknown" and bare["makespan_s"] == pytest.approx(1.0)
    dead = s[s["workload"] == "dead"].iloc[0]
    assert dead["trial_status"] == schema.TRIAL_FAILED
    assert dead["trial_error"] == "TrialFailed: timeout after 5 s"
    assert dead["first_error"] == "timeout"
    assert math.isnan(dead["makespan_s"])
    assert res.environments["cpu_model"].tolist() == ["Test CPU 3000", ""]
    assert res.environments["n_trials"].sum() == len(s)


def test_empty_or_missing_directory(tmp_path: Path) -> None:
    res = R.load_results(tmp_path)
    assert res.summary.empty and "no task-record parquet files" in res.broken[0].reason
    res = R.load_results(tmp_path / "nope")
    assert res.summary.empty and res.broken[0].reason == "does not exist"


def test_group_summary_median_min_max_and_failed_excluded(tmp_path: Path) -> None:
    for rep, span in enumerate((1.0, 3.0, 2.0)):
        write(records([task(0, "worker-0", 0, span, planned=1)], n_workers=1, repeat=rep),
              tmp_path)
    write(records([task(0, "worker-0", 0, 100.0, planned=1)], n_workers=1, repeat=3),
          tmp_path, status=schema.TRIAL_FAILED, error="x")
    g = R.group_summary(R.load_results(tmp_path).summary)
    assert len(g) == 1
    row = g.iloc[0]
    assert (row["n_trials"], row["n_failed"]) == (4, 1)
    assert (row["makespan_s_median"], row["makespan_s_min"], row["makespan_s_max"]) == (
        pytest.approx(2.0), pytest.approx(1.0), pytest.approx(3.0))


def test_variant_separates_parameter_sets_in_one_group(tmp_path: Path) -> None:
    for n_long, tid in ((12, "serial_a"), (25, "serial_b")):
        df = records([task(0, "w", 0, 1)], scheduler="serial", n_workers=1, trial_id=tid)
        write(df, tmp_path, params={"n_long": n_long, "n_tasks": 50})
    s = R.load_results(tmp_path).summary
    assert sorted(s["params_variant"]) == ["n_long=12", "n_long=25"]
    assert len(R.group_summary(s)) == 2


def test_samples_are_kept_per_trial(tmp_path: Path) -> None:
    write(records([task(0, "worker-0", 0, 1), task(1, "worker-0", 1.5, 2),
                   task(2, "worker-1", 0, 2)], n_workers=3), tmp_path)
    res = R.load_results(tmp_path)
    sample = res.samples[res.summary["source"].iloc[0]]
    assert np.allclose(sample.gaps_s, [0.5])
    assert sample.tasks_per_worker.tolist() == [0, 1, 2]
    assert len(res.records(res.summary["source"].iloc[0])) == 3


def test_other_writers_timestamp_types(tmp_path: Path) -> None:
    df = records([task(0, "w", 0.0, 1.0), task(1, "w", 1.25, 2.0)], n_workers=1)
    as_float = df.assign(**{c: df[c].astype("float64") for c in
                            ("submit_ns", "start_ns", "end_ns", "receive_ns")})
    assert M.trial_metrics(as_float)["max_gap_s"] == pytest.approx(0.25, abs=1e-6)
    as_text = df.assign(start_ns=["soon", "later"])
    write_bare(as_text, tmp_path / "e" / "text.parquet")
    res = R.load_results(tmp_path)
    assert res.summary.empty
    assert "start_ns is not numeric" in res.broken[0].reason


def test_record_file_filter_matches_schema(tmp_path: Path) -> None:
    (tmp_path / "a.parquet").touch()
    assert R.find_record_files(tmp_path) == [tmp_path / "a.parquet"]
    assert schema.is_record_file(tmp_path / "a.parquet")


def test_sleep_accuracy_per_trial() -> None:
    """In-task duration minus planned, over sleep tasks only: median and 95th percentile."""
    import pandas as pd

    from research.analysis.results import sleep_accuracy

    ms = 1_000_000
    part = pd.DataFrame({
        "body": ["sleep"] * 4 + ["cpu"],
        "planned_s": [0.01, 0.01, 0.01, 0.01, 0.01],
        "start_ns": pd.array([0, 0, 0, 0, 0], dtype="Int64"),
        "end_ns": pd.array([10 * ms + 100_000, 10 * ms + 200_000, 10 * ms + 300_000,
                            10 * ms + 400_000, 50 * ms], dtype="Int64"),
    })
    acc = sleep_accuracy(part)
    assert acc["body"] == "sleep"
    assert acc["sleep_error_median_s"] == pytest.approx(250e-6, abs=1e-9)
    assert 300e-6 < acc["sleep_error_p95_s"] <= 400e-6
    none = sleep_accuracy(part[part["body"] == "cpu"])
    assert none["body"] == "cpu" and math.isnan(none["sleep_error_median_s"])
