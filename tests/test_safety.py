"""Run safety on real processes: trials on disk the moment they end, signals like Ctrl-C,
critical sections, leftovers, one run per directory, names, bounds, stale trials, and the
honest limits of in-process schedulers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from runs import (
    REPO,
    left_alive,
    left_in,
    signal_when,
    start_cli,
    start_run,
    trial_files,
    wait_for,
    write_cfg,
)

from research import config, guard, metadata, schema
from research.cli import main
from research.errors import ConfigError
from research.runner import CLUSTERS_DIR, SUPERSEDED_DIR, cleanup_tmp, read_cluster_file

#: Three trials of about 1.5 s each on a process pool (one cluster for all three).
SLOW_FUTURES = """
    [experiment]
    name = "slow"
    n_workers = 2
    repeats = 3
    schedulers = ["futures"]
    [workloads.u]
    shape = "uniform"
    n_tasks = 6
    duration_s = 0.5
    """


@pytest.mark.slow
def test_trial_file_at_once_and_cluster_file_at_shutdown(tmp_path: Path, no_leaks: None) -> None:
    cfg = write_cfg(tmp_path / "c.toml", SLOW_FUTURES.replace("repeats = 3", "repeats = 2"))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    files = trial_files(out)
    assert len(files) == 2
    metas = [schema.read_metadata(f)["trial"] for f in files]
    ids = {m["cluster"]["cluster_id"] for m in metas}
    assert len(ids) == 1 and all(m["cluster"]["shutdown_s"] is None for m in metas)
    cluster = read_cluster_file(files[0], ids.pop())
    assert cluster is not None and cluster["shutdown_s"] >= 0
    assert sorted(cluster["trial_ids"]) == sorted(m["trial_id"] for m in metas)
    assert (out / "slow" / CLUSTERS_DIR).is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_stop_signals_act_like_ctrl_c(tmp_path: Path, sig: signal.Signals) -> None:
    cfg = write_cfg(tmp_path / "c.toml", SLOW_FUTURES)
    out = tmp_path / "out"
    proc, token = start_run(cfg, out)
    err, kids = signal_when(proc, lambda: len(trial_files(out)) >= 1, sig, 60, 30)
    assert proc.returncode == 128 + sig, err
    assert f"interrupted by {sig.name}" in err
    assert "Traceback" not in err
    assert 1 <= len(trial_files(out)) < 3
    assert left_alive(token, kids, 10) == []


def test_critical_section_holds_a_signal_from_another_thread(tmp_path: Path) -> None:
    # The kernel may hand a process signal to any thread; here one is sent while the main
    # thread is inside a critical section, from a helper thread that does not block it.
    script = textwrap.dedent("""
        import os, signal, sys, threading, time
        from research import guard
        with guard.stop_signals():
            try:
                with guard.critical():
                    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
                    time.sleep(0.6)
                    print("section finished", flush=True)
            except guard.Interrupted as exc:
                print("raised after:", exc.name, flush=True)
    """)
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, timeout=30)
    assert res.stdout.splitlines() == ["section finished", "raised after: SIGINT"], res.stderr


def test_orphan_witness_does_not_block_a_rerun(tmp_path: Path, no_leaks: None) -> None:
    cfg = write_cfg(tmp_path / "c.toml", """
        [experiment]
        name = "orph"
        n_workers = 1
        schedulers = ["serial"]
        [workloads.e]
        shape = "explicit"
        durations_s = [0.0, 0.01]
        """)
    out = tmp_path / "out"
    spec = config.load(cfg).trials[0]
    native = spec.path(out).with_name(spec.path(out).stem + schema.NATIVE_SUFFIX)
    native.parent.mkdir(parents=True)
    native.write_bytes(b"left by a killed run")
    # serial has no native witness: the leftover must still be moved aside, not block.
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert spec.path(out).exists() and not native.exists()
    assert list((out / "orph" / SUPERSEDED_DIR).glob("*.orphan.*"))


def test_orphan_witness_with_a_native_writer(tmp_path: Path) -> None:
    from research.runner import Sweep, _Done

    spec = config.load(write_cfg(tmp_path / "c.toml", """
        [experiment]
        name = "orph"
        n_workers = 1
        schedulers = ["serial"]
        [workloads.e]
        shape = "explicit"
        durations_s = [0.0]
        """)).trials[0]
    out = tmp_path / "out"
    path = spec.path(out)
    native_path = path.with_name(path.stem + schema.NATIVE_SUFFIX)
    import pandas as pd

    native = pd.DataFrame({"task_id": [0], "worker": ["w"], "start_ns": [1], "end_ns": [2],
                           "source": ["x"]})
    rows = pd.DataFrame([{c: None for c in schema.COLUMNS}])
    sweep = Sweep(out, False, False, lambda s: None)
    schema.write_native(native, native_path, {}, {})  # what a killed run leaves
    sweep._write(_Done(spec, rows, {"trial_status": "ok"}, native), {})
    assert path.exists() and native_path.exists()


@pytest.mark.slow
def test_second_run_on_a_directory_is_refused_then_waits(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path / "c.toml", SLOW_FUTURES)
    out = tmp_path / "out"
    first, token = start_run(cfg, out)
    try:
        wait_for(lambda: (out / guard.LOCK_NAME).exists()
                 and guard.RunLock(out, "").holder().get("pid") == first.pid, 30, first)
        second = subprocess.run(
            [sys.executable, "-m", "research", "run", str(cfg), "--out", str(out),
             "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert f"in use by another run (pid {first.pid}" in second.stderr
        waited = subprocess.run(
            [sys.executable, "-m", "research", "run", str(cfg), "--out", str(out),
             "--no-progress", "--wait"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert first.wait(60) == 0
        assert waited.returncode == 0, waited.stderr
        assert "skipped 3" in waited.stderr  # it waited, then found the trial done
    finally:
        if first.poll() is None:
            first.kill()
    assert left_alive(token, [], 10) == []


def test_cleanup_removes_only_temp_files_of_gone_processes(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
        live = tmp_path / f".t.parquet.{sleeper.pid}.{time.time_ns()}.tmp"
        dead = tmp_path / f".t.parquet.{int(gone.stdout)}.{time.time_ns()}.tmp"
        live.write_text("x")
        dead.write_text("x")
        cleanup_tmp(tmp_path)
        assert live.exists() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


BASE = """
    [experiment]
    name = {name}
    n_workers = 1
    schedulers = ["serial"]
    [workloads.{wname}]
    shape = "explicit"
    durations_s = [0.0]
    """


@pytest.mark.parametrize("name", ['"../up"', '"a/b"', '".hidden"', '""', '"a\\u0000b"',
                                  f'"{"x" * 101}"', '"sp ace"'])
def test_bad_experiment_names_are_refused(tmp_path: Path, name: str) -> None:
    cfg = write_cfg(tmp_path / "c.toml", BASE.format(name=name, wname="ok"))
    with pytest.raises(ConfigError) as err:
        config.load(cfg)
    assert str(cfg) in str(err.value) and "'name'" in str(err.value)


@pytest.mark.parametrize("wname", ['".."', '".dot"', '"a/b"', f'"{"w" * 101}"'])
def test_bad_workload_names_are_refused(tmp_path: Path, wname: str) -> None:
    cfg = write_cfg(tmp_path / "c.toml", BASE.format(name='"ok"', wname=wname))
    with pytest.raises(ConfigError) as err:
        config.load(cfg)
    assert str(cfg) in str(err.value) and "workloads" in str(err.value)


def test_good_names_still_load(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path / "c.toml", BASE.format(name='"a.b-c_1"', wname='"w.1"'))
    assert len(config.load(cfg).trials) == 1


@pytest.mark.parametrize(("edit", "key"), [
    ('trial_timeout_s = inf', "trial_timeout_s"),
    ('trial_timeout_s = nan', "trial_timeout_s"),
    ('repeats = 1000000', "repeats"),
    ('n_workers = 100000', "n_workers"),
])
def test_bounds_are_checked_before_running(tmp_path: Path, edit: str, key: str) -> None:
    text = BASE.format(name='"b"', wname="w").replace('schedulers = ["serial"]',
                                                      'schedulers = ["futures"]')
    if edit.startswith("n_workers"):
        text = text.replace("n_workers = 1", edit)
    else:
        text = text.replace("n_workers = 1", f"n_workers = 1\n    {edit}")
    cfg = write_cfg(tmp_path / "c.toml", text)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        config.load(cfg)
    assert time.monotonic() - t0 < 5
    assert f"'{key}'" in str(err.value) and str(cfg) in str(err.value)


def test_too_many_tasks_are_refused(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path / "c.toml", """
        [experiment]
        name = "big"
        n_workers = 1
        schedulers = ["serial"]
        [workloads.u]
        shape = "uniform"
        n_tasks = 200000000
        duration_s = 0.0
        """)
    with pytest.raises(ConfigError, match="'n_tasks'.*GiB"):
        config.load(cfg)


def test_cpu_oversubscription_needs_consent(tmp_path: Path) -> None:
    cores = config.usable_cores()
    text = f"""
        [experiment]
        name = "over"
        n_workers = {cores + 1}
        schedulers = ["futures", "threads"]
        [workloads.u]
        shape = "uniform"
        n_tasks = 2
        duration_s = 0.01
        body = "cpu"
        """
    with pytest.raises(ConfigError, match="allow_oversubscribe"):
        config.load(write_cfg(tmp_path / "c.toml", text))
    text = text.replace('name = "over"', 'name = "over"\n        allow_oversubscribe = true')
    assert config.load(write_cfg(tmp_path / "c.toml", text)).trials


@pytest.mark.slow
def test_oversubscription_is_recorded_by_what_the_workers_are(tmp_path: Path,
                                                              no_leaks: None) -> None:
    """The runner's ``oversubscribed`` record follows ``Scheduler.traits`` under the trial's
    options: more CPU-bodied dask-local workers than cores oversubscribe them with processes
    (run with consent), not with threads, which share one interpreter's GIL."""
    many = config.usable_cores() + 1
    text = f"""
        [experiment]
        name = "over"
        n_workers = {many}
        allow_oversubscribe = true
        schedulers = ["dask-local"]
        [scheduler_options.dask-local]
        scheduler = ["processes", "threads"]
        [workloads.u]
        shape = "uniform"
        n_tasks = 4
        duration_s = 0.002
        body = "cpu"
        """
    out = tmp_path / "out"
    assert main(["run", str(write_cfg(tmp_path / "c.toml", text)), "--out", str(out),
                 "--no-progress"]) == 0
    seen = {}
    for f in trial_files(out):
        trial = schema.read_metadata(f)["trial"]
        seen[trial["options"]["scheduler"]] = trial["oversubscribed"]
    assert seen == {"processes": True, "threads": False}


