"""Figures: one bar per task in a single collection, colours by order, files for a sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from research import schema
from research.analysis import figures as F
from research.analysis import metrics as M
from research.analysis import results as R

from analysis_data import (
    build_results_dir,
    list_schedule,
    records,
    static_blocks,
    talk_worst_case,
    task,
    write,
)


def _bars(fig: F.Figure) -> list[PolyCollection]:
    return F.drawn_collection(fig)


def test_timeline_has_one_collection_with_one_bar_per_task() -> None:
    df = records(list_schedule(talk_worst_case(12), 12), scheduler="ipp-lb", n_workers=12)
    fig = F.timeline_figure(df)
    (coll,) = _bars(fig)
    assert len(coll.get_paths()) == 146
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Time (s)" and ax.get_ylabel() == "Worker"
    assert "ipp-lb" in ax.get_title() and "12 workers" in ax.get_title()
    assert "makespan 3.40 s" in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()][:3] == ["worker-0", "worker-1",
                                                               "worker-2"]
    # Vertical lines at the lower bound and the greedy schedule.
    xs = sorted(round(line.get_xdata()[0], 6) for line in ax.get_lines())
    assert xs == [round(38.8 / 12, 6), 3.4]


def test_bars_span_start_to_end_on_the_worker_row() -> None:
    df = records([task(0, "worker-0", 0.0, 1.0), task(1, "worker-1", 0.5, 2.0),
                  task(2, "worker-0", 1.25, 1.5)], n_workers=2)
    (coll,) = _bars(F.timeline_figure(df))
    boxes = [p.get_extents() for p in coll.get_paths()]
    spans = sorted((round(b.x0, 9), round(b.x1, 9), round((b.y0 + b.y1) / 2, 9)) for b in boxes)
    assert spans == [(0.0, 1.0, 0.0), (0.5, 2.0, 1.0), (1.25, 1.5, 0.0)]


def test_colour_is_the_order_within_the_worker() -> None:
    df = records(static_blocks([1.0] * 6, 2), n_workers=2)  # orders 0,1,2 on both workers
    (coll,) = _bars(F.timeline_figure(df))
    faces = coll.get_facecolors()
    times = M.task_times(df)
    order = times.loc[times["row"] >= 0, "order"].to_numpy()
    for k in range(3):
        same = faces[order == k]
        assert np.allclose(same, same[0])
    assert not np.allclose(faces[order == 0][0], faces[order == 2][0])
    # Sequential palette: later tasks lighter (the talk's reversed cubehelix).
    assert faces[order == 2][0][:3].sum() > faces[order == 0][0][:3].sum()


def test_failed_untimed_tasks_are_not_drawn_and_idle_workers_get_rows() -> None:
    err = schema.STATUS_ERROR
    df = records([task(0, "worker-0", 0, 1), task(1, None, None, None, status=err),
                  task(2, "worker-0", 1, 2, status=err, error="raised")], n_workers=3)
    fig = F.timeline_figure(df)
    (coll,) = _bars(fig)
    assert len(coll.get_paths()) == 2
    assert np.count_nonzero(coll.get_linewidths()) == 1  # red edge on the task that raised
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["worker-0", "(no task)", "(no task)"]


def test_all_failed_trial_draws_an_empty_timeline() -> None:
    df = records([task(0, None, None, None, status=schema.STATUS_ERROR)], n_workers=2)
    fig = F.timeline_figure(df)
    assert len(_bars(fig)[0].get_paths()) == 0
    assert "n/a" in fig.axes[0].get_title()


def test_paired_timeline_shares_the_time_axis() -> None:
    durations = talk_worst_case(4)
    direct = records(static_blocks(durations, 4), scheduler="ipp-direct", n_workers=4)
    lb = records(list_schedule(durations, 4), scheduler="ipp-lb", n_workers=4)
    fig = F.paired_timeline_figure(direct, lb)
    bars = _bars(fig)
    assert [len(c.get_paths()) for c in bars] == [len(durations), len(durations)]
    task_axes = [ax for ax in fig.axes if ax.collections and ax.get_ylabel() == "Worker"]
    assert len(task_axes) == 2
    assert task_axes[0].get_xlim() == task_axes[1].get_xlim()
    # Wide enough for the direct makespan: 4 long + 1 short task on the first worker.
    assert task_axes[0].get_xlim()[1] >= 4.2
    assert "ipp-direct" in task_axes[0].get_title() and "ipp-lb" in task_axes[1].get_title()


def test_large_trial_is_one_rasterized_collection(tmp_path: Path) -> None:
    n = F.RASTERIZE_ABOVE + 1000
    rng = np.random.default_rng(0)
    df = records(list_schedule(rng.uniform(0.001, 0.01, n).tolist(), 8), n_workers=8)
    fig = F.timeline_figure(df)
    (coll,) = _bars(fig)
    assert len(coll.get_paths()) == n and coll.get_rasterized()
    png, svg = F.save_figure(fig, tmp_path / "big", ["png", "svg"])
    assert png.stat().st_size > 0 and svg.stat().st_size < 2_000_000


@pytest.mark.slow
def test_draw_all_on_a_sweep(tmp_path: Path) -> None:
    res = R.load_results(build_results_dir(tmp_path / "res"))
    fs = F.draw_all(res, tmp_path / "fig", formats=("png",))
    assert fs.errors == []
    kinds = [f.kind for f in fs.figures]
    for kind in ("makespan", "tasks_per_worker", "latency", "sweep_workers"):
        assert kinds.count(kind) == 2, kind  # one per workload
    assert kinds.count("timeline") == 8  # first repeat of 2 workloads x 2 n x 2 schedulers
    paired = fs.of_kind("paired")
    # The talk's pair, at the largest worker count, first repeat, for each workload.
    assert [p.trials for p in paired] == [["ipp-direct_rand_w3_r0", "ipp-lb_rand_w3_r0"],
                                          ["ipp-direct_worst_w3_r0", "ipp-lb_worst_w3_r0"]]
    for f in fs.figures:
        assert all(p.exists() and p.stat().st_size > 1000 for p in f.files)


def test_timeline_cap_and_pair_choice(tmp_path: Path) -> None:
    res = R.load_results(build_results_dir(tmp_path))
    chosen, left = F.select_timelines(res.summary, max_timelines=3)
    assert len(chosen) == 3 and left == 5
    assert set(chosen["repeat"]) == {0}
    # Workloads take turns, largest worker count first.
    assert sorted(chosen["workload"]) == ["rand", "rand", "worst"]
    assert set(chosen["n_workers"]) == {3}
    pairs = F.select_pairs(res.summary)
    assert {(a["scheduler"], b["scheduler"], a["n_workers"]) for a, b in pairs} == {
        ("ipp-direct", "ipp-lb", 3)}
    assert F.select_pairs(res.summary, [("mp-map", "mp-dynamic")]) == []


def test_scheduler_colours_differ_and_survive_a_new_process() -> None:
    from research.schedulers import REGISTRY

    names = list(REGISTRY)[:10]  # the palette has ten colours
    assert len({F.scheduler_color(n) for n in names}) == len(names)
    # An unknown name's colour comes from crc32, not hash(): the same in another process.
    code = ("from research.analysis.figures import scheduler_color; "
            "print(scheduler_color('unknown-sched'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert done.stdout.strip() == F.scheduler_color("unknown-sched")


@pytest.mark.slow
def test_task_length_sweep_and_failed_only_results(tmp_path: Path) -> None:
    for wl, d in (("short", 0.01), ("long", 0.1)):
        for sched in ("ipp-direct", "ipp-lb"):
            df = records(list_schedule([d] * 8, 2), scheduler=sched, workload=wl, n_workers=2)
            write(df, tmp_path / "res", shape="uniform")
    fs = F.draw_all(R.load_results(tmp_path / "res"), tmp_path / "fig", formats=("png",),
                    max_timelines=0)
    assert fs.errors == []
    (sweep,) = fs.of_kind("sweep_tasklen")
    assert fs.in_section(F.SECTION_TASKLEN) == [sweep]
    kinds = {f.kind for f in fs.in_section(F.SECTION_WORKLOAD, "exp", "short")}
    assert kinds == {spec.kind for spec in F.WORKLOAD_FIGURES if spec.kind != "sweep_workers"}
    assert sweep.workload == "uniform" and sweep.files[0].exists()

    dead = records([task(0, None, None, None, status=schema.STATUS_ERROR)], n_workers=2)
    write(dead, tmp_path / "dead", status=schema.TRIAL_FAILED, error="boom")
    fs = F.draw_all(R.load_results(tmp_path / "dead"), tmp_path / "fig2", formats=("png",))
    assert fs.errors == [] and fs.of_kind("timeline") == []
    assert any("no task has start and end stamps" in n for n in fs.not_drawn)


@pytest.mark.slow
def test_two_processes_draw_and_read_what_one_does(tmp_path: Path, no_leaks: None) -> None:
    """Shared with a worker process, the files read and the figures drawn are the same, in
    the same order, byte for byte; no worker outlives the call."""
    src = build_results_dir(tmp_path / "res")
    one, two = R.load_results(src, n_jobs=1), R.load_results(src, n_jobs=2)
    assert one.summary.equals(two.summary) and list(one.samples) == list(two.samples)
    assert set(one.kept) == set(two.kept) == set(one.summary["source"])
    fs1 = F.draw_all(one, tmp_path / "fig1", formats=("png",), n_jobs=1)
    fs2 = F.draw_all(two, tmp_path / "fig2", formats=("png",), n_jobs=2)
    assert fs1.errors == fs2.errors == [] and len(fs1.figures) >= 12
    assert [(f.kind, f.title, f.trials, [p.name for p in f.files]) for f in fs1.figures] == [
        (f.kind, f.title, f.trials, [p.name for p in f.files]) for f in fs2.figures]
    for a, b in zip(fs1.figures, fs2.figures, strict=True):
        assert a.files[0].read_bytes() == b.files[0].read_bytes(), a.files[0].name


def test_the_command_lines_figure_kinds_are_the_figures() -> None:
    from research.analysis.figures import WORKLOAD_FIGURES
    from research.cli import FIGURE_KINDS

    assert tuple(s.kind for s in WORKLOAD_FIGURES) == FIGURE_KINDS
