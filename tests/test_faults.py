"""Fault injection: SIGKILL of the run process (no handler runs) between trials and during a
trial, for each kind of cluster. The trials finished before the kill are on disk, nothing the
run started is alive 30 s later (the watchdog; pool workers also get PR_SET_PDEATHSIG), nothing
is left in its temp dir, and a rerun completes exactly the rest."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from runs import (
    descendants,
    left_alive,
    left_in,
    start_run,
    trial_files,
    wait_for,
    write_cfg,
)

from research import guard, schema

N_TRIALS = 4
N_TASKS = 4
#: Seconds the killed run's processes may take to disappear (the issue's bound).
GONE_S = 30


def _kill(proc: subprocess.Popen[str], token: str, tmp: Path) -> list[str]:
    """SIGKILL the run process alone; what it started and is still alive 30 s later, and what
    is left of it in its ``TMPDIR`` ``tmp`` and of the dirs its temp dir noted outside it
    (Ray's short socket dir, the run process's own pymp-* dir)."""
    noted = [Path(line) for f in tmp.glob(f"{guard.TEMP_PREFIX}*/{guard.TEMP_ALSO}")
             for line in f.read_text().splitlines() if line.strip()]
    kids = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    left = left_alive(token, kids, GONE_S) + left_in(tmp, GONE_S)
    return left + [str(p) for p in noted if p.exists()]


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["mp-dynamic", "futures", "ipp-lb", "dask", "ray"])
def test_sigkill_between_and_during_trials(tmp_path: Path, short_tmp: Path, scheduler: str
                                           ) -> None:
    cfg = write_cfg(tmp_path / "c.toml", f"""
        [experiment]
        name = "kill"
        n_workers = 2
        repeats = {N_TRIALS}
        schedulers = ["{scheduler}"]
        trial_timeout_s = 60
        [workloads.u]
        shape = "uniform"
        n_tasks = {N_TASKS}
        duration_s = 0.4
        """)
    out = tmp_path / "out"
    exp = out / "kill"
    tmp = short_tmp  # the runs' TMPDIR: what they leave behind, the watchdog removes

    # 1. Between trials: the moment the first trial file is there.
    proc, token = start_run(cfg, out, tmpdir=tmp)
    wait_for(lambda: len(trial_files(out)) >= 1, 120, proc)
    assert _kill(proc, token, tmp) == []
    first = trial_files(out)
    assert 1 <= len(first) < N_TRIALS

    # 2. During a trial: a rerun, killed while the trial after its first one runs.
    proc, token = start_run(cfg, out, tmpdir=tmp)
    wait_for(lambda: len(trial_files(out)) > len(first), 120, proc)
    time.sleep(0.5)  # warm-up done, tasks of the next trial running
    assert _kill(proc, token, tmp) == []
    second = trial_files(out)
    assert set(first) <= set(second) and len(second) < N_TRIALS, second

    # 3. The rerun completes exactly the rest.
    proc, token = start_run(cfg, out, tmpdir=tmp)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert f"wrote {N_TRIALS - len(second)} trial file(s), skipped {len(second)}" in err
    assert left_alive(token, [], 10) == []
    assert left_in(tmp, 0) == []
    done = trial_files(out)
    assert len(done) == N_TRIALS
    for path in done:  # every trial file is complete
        assert len(schema.read_trial(path)) == N_TASKS
        assert schema.read_metadata(path)["trial"]["trial_status"] == schema.TRIAL_OK
    assert not list(exp.glob("*.native.parquet")) or all(
        p.with_name(p.name.replace(schema.NATIVE_SUFFIX, ".parquet")).exists()
        for p in exp.glob("*" + schema.NATIVE_SUFFIX))


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["ipp-lb", "ray"])
def test_sigkill_during_a_shutdown(tmp_path: Path, short_tmp: Path, scheduler: str) -> None:
    # One trial: once its file is there, the run is shutting its cluster down (seconds for
    # these two), and the kill lands in the middle of it.
    cfg = write_cfg(tmp_path / "c.toml", f"""
        [experiment]
        name = "kill"
        n_workers = 2
        schedulers = ["{scheduler}"]
        trial_timeout_s = 60
        [workloads.u]
        shape = "uniform"
        n_tasks = {N_TASKS}
        duration_s = 0.1
        """)
    out = tmp_path / "out"
    tmp = short_tmp
    proc, token = start_run(cfg, out, tmpdir=tmp)
    wait_for(lambda: len(trial_files(out)) >= 1, 120, proc)
    assert proc.poll() is None, "the run ended before the kill: not during its shutdown"
    assert _kill(proc, token, tmp) == []
    (path,) = trial_files(out)
    assert len(schema.read_trial(path)) == N_TASKS
    assert schema.read_metadata(path)["trial"]["trial_status"] == schema.TRIAL_OK