def test_config_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b'[experiment]\nname = "caf\xe9"\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8" in err and str(cfg) in err


def test_out_that_is_a_file_or_unwritable(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_cfg(tmp_path / "c.toml", BASE.format(name='"o"', wname="w"))
    afile = tmp_path / "afile"
    afile.write_text("")
    for out in (afile, afile / "below"):
        assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 2
        assert "'--out'" in capsys.readouterr().err
    assert afile.read_text() == ""


def test_resume_says_what_changed_and_reruns_stale(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_cfg(tmp_path / "c.toml", BASE.format(name='"st"', wname="w"))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    first = trial_files(out)
    assert len(first) == 1
    real = metadata.collect_git
    monkeypatch.setattr(metadata, "collect_git",
                        lambda cwd=None: {**real(cwd), "git_commit": "0" * 40})
    capsys.readouterr()
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    cap = capsys.readouterr()
    err = cap.out + cap.err  # the sweep's log lines go through tqdm.write (stdout)
    assert "1 existing trial(s) were measured by other code" in err and "git_commit" in err
    assert "skipped 1" in err
    assert main(["run", str(cfg), "--out", str(out), "--no-progress", "--rerun-stale"]) == 0
    err = capsys.readouterr().err
    assert "wrote 1 trial file(s)" in err
    meta = schema.read_metadata(trial_files(out)[0])
    assert meta["system"]["git_commit"] == "0" * 40
    assert list((out / "st" / SUPERSEDED_DIR).glob("*.parquet"))


def test_hung_thread_does_not_keep_the_run_from_exiting(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path / "c.toml", """
        [experiment]
        name = "hang"
        n_workers = 1
        schedulers = ["threads"]
        trial_timeout_s = 1
        [workloads.e]
        shape = "explicit"
        durations_s = [60.0]
        """)
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "research", "run", str(cfg), "--out",
                          str(tmp_path / "o"), "--no-progress"], cwd=REPO, capture_output=True,
                         text=True, timeout=50)
    assert time.monotonic() - t0 < 30, res.stderr
    assert "timeout after 1 s" in res.stderr


