"""The sweep end to end through the CLI, on the standard-library schedulers: records, metadata,
resume, --force, failing tasks, and Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from research import config, schema
from research.cli import main
from research.runner import read_cluster_file

STDLIB = ["serial", "threads", "mp-map", "mp-dynamic", "futures"]


def _cfg(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _read_all(out: Path) -> pd.DataFrame:
    files = [p for p in out.rglob("*.parquet") if schema.is_record_file(p)]
    return pd.concat([schema.read_trial(p) for p in files], ignore_index=True)


def test_example_config_loads_as_written(repo: Path) -> None:
    exp = config.load(repo / "experiments" / "extra" / "example.toml")
    # 4 parallel schedulers x 2 workloads x 2 worker counts x 2 repeats, plus serial:
    # its rand trials are the same at 2 and 4 workers, its worst trials are not (n_long differs).
    assert len(exp.trials) == 4 * 2 * 2 * 2 + 2 + 4


def test_unseen_config_records_are_right(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, f"""
        [experiment]
        name = "unseen"
        n_workers = [3]
        schedulers = {STDLIB!r}
        [workloads.trace]
        shape = "explicit"
        durations_s = [0.12, 0.0, 0.05, 0.2, 0.01, 0.07, 0.03]
        fail_ids = [2]
        [workloads.expo]
        shape = "random"
        distribution = "exponential"
        mean = 1.0
        unit_s = 0.02
        n_tasks = 11
        seed = 7
        [workloads.primes]
        shape = "primes"
        numbers = [97, 91, 1000003]
        schedulers = ["serial", "futures"]
        [scheduler_options.mp-map]
        chunksize = 2
        """)
    out = tmp_path / "res"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    df = _read_all(out)
    assert set(df.columns) >= set(schema.COLUMNS)
    per_trial = df.groupby("trial_id").size()
    sizes = {(s, w) for s, w in df.groupby(["scheduler", "workload"]).size().index}
    assert len(sizes) == 5 * 2 + 2 and len(per_trial) == 12
    trace = df[df.workload == "trace"]
    assert (trace.groupby("scheduler").size() == 7).all()
    assert set(trace[trace.status == "error"].task_id) == {2}
    assert (trace[trace.task_id == 2].error.str.contains("InjectedFailure")).all()
    ok = df[df.status == "ok"]
    assert (ok.submit_ns <= ok.start_ns).all() and (ok.end_ns <= ok.receive_ns).all()
    assert (df.n_workers == df.scheduler.map(lambda s: 1 if s == "serial" else 3)).all()
    primes = df[df.workload == "primes"].sort_values(["scheduler", "task_id"])
    assert primes.result.tolist() == ["True", "False", "True"] * 2
    assert primes.planned_s.isna().all()
    expo = df[(df.workload == "expo") & (df.scheduler == "serial")].sort_values("task_id")
    took = (expo.end_ns - expo.start_ns) / 1e9
    assert ((took - expo.planned_s) > -1e-3).all() and ((took - expo.planned_s) < 0.25).all()

    f = next(p for p in out.rglob("mp-map_trace*.parquet") if schema.is_record_file(p))
    meta = schema.read_metadata(f)
    assert meta["schema_version"] == schema.SCHEMA_VERSION
    assert meta["trial"]["options"]["chunksize"] == 2
    assert meta["trial"]["trial_status"] == "ok"
    assert meta["trial"]["cluster"]["startup_s"] >= 0
    # Shutdown seconds are known only after the trial file was written: the cluster file.
    assert meta["trial"]["cluster"]["shutdown_s"] is None
    cluster = read_cluster_file(f, meta["trial"]["cluster"]["cluster_id"])
    assert cluster is not None and cluster["shutdown_s"] >= 0
    assert meta["system"]["cpu_count"] == os.cpu_count()
    assert "python_version" in meta["system"] and "pandas" in meta["system"]["libraries"]
    assert "[workloads.trace]" in meta["config"]


def test_rerun_skips_and_force_redoes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = _cfg(tmp_path, """
        [experiment]
        name = "resume"
        repeats = 2
        n_workers = 2
        schedulers = ["threads", "mp-dynamic"]
        [workloads.u]
        shape = "uniform"
        n_tasks = 4
        duration_s = 0.01
        """)
    out = tmp_path / "res"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    first = {p: p.stat().st_mtime_ns for p in (out / "resume").glob("*.parquet")}
    assert len(first) == 4
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert "wrote 0 trial file(s), skipped 4" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (out / "resume").glob("*.parquet")} == first
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--force"]) == 0
    assert len(list((out / "resume" / ".superseded").glob("*.parquet"))) == 4  # kept, not lost
    assert len(list((out / "resume").glob("*.parquet"))) == 4


def _threads_u(name: str, n_tasks: int, more: str = "") -> str:
    """A config of experiment ``name``: threads on 2 workers, once, workload ``u`` of
    ``n_tasks`` 1 ms sleeps, and the workload tables in ``more``."""
    return f"""
        [experiment]
        name = "{name}"
        repeats = 1
        n_workers = 2
        schedulers = ["threads"]
        [workloads.u]
        shape = "uniform"
        n_tasks = {n_tasks}
        duration_s = 0.001
        """ + more


def test_a_trial_whose_config_changed_moves_its_old_file_aside(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A workload edited between two runs into one directory (the METG sweep's points went
    from 50 tasks to 200) gives its trials new ids: the old files of the same slot (experiment,
    scheduler, workload, workers, repeat) move to .superseded/, once the new one is written,
    so the study does not count both; another workload's files, and one whose name only
    starts alike, stay."""
    more = """
        [workloads.v]
        shape = "uniform"
        n_tasks = 2
        duration_s = 0.001
        [workloads.u_w2_r0]
        shape = "uniform"
        n_tasks = 2
        duration_s = 0.001
        """
    out = tmp_path / "res"
    assert main(["run", str(_cfg(tmp_path, _threads_u("edit", 4, more))), "--out", str(out),
                 "--no-progress"]) == 0
    before = {p.name for p in (out / "edit").glob("*.parquet")}
    assert len(before) == 3
    capsys.readouterr()
    assert main(["run", str(_cfg(tmp_path, _threads_u("edit", 6, more))), "--out", str(out),
                 "--no-progress"]) == 0
    said = capsys.readouterr()
    assert "wrote 1 trial file(s), skipped 2" in said.err
    assert "moved 1 trial file(s) of an earlier definition" in said.out + said.err
    after = {p.name for p in (out / "edit").glob("*.parquet")}
    gone = before - after
    assert len(gone) == 1 and next(iter(gone)).startswith("threads_u_w2_r0_")
    assert len(after) == 3 and before - gone <= after  # v and u_w2_r0 untouched
    moved = list((out / "edit" / ".superseded").glob("threads_u_w2_r0_*.parquet"))
    assert len(moved) == 1  # kept, not lost
    assert len(pd.read_parquet(moved[0])) == 4
    new = [p for p in (out / "edit").glob("threads_u_w2_r0_*.parquet")
           if p.name not in before]
    assert len(new) == 1 and len(pd.read_parquet(new[0])) == 6


