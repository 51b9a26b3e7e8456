"""The shared cluster plumbing (research.schedulers.cluster), on real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from research.errors import ParamError
from research.schedulers.base import timeout_error
from research.schedulers.cluster import (
    ClusterProcesses,
    OwnedDir,
    check_worker_count,
    start_process,
    stop_process,
    stop_processes,
    usable_as_tmpdir,
)

# A parent that ignores SIGTERM, with a child of its own: the worst case for a bounded stop.
STUBBORN = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print('up', flush=True); time.sleep(60)")


def _wait_for_children(proc: psutil.Process, n: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 20
    while len(kids := proc.children(recursive=True)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return kids


def test_start_process_gets_its_own_group_and_stop_kills_the_whole_group(
        tmp_path: Path, no_leaks: None) -> None:
    log = tmp_path / "logs" / "server.log"
    proc = start_process([sys.executable, "-c", STUBBORN], env={"RESEARCH_X": "1"}, log=log)
    kids = _wait_for_children(psutil.Process(proc.pid), 1)
    assert len(kids) == 1
    assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
    t0 = time.monotonic()
    stop_process(proc, timeout_s=0.5)
    assert time.monotonic() - t0 < 8
    assert proc.returncode == -signal.SIGKILL  # it ignored SIGTERM: killed after the wait
    assert not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE for k in kids)
    deadline = time.monotonic() + 5
    while "up" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "up" in log.read_text()


def test_stop_processes_stops_several_in_parallel(no_leaks: None) -> None:
    procs = [start_process([sys.executable, "-c", STUBBORN]) for _ in range(3)]
    for p in procs:
        _wait_for_children(psutil.Process(p.pid), 1)
    t0 = time.monotonic()
    stop_processes(procs, timeout_s=1.0)
    # one shared wait, not one per process (each ignores SIGTERM and waits out the timeout)
    assert time.monotonic() - t0 < 1.0 * len(procs)
    assert all(p.returncode == -signal.SIGKILL for p in procs)


# A harness that starts a server with die_with_parent, says its pid, then waits to be killed.
HARNESS = ("import sys, time; from research.schedulers.cluster import start_process; "
           "p = start_process([sys.executable, '-c', 'import time; time.sleep(60)'], "
           "die_with_parent=sys.argv[1] == '1'); print(p.pid, flush=True); time.sleep(60)")


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_die_with_parent_takes_a_server_along_when_the_harness_is_killed() -> None:
    servers = {}
    for flag in ("1", "0"):
        harness = subprocess.Popen([sys.executable, "-c", HARNESS, flag], stdout=subprocess.PIPE,
                                   text=True)
        assert harness.stdout is not None
        servers[flag] = psutil.Process(int(harness.stdout.readline()))
        harness.kill()  # SIGKILL: no handler, no shutdown
        harness.wait(10)
    try:
        assert not servers["1"].is_running() or _gone_within(servers["1"], 10)
        assert servers["0"].is_running()  # without the option, it outlives the harness
    finally:
        with contextlib.suppress(psutil.Error):
            servers["0"].kill()


def _gone_within(proc: psutil.Process, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def test_cluster_processes_reaps_what_was_spawned_since_the_snapshot(no_leaks: None) -> None:
    older = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        procs = ClusterProcesses(match=lambda cmd: "sleep(60)" in cmd)
        procs.snapshot()
        ours = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.DEVNULL)
        _wait_for_children(psutil.Process(ours.pid), 1)
        found = {p.pid for p in procs.collect()}
        assert ours.pid in found and older.pid not in found
        t0 = time.monotonic()
        killed = procs.reap(timeout_s=0.5)
        assert time.monotonic() - t0 < 8
        assert ours.pid in {p.pid for p in killed}
        assert ours.wait(5) is not None  # reaped by the helper (zombies count as gone)
        assert older.poll() is None, "a process from before the snapshot is not the cluster's"
    finally:
        older.kill()
        older.wait()


def test_add_matching_finds_a_process_reparented_away_from_us(no_leaks: None) -> None:
    """A launcher's background job (Parsl's worker pool) is nobody's child here: found by a
    mark in its command line, with its children, and reaped."""
    mark = f"research-test-{uuid.uuid4().hex}"
    script = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " \
             f"'import time; time.sleep(60)', '{mark}-child']); time.sleep(60)"
    launcher = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "{script}" {mark} &'],
                              check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    assert launcher.returncode == 0  # the launcher is gone: the job is re-parented
    procs = ClusterProcesses()
    deadline = time.monotonic() + 20
    while len(procs.add_matching(lambda cmd: mark in cmd)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    found = procs.collect()
    assert len(found) == 2, found
    assert not {p.pid for p in found} & {p.pid for p in psutil.Process().children(True)}
    procs.reap(timeout_s=0.5)
    assert not [p for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_cluster_dir_is_a_tmpdir_only_when_set_and_short_enough() -> None:
    """Unix socket paths under a TMPDIR must fit in 107 bytes: at most 72 characters."""
    assert not usable_as_tmpdir(None) and not usable_as_tmpdir("")
    assert usable_as_tmpdir("/" + "a" * 71) and usable_as_tmpdir(Path("/" + "a" * 71))
    assert not usable_as_tmpdir("/" + "a" * 72)


def test_owned_dir_in_the_work_dir_or_an_own_temp_dir(tmp_path: Path) -> None:
    in_run = OwnedDir()
    path = in_run.make(tmp_path, "ipp")
    assert path == tmp_path.resolve() / "ipp" and path.is_dir() and not in_run.owned
    in_run.remove()
    assert path.is_dir(), "the run's work dir is the runner's to remove"

    too_long = OwnedDir()
    path = too_long.make(tmp_path / ("x" * 60), "ray", prefix="ray-", max_chars=40)
    assert too_long.owned and path.is_dir() and not path.is_relative_to(tmp_path)
    too_long.remove()
    assert not path.exists()
    too_long.remove()  # twice is fine


def test_worker_count_error_names_both_numbers() -> None:
    check_worker_count(3, 3, "the cluster at x")
    with pytest.raises(ParamError, match=r"the cluster at x has 2 CPU\(s\), but the sweep asks "
                                         r"for n_workers = 3 \(one CPU each\)") as err:
        check_worker_count(3, 2, "the cluster at x", "CPU(s)", "one CPU each")
    assert err.value.key == "n_workers"
    assert timeout_error(1.5) == "timeout after 1.5 s" and timeout_error(60) == "timeout after 60 s"