def test_list_states_the_limits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    limited = [lines[i - 1].split()[0] for i, ln in enumerate(lines)
               if "cannot stop a hung task" in ln]
    assert limited == ["serial", "threads"]


def test_clean_stops_what_a_results_directory_knows(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    token = "cleantest" + str(os.getpid())
    guard_env = {**os.environ, guard.TOKEN_ENV: token}
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            env=guard_env, start_new_session=True)
    out.mkdir()
    (out / guard.RUNS_NAME).write_text(json.dumps({"pid": 1, "token": token}) + "\n")
    try:
        assert main(["clean", str(out)]) == 0
        assert left.wait(10) is not None
        assert f"stopped {left.pid}" in capsys.readouterr().out
        assert main(["clean", str(out)]) == 0
        assert "nothing to stop" in capsys.readouterr().out
    finally:
        if left.poll() is None:
            left.kill()


def test_a_task_cut_short_by_a_stop_signal_is_not_reported_again(
        caplog: pytest.LogCaptureFixture) -> None:
    import asyncio
    import gc
    import logging

    def cut_short() -> None:  # as ipyparallel's cluster start is, in a task on this thread
        async def step() -> None:
            raise guard.Interrupted(signal.SIGTERM)

        loop = asyncio.new_event_loop()
        raised = False
        try:
            loop.run_until_complete(loop.create_task(step()))  # a task of its own, unconsumed
        except guard.Interrupted:  # not kept: its traceback holds the task
            raised = True
        finally:
            loop.close()
        assert raised
        gc.collect()

    logging.getLogger("asyncio").removeFilter(guard._QUIET)
    cut_short()
    assert "never retrieved" in caplog.text  # the control: asyncio reports it
    caplog.clear()
    with guard.stop_signals():
        cut_short()
    assert "never retrieved" not in caplog.text