def test_two_trials_of_one_run_in_one_slot_keep_both_files(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``serial`` on 2 and on 4 workers runs on 1 both times, and the worst case's tasks differ
    with the count: two trials of one run whose names differ only in the key. Neither is an
    earlier definition of the other; a second run skips both and moves nothing."""
    cfg = _cfg(tmp_path, """
        [experiment]
        name = "twin"
        repeats = 1
        n_workers = [2, 4]
        schedulers = ["serial"]
        [workloads.worst]
        shape = "worst_case"
        n_tasks = 8
        long_s = 0.004
        short_s = 0.001
        """)
    out = tmp_path / "res"
    for _ in range(2):
        assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
        assert len(list((out / "twin").glob("serial_worst_w1_r0_*.parquet"))) == 2
    said = capsys.readouterr()
    assert "wrote 0 trial file(s), skipped 2" in said.err
    assert "moved" not in said.out + said.err
    assert not (out / "twin" / ".superseded").exists()


def test_an_earlier_definition_left_by_a_killed_run_is_moved_on_the_next(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A run killed after writing a trial and before moving its earlier definition aside:
    the next run skips the trial as done and moves the old file (and its witness) then."""
    out = tmp_path / "res"
    assert main(["run", str(_cfg(tmp_path, _threads_u("kill", 2))), "--out", str(out),
                 "--no-progress"]) == 0
    (old,) = (out / "kill").glob("*.parquet")
    keep = tmp_path / old.name
    keep.write_bytes(old.read_bytes())
    assert main(["run", str(_cfg(tmp_path, _threads_u("kill", 3))), "--out", str(out),
                 "--no-progress"]) == 0
    assert not old.exists()
    # As if the run had died before the move: the old file, and a witness beside it.
    keep.replace(old)
    witness = old.with_name(old.stem + schema.NATIVE_SUFFIX)
    witness.write_bytes(b"")
    capsys.readouterr()
    assert main(["run", str(_cfg(tmp_path, _threads_u("kill", 3))), "--out", str(out),
                 "--no-progress"]) == 0
    said = capsys.readouterr()
    assert "wrote 0 trial file(s), skipped 1" in said.err
    assert "moved 1 trial file(s) of an earlier definition" in said.out + said.err
    assert not old.exists() and not witness.exists()
    moved = list((out / "kill" / ".superseded").iterdir())
    assert sum(p.name.endswith(schema.NATIVE_SUFFIX) for p in moved) == 1
    assert len(list((out / "kill").glob("*.parquet"))) == 1


def test_replaced_by_matches_the_slot_and_a_key_only(tmp_path: Path) -> None:
    """Only ``<label>_<workload>_w<n>_r<repeat>_<10 hex>.parquet`` beside the trial's own file:
    not its witness, not another workload whose name starts alike, not a key of another
    length or case, not what is in .superseded/ already."""
    from research.runner import replaced_by

    (spec,) = config.load(_cfg(tmp_path, _threads_u("names", 2))).trials
    folder = spec.path(tmp_path).parent
    (folder / ".superseded").mkdir(parents=True)
    prefix = "threads_u_w2_r0_"
    earlier = folder / f"{prefix}0123456789.parquet"
    others = [f"{prefix}0123456789{schema.NATIVE_SUFFIX}", f"{prefix}0123456789a.parquet",
              f"{prefix}ABCDEF0123.parquet", "threads_u_w2_r0_w2_r0_0123456789.parquet",
              "threads_u_w2_r1_0123456789.parquet", "threads_v_w2_r0_0123456789.parquet",
              spec.path(tmp_path).name]
    for name in [earlier.name, *others]:
        (folder / name).write_bytes(b"")
    (folder / ".superseded" / f"{prefix}fedcba9876.parquet").write_bytes(b"")
    assert replaced_by(spec, tmp_path) == [earlier]


@pytest.mark.slow
def test_ctrl_c_shuts_down_keeps_finished_trials_and_resumes(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, """
        [experiment]
        name = "intr"
        repeats = 6
        n_workers = 2
        schedulers = ["mp-dynamic"]
        [workloads.u]
        shape = "uniform"
        n_tasks = 4
        duration_s = 0.5
        """)
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "research", "run", str(cfg), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    ps = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(ps.children(recursive=True)) < 2:
        time.sleep(0.1)
    time.sleep(2.5)  # into the third trial of six
    children = ps.children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, alive
    done = list((out / "intr").glob("*.parquet"))
    assert 1 <= len(done) < 6
    assert not list(out.rglob("*.tmp"))
    for p in done:  # every file that exists is complete
        assert len(schema.read_trial(p)) == 4
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    assert f"skipped {len(done)}" in res.stderr
    assert len(list((out / "intr").glob("*.parquet"))) == 6


@pytest.mark.slow
def test_hung_and_crashed_trials_fail_and_the_sweep_goes_on(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, """
        [experiment]
        name = "faults"
        n_workers = 2
        schedulers = ["mp-map", "mp-dynamic", "futures"]
        trial_timeout_s = 2
        [workloads.hang]
        shape = "explicit"
        durations_s = [60.0, 0.1, 0.1]
        [workloads.crash]
        shape = "explicit"
        durations_s = [0.1, 0.1, 0.1, 0.1]
        crash_ids = [1]
        [workloads.fine]
        shape = "uniform"
        n_tasks = 4
        duration_s = 0.05
        """)
    out = tmp_path / "res"
    t0 = time.monotonic()
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert time.monotonic() - t0 < 90  # 6 faulty trials of at most 2 s each, plus restarts
    status = {}
    for p in (out / "faults").glob("*.parquet"):
        meta = schema.read_metadata(p)["trial"]
        status[(meta["scheduler"], meta["workload"])] = (meta["trial_status"], meta["trial_error"])
        rows = schema.read_trial(p)
        assert len(rows) == 3 if meta["workload"] == "hang" else 4
        if meta["workload"] == "hang":
            assert (rows[rows.task_id == 0].status == "error").all()
    for sched in ("mp-map", "mp-dynamic", "futures"):
        assert status[(sched, "hang")][0] == "failed" and "timeout" in status[(sched, "hang")][1]
        assert status[(sched, "crash")][0] == "failed"
        assert status[(sched, "fine")] == ("ok", None)  # the cluster was restarted
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert len(list((out / "faults" / ".superseded").glob("*.parquet"))) == 6  # failed: retried


# -- the analysis commands (synthetic records, no scheduler runs) ------------------------------


def test_every_command_is_listed() -> None:
    from research.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"run", "list", "talk-primes", "report", "figures", "claims",
                                "trace", "bench", "calibrate", "predict", "clean"}