def test_a_stop_signal_waits_for_a_shutdown() -> None:
    # bench and talk-primes shut clusters down through Scheduler.shutdown alone (the runner
    # adds its own critical section): a signal cut short there left the processes running.
    from research.schedulers.serial import Serial

    done: list[str] = []

    class Slow(Serial):
        def _shutdown(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the signal arrives here
            done.append("shut down")

    with guard.stop_signals(), pytest.raises(guard.Interrupted), Slow(1):
        pass
    assert done == ["shut down"]

def test_stop_orphans_stops_what_left_the_tree_only(capsys: pytest.CaptureFixture[str]) -> None:
    token = f"tok-orphans-{os.getpid()}"
    env = {**os.environ, guard.TOKEN_ENV: token}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    # A grandchild whose parent exits at once: re-parented to init, out of this process's tree.
    code = ("import subprocess, sys; print(subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)'], stdout=subprocess.DEVNULL, "
            "stderr=subprocess.DEVNULL).pid)")
    orphan = int(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True, check=True).stdout)
    try:
        stopped = guard.stop_orphans(token)
        assert [int(line.split()[0]) for line in stopped] == [orphan]
        assert not guard.pid_alive(orphan) and child.poll() is None  # a child is its owner's
        assert "stopped 1 process(es) of this run that its shutdown missed" in \
            capsys.readouterr().err
        assert guard.stop_orphans(token) == []
    finally:
        child.kill()
        child.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGKILL)


# -- the run's own temp dir --------------------------------------------------------------------
def test_a_run_temp_dir_is_the_tmpdir_of_what_it_starts(short_tmp: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(short_tmp))
    monkeypatch.delenv("TMPDIR", raising=False)
    temp = guard.RunTemp("tok-live")
    path = temp.create()
    assert path.parent == short_tmp and len(str(path)) <= guard.TEMP_MAX_CHARS
    outside = short_tmp / "outside"  # a short path for unix sockets, made outside the run's dir
    outside.mkdir()
    with temp.active():
        assert os.environ["TMPDIR"] == str(path) and guard.run_temp_dir() == path
        inner = guard.RunTemp("tok-inner")
        inner.create()
        with inner.active():  # a run inside a run: the outer one's dir comes back after it
            assert guard.run_temp_dir() == inner.path
        inner.remove()
        assert os.environ["TMPDIR"] == str(path) and guard.run_temp_dir() == path
        assert tempfile.gettempdir() == str(short_tmp)  # this process's own stays where it was
        guard.note_outside_temp(outside)
        subprocess.run([sys.executable, "-c", "import tempfile; tempfile.mkdtemp(prefix='kid-')"],
                       check=True)
        assert [p.name[:4] for p in path.glob("kid-*")] == ["kid-"]
        os.utime(path / guard.TEMP_LOCK, (0, 0))  # old, but its run lives: never swept
        assert guard.sweep_temp_dirs() == []
    assert "TMPDIR" not in os.environ and guard.run_temp_dir() is None
    temp.remove()
    assert not path.exists() and outside.is_dir()  # the run removes its own as it shuts down
    # A run that died: the watchdog or a sweep removes the dirs it noted, with its temp dir.
    dead = guard.RunTemp("tok-dead")
    dead_path = dead.create()
    dead.also_remove(outside)
    guard.remove_temp_dir(dead_path)
    assert not dead_path.exists() and not outside.exists()
    dead.remove()