def test_predict_prints_a_config_without_running_it(capsys: pytest.CaptureFixture[str]) -> None:
    from research.cli import main

    assert main(["predict", "experiments/granularity.toml"]) == 0
    out, err = capsys.readouterr()
    assert "shipped defaults" in err
    lines = [ln for ln in out.splitlines()[1:] if ln.strip()]
    from research import config

    assert len(lines) == len(config.load("experiments/granularity.toml").trials)
    assert "ipp-direct" in out and "blocks" in out and "ray-pool" in out
    assert main(["predict", "no-such.toml"]) == 2


def test_the_holdout_configs_are_ones_the_simulator_never_saw(repo: Path) -> None:
    """experiments/extra/holdout*.toml (`make holdout`) share no worker count with the trials
    the shipped calibration was fitted on (its `cores` are that machine's, not this one's) and
    no workload shape with the studies it is fitted from (all equal tasks), each runs every
    scheduler of the default suite, and every trial of them is predicted by a fitted policy."""
    import re

    from research import config
    from research.simulate import calibration
    from research.simulate.predict import predict_config

    shipped = calibration.load()
    seen_workers = {int(m.group(1)) for name in shipped.schedulers
                    for tid in shipped.trials(name) if (m := re.search(r"_w(\d+)_r\d+_", tid))}
    assert seen_workers and {2, 4} <= seen_workers
    fitted = [config.load(repo / "experiments" / f"{s}.toml")
              for s in calibration.CALIBRATION_STUDIES]
    seen_shapes = {(t.shape, t.params.get("distribution"), t.params.get("order"))
                   for e in fitted for t in e.trials}
    suite = {t.label for p in (repo / "experiments").glob("*.toml")
             for t in config.load(p).trials if "[" not in t.label and t.label != "serial"}
    paths = sorted((repo / "experiments" / "extra").glob("holdout*.toml"))
    assert [p.name for p in paths] == ["holdout.toml", "holdout_b.toml"]
    for path in paths:
        hold = config.load(path)
        assert {t.n_workers for t in hold.trials}.isdisjoint(seen_workers), path.name
        assert not {(t.shape, t.params.get("distribution"), t.params.get("order"))
                    for t in hold.trials} & seen_shapes, path.name
        assert {t.label for t in hold.trials} == suite, path.name
        pred = predict_config(str(path), shipped)
        assert len(pred) == len(hold.trials)
        assert not pred.policy.str.startswith("not modelled").any()
        assert (pred.predicted_makespan_s > 0).all() and (pred.costs == "fitted").all()


@pytest.mark.slow
def test_report_claims_figures_and_trace_commands(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    from research.analysis import claims

    from analysis_data import build_results_dir

    res = build_results_dir(tmp_path / "res")
    rep = tmp_path / "rep"
    assert main(["report", str(res), "--out", str(rep), "--max-timelines", "2"]) == 0
    err = capsys.readouterr().err
    assert "16 trial(s), 0 failed, 0 broken" in err
    # The verdicts follow, read back from the CSVs (research.analysis.headline).
    assert f"claims: none of {len(claims.CLAIMS)} checked (no trials of the studies" in err
    for name in ("index.html", "report.md", "summary.csv", "claims.csv"):
        assert (rep / name).stat().st_size > 0, name
    table = pd.read_csv(rep / "claims.csv")
    # This directory has none of the talk's studies: every claim is not run, with the reason.
    assert list(table["claim_id"]) == [c.id for c in claims.CLAIMS]
    assert set(table["verdict"]) == {claims.NOT_RUN} and table["note"].str.len().min() > 0

    assert main(["claims", str(res), "--out", str(tmp_path / "cl")]) == 0
    assert "C1" in capsys.readouterr().out
    assert (tmp_path / "cl" / "claims.csv").read_bytes() == (rep / "claims.csv").read_bytes()

    figs = tmp_path / "figs"
    assert main(["figures", str(res), "--out", str(figs), "--max-timelines", "2"]) == 0
    assert sorted(p.name for p in figs.iterdir()) == sorted(
        p.name for p in (rep / "figures").iterdir())

    out = tmp_path / "all.trace.json"
    assert main(["trace", str(res), "--out", str(out)]) == 0
    assert "task event(s)" in capsys.readouterr().err and out.stat().st_size > 0

    for cmd in ("report", "claims", "figures"):
        assert main([cmd, str(tmp_path / "absent")]) == 2, cmd
        assert "absent" in capsys.readouterr().err
    assert main(["trace", str(tmp_path / "absent")]) == 1


def test_bench_command(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    out_csv = tmp_path / "bench" / "overhead.csv"
    assert main(["bench", "--schedulers", "serial", "threads", "--tasks", "200",
                 "--repeats", "1", "--workers", "2", "--min-run-seconds", "0",
                 "--out", str(out_csv)]) == 0
    out = capsys.readouterr().out
    assert "task wrapper:" in out and "us per task" in out
    assert "serial" in out and "threads" in out and "harness_tasks_per_s" in out
    assert "verdict" in out and "rows meet the goal" in out
    # The same table, as a CSV and a markdown file saying how it was measured.
    table = pd.read_csv(out_csv)
    assert list(table.scheduler) == ["serial", "threads"]
    assert set(table.verdict) <= {"meets", "misses", "unclear (noise)"}
    assert (table.allowed_us >= 5.0).all() and (table.n_tasks == 200).all()
    md = out_csv.with_suffix(".md").read_text()
    assert "| serial |" in md and "max(5%" in md and "load average" in md