def test_a_run_temp_dir_stays_short(tmp_path: Path, short_tmp: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    long = tmp_path / ("t" * 40)  # unix sockets under it would pass 107 bytes
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    assert guard.temp_base() == "/tmp"
    monkeypatch.setattr(tempfile, "tempdir", str(short_tmp))
    assert guard.temp_base() == str(short_tmp)


def test_a_cluster_dir_made_outside_a_run_is_swept_once_its_process_is_gone(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook's ``with Celery(2) as s`` keeps its state in an own temp dir: a kill of the
    notebook leaves it, with nothing running to remove it. It is locked while its process
    lives, and the next run's sweep (or ``research clean``) takes it once that is gone."""
    from research.schedulers.cluster import OwnedDir

    # The owner dies at once; a server it started (its own session: it outlives the owner, as
    # Parsl's worker pool does until its heartbeats time out) still has TMPDIR in the dir.
    code = ("import os, subprocess, sys; from research.schedulers.cluster import OwnedDir; "
            "p = OwnedDir().make(None, 'x', 'research-x-'); "
            "s = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
            "env={**os.environ, 'TMPDIR': str(p)}, start_new_session=True, "
            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
            "print(p, s.pid, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code], text=True, cwd=REPO, check=True,
                         capture_output=True, env={**os.environ, "TMPDIR": str(short_tmp)})
    dead, server_pid = Path(out.stdout.split()[0]), int(out.stdout.split()[1])
    server = psutil.Process(server_pid)
    live = OwnedDir()
    live_dir = live.make(None, "y", "research-y-", tmp_root=str(short_tmp))
    other = OwnedDir()  # not named research-*: none of the sweep's business
    other_dir = other.make(None, "ray", "ray-", tmp_root=str(short_tmp))
    try:
        assert dead.parent == short_tmp and (dead / guard.TEMP_LOCK).is_file()
        assert guard.sweep_temp_dirs(str(short_tmp)) == []  # too young
        monkeypatch.setattr(guard, "SWEEP_MIN_AGE_S", 0.0)
        assert guard.sweep_temp_dirs(str(short_tmp)) == []  # its server still works there
        server.kill()
        server.wait(10)
        assert guard.sweep_temp_dirs(str(short_tmp)) == [dead]
        assert not dead.exists() and live_dir.is_dir() and other_dir.is_dir()
        live.remove()
        assert not live_dir.exists() and guard.sweep_temp_dirs(str(short_tmp)) == []
    finally:
        with contextlib.suppress(psutil.Error):
            server.kill()
        live.remove()
        other.remove()


def test_sweep_and_clean_remove_only_temp_dirs_of_runs_that_are_gone(
        tmp_path: Path, short_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(short_tmp))
    code = ("import sys, time; from research import guard; "
            "t = guard.RunTemp(sys.argv[1]); print(t.create(), flush=True); time.sleep(60)")

    def make(token: str) -> tuple[subprocess.Popen[str], Path]:
        env = {**os.environ, "TMPDIR": str(short_tmp)}
        proc = subprocess.Popen([sys.executable, "-c", code, token], text=True, cwd=REPO,
                                stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        return proc, Path(proc.stdout.readline().strip())

    dead, dead_dir = make("tok-dead")
    live, live_dir = make("tok-live")
    # A run that died, but one of its processes (carrying its token) is still being stopped.
    lingering = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 env={**os.environ, guard.TOKEN_ENV: "tok-lingering"})
    linger_proc, linger_dir = make("tok-lingering")
    try:
        for proc in (dead, linger_proc):
            proc.kill()
            proc.wait(10)
        (dead_dir / "pymp-x").mkdir()
        assert guard.sweep_temp_dirs() == []  # too young: a run may be making its own
        for d in (dead_dir, live_dir, linger_dir):
            os.utime(d / guard.TEMP_LOCK, (0, 0))
        assert main(["clean", str(tmp_path / "out")]) == 0
        assert (f"removed {dead_dir} (temp dir of a run or a cluster whose process is gone)"
                in capsys.readouterr().out)
        assert not dead_dir.exists() and live_dir.is_dir() and linger_dir.is_dir()
        lingering.kill()
        lingering.wait(10)
        assert guard.sweep_temp_dirs() == [linger_dir]
        assert live_dir.is_dir()
    finally:
        for proc in (dead, live, lingering, linger_proc):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["parsl", "celery"])
def test_a_run_leaves_nothing_in_the_temp_dir(tmp_path: Path, short_tmp: Path, scheduler: str
                                              ) -> None:
    # These two's workers are terminated, and leave multiprocessing's pymp-* dirs behind.
    cfg = write_cfg(tmp_path / "c.toml", f"""
        [experiment]
        name = "tidy"
        n_workers = 2
        schedulers = ["{scheduler}"]
        [workloads.u]
        shape = "uniform"
        n_tasks = 4
        duration_s = 0.01
        """)
    tmp = short_tmp
    proc, token = start_run(cfg, tmp_path / "out", tmpdir=tmp)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0 and ", 0 failed" in err, err
    assert left_alive(token, [], 10) == []
    assert left_in(tmp, 0) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_bench_stops_its_clusters_on_a_signal(short_tmp: Path, sig: signal.Signals) -> None:
    tmp = short_tmp
    proc, token = start_cli(["bench", "--schedulers", "ipp-lb", "--no-out"], tmpdir=tmp)
    # Once bench and three processes of its cluster (the controller, engines) carry the token.
    err, kids = signal_when(proc, lambda: len(guard.processes_with_token(token)) >= 4, sig)
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + sig, err
        assert "interrupted by SIGTERM" in err and "Traceback" not in err
    assert left_alive(token, kids, 30) == []
    assert left_in(tmp, 30) == []


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["parsl", "celery"])
def test_a_cluster_used_directly_leaves_nothing_in_the_temp_dir(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch, scheduler: str) -> None:
    # Outside a run (a notebook's `with Celery(2) as s`), its processes' TMPDIR is the
    # cluster's own dir: the pymp-* dirs their terminated workers leave go with it.
    from research.schedulers import get_scheduler
    from research.tasks import Task

    monkeypatch.setenv("TMPDIR", str(short_tmp))  # what the processes it starts inherit
    with get_scheduler(scheduler)(2) as sched:
        sched.warm()
        out = sched.run([Task(i, "sleep", 0.01, 0.01) for i in range(4)], 60)
        assert out.error is None and len(out.outcomes) == 4
    assert left_in(short_tmp, 5) == []
