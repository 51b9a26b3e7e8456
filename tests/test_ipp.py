"""ipyparallel adapters: DirectView blocks against load balancing, existing clusters, failures.

Cluster start-up is slow here (about 7 s), so the tests that need one share it: one existing
cluster (started by ``ipcluster`` as separate processes) for the whole module, and one CLI sweep
on local clusters that covers the worst case, the native witness and a crashing engine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
from dateutil.tz import tzlocal

from research import schema
from research.cli import main
from research.errors import ParamError
from research.schedulers import get_scheduler
from research.schedulers import ipp as ipp_adapter
from research.schedulers.cluster import is_running, reap
from research.schedulers.ipp import (
    IppDirect,
    IppLoadBalanced,
    blocks_of,
    connection_file,
    utc_ns,
)
from research.tasks import Task

from procs import scheduler_children

# The worst case for blocks, small: 2 long tasks first, then 7 short ones, on 2 engines.
# DirectView: engine 0 gets tasks 0-4 (9 % 2 = 1 extra) = 0.6 + 0.6 + 3 x 0.1 = 1.5 s, engine 1
# gets 0.4 s. Greedy (load balanced): one long task each, then the short ones: 1.0 s.
LONG_S, SHORT_S, N_TASKS, N_LONG = 0.6, 0.1, 9, 2
WORST_TOML = f"""
[workloads.worst]
shape = "worst_case"
n_tasks = {N_TASKS}
long_s = {LONG_S}
short_s = {SHORT_S}
n_long = {N_LONG}
"""


# -- without a cluster ---------------------------------------------------------------------
def test_blocks_are_ipyparallels_contiguous_partition() -> None:
    # The talk: 146 tasks on 12 engines; the first 146 % 12 = 2 engines get 13, the rest 12.
    blocks = blocks_of(list(range(146)), 12)
    assert [len(b) for b in blocks] == [13, 13] + [12] * 10
    assert blocks[0] == list(range(13)) and blocks[2] == list(range(26, 38))
    assert blocks_of(list(range(9)), 2) == [[0, 1, 2, 3, 4], [5, 6, 7, 8]]
    assert blocks_of([7], 3) == [[7]]  # engines without a task get no message
    assert blocks_of(list(range(5)), 5) == [[i] for i in range(5)]  # LB, chunksize 1


def test_metadata_datetimes_become_utc_ns() -> None:
    ns = 1_700_000_000_123_456_000
    utc = dt.datetime.fromtimestamp(ns // 10**9, dt.UTC).replace(microsecond=123_456)
    assert utc_ns(utc) == ns
    assert utc_ns(utc.astimezone(tzlocal())) == ns  # how ipyparallel parses "started"
    assert utc_ns(utc.replace(tzinfo=None)) == ns  # naive: UTC
    assert utc_ns(None) is None


def test_existing_cluster_options_are_checked() -> None:
    with pytest.raises(ParamError, match="scheme.*controller setting"):
        IppLoadBalanced.validate_options({"profile_dir": "/x", "scheme": "lru"})
    with pytest.raises(ParamError, match="hwm.*controller setting"):
        IppLoadBalanced.validate_options({"connection_file": "/x.json", "hwm": 0})
    with pytest.raises(ParamError, match="'profile'.*connection_file"):
        IppDirect.validate_options({"connection_file": "/x.json", "profile": "p"})
    with pytest.raises(ParamError, match="not both"):
        IppDirect.validate_options({"profile": "p", "profile_dir": "/x"})
    with pytest.raises(ParamError, match="allowed: leastload, lru"):
        IppLoadBalanced.validate_options({"scheme": "fastest"})
    with pytest.raises(ParamError, match="not an option"):
        IppDirect.validate_options({"chunksize": 2})  # a DirectView ignores it: not offered


def test_controller_settings_go_to_the_local_controller() -> None:
    lb = IppLoadBalanced(2, {"scheme": "twobin", "hwm": 0})
    assert lb.controller_args() == ["--TaskScheduler.scheme_name=twobin", "--TaskScheduler.hwm=0"]
    assert IppLoadBalanced(2).controller_args() == []  # the library's defaults


def test_connection_file_is_found_like_ipython_finds_it(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))
    assert connection_file({"profile": "work"}) == (
        tmp_path / "profile_work" / "security" / "ipcontroller-client.json")
    assert connection_file({"cluster_id": "abc"}) == (
        tmp_path / "profile_default" / "security" / "ipcontroller-abc-client.json")
    assert connection_file({"profile_dir": "/p", "cluster_id": "c"}) == Path(
        "/p/security/ipcontroller-c-client.json")
    assert connection_file({"connection_file": "/c.json"}) == Path("/c.json")


def test_missing_cluster_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ParamError, match="profile_dir.*not found: is the ipyparallel cluster"):
        IppLoadBalanced.preflight(2, IppLoadBalanced.validate_options(
            {"profile_dir": str(tmp_path)}))


# -- checks shared by the sweeps -----------------------------------------------------------
def makespan_s(rows: pd.DataFrame) -> float:
    return float(rows.end_ns.max() - rows.start_ns.min()) / 1e9


def check_worst_case(direct: pd.DataFrame, lb: pd.DataFrame) -> None:
    """DirectView: contiguous blocks, engine 0 first, stamped per block; LB: near greedy."""
    for rows in (direct, lb):
        assert (rows.status == "ok").all() and len(rows) == N_TASKS
    blocks = direct.sort_values("task_id").groupby("worker").task_id.apply(list).to_dict()
    assert blocks == {"engine-0": [0, 1, 2, 3, 4], "engine-1": [5, 6, 7, 8]}
    # One receive stamp per block: the whole block comes back in one message, engine 1 first.
    recv = direct.groupby("worker").receive_ns.agg(["min", "max"])
    assert (recv["min"] == recv["max"]).all()
    assert recv.loc["engine-1", "max"] < recv.loc["engine-0", "min"]
    assert (direct.receive_ns >= direct.groupby("worker").end_ns.transform("max")).all()
    # LB: one message per task, stamped as it arrives.
    assert lb.receive_ns.nunique() == N_TASKS and (lb.receive_ns >= lb.end_ns).all()
    assert lb.set_index("task_id").loc[[0, 1], "worker"].nunique() == 2

    worst = N_LONG * LONG_S + 3 * SHORT_S  # 1.5 s on engine 0
    greedy = LONG_S + 4 * SHORT_S  # 1.0 s
    assert makespan_s(direct) >= worst - 1e-3
    assert makespan_s(lb) < greedy + 0.3, makespan_s(lb)
    assert makespan_s(direct) - makespan_s(lb) > 0.25


def check_native(direct_native: pd.DataFrame, direct: pd.DataFrame,
                 lb_native: pd.DataFrame, lb: pd.DataFrame) -> None:
    """AsyncResult.metadata: one record per engine block (Direct), per task (LB)."""
    assert direct_native.task_id.isna().all()
    assert [list(x) for x in direct_native.task_ids] == [[0, 1, 2, 3, 4], [5, 6, 7, 8]]
    assert direct_native.worker.tolist() == ["engine-0", "engine-1"]
    for _, rec in direct_native.iterrows():  # the block spans its tasks
        mine = direct[direct.task_id.isin(list(rec.task_ids))]
        assert abs(rec.start_ns - mine.start_ns.min()) < 50e6
        assert abs(rec.end_ns - mine.end_ns.max()) < 50e6
    assert sorted(lb_native.task_id) == list(range(N_TASKS))
    merged = lb.merge(lb_native, on="task_id", suffixes=("", "_native"))
    assert (merged.worker == merged.worker_native).all()
    assert ((merged.start_ns_native - merged.start_ns).abs() < 50e6).all()
    assert (lb_native.source == "ipp.metadata").all()


def read_sweep(out: Path, experiment: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(scheduler, workload) -> rows, trial metadata and native table of each trial."""
    found = {}
    for path in sorted((out / experiment).glob("*.parquet")):
        if not schema.is_record_file(path):
            continue
        rows = schema.read_trial(path)
        native_path = path.with_name(path.stem + schema.NATIVE_SUFFIX)
        found[(rows.scheduler.iloc[0], rows.workload.iloc[0])] = {
            "rows": rows, "trial": schema.read_metadata(path)["trial"],
            "native": pd.read_parquet(native_path) if native_path.exists() else None,
        }
    return found


def write_config(path: Path, name: str, n_workers: int, body: str) -> Path:
    path.write_text(f"""
[experiment]
name = "{name}"
n_workers = {n_workers}
schedulers = ["ipp-direct", "ipp-lb"]
trial_timeout_s = 60
{body}
""")
    return path


def test_both_views_share_one_cluster_unless_the_controller_differs(tmp_path: Path) -> None:
    from research import config
    from research.runner import _groups

    cfg = write_config(tmp_path / "g.toml", "g", 2, """
[scheduler_options.ipp-lb]
chunksize = [1, 4]
""" + WORST_TOML)
    groups = _groups(config.load(cfg).trials)
    assert [sorted({t.label for t in g}) for g in groups] == [
        ["ipp-direct", "ipp-lb[chunksize=1]", "ipp-lb[chunksize=4]"]]
    # A controller setting needs a controller of its own.
    cfg.write_text(cfg.read_text().replace("chunksize = [1, 4]", 'scheme = "lru"'))
    groups = _groups(config.load(cfg).trials)
    assert sorted(sorted(t.scheduler for t in g) for g in groups) == [["ipp-direct"],
                                                                      ["ipp-lb"]]
    direct = get_scheduler("ipp-direct")(2)
    with pytest.raises(TypeError, match="cannot drive"):
        direct.view_as(get_scheduler("dask"))


@pytest.mark.slow
def test_sweep_runs_both_views_on_one_cluster(tmp_path: Path, no_leaks: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = write_config(tmp_path / "one.toml", "one", 2, WORST_TOML)
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    found = read_sweep(tmp_path / "out", "one")
    direct, lb = found[("ipp-direct", "worst")], found[("ipp-lb", "worst")]
    # Each view schedules as itself on the shared engines.
    check_worst_case(direct["rows"], lb["rows"])
    assert direct["trial"]["run_info"]["receive_stamps"] == "per engine block"
    assert lb["trial"]["run_info"]["receive_stamps"] != "per engine block"
    ids = {t["trial"]["cluster"]["cluster_id"] for t in (direct, lb)}
    assert len(ids) == 1
    cluster = json.loads(next((tmp_path / "out").rglob(f".clusters/{ids.pop()}.json"))
                         .read_text())
    assert sorted(cluster["trial_ids"]) == sorted(t["trial"]["trial_id"] for t in (direct, lb))
    assert cluster["shutdown_s"] > 0
    assert set(direct["rows"].pid) == set(lb["rows"].pid)  # the same two engines


# -- local clusters, through the command line (first: before the shared cluster exists) ---
@pytest.mark.slow
def test_cli_sweep_on_local_clusters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p.pid for p in scheduler_children()}
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # ipyparallel must not write a profile there
    monkeypatch.delenv("IPYTHONDIR", raising=False)
    cfg = write_config(tmp_path / "local.toml", "local", 2, f"""
[scheduler_options.ipp-lb]
scheme = "lru"
{WORST_TOML}
[workloads.crash]
shape = "uniform"
n_tasks = 4
duration_s = 0.1
crash_ids = [1]
""")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert not list(home.iterdir())
    # Shutdown waits until the clusters' processes are gone: nothing left, even for a moment.
    left = [p.cmdline() for p in scheduler_children() if p.pid not in before]
    assert not left, left

    found = read_sweep(tmp_path / "out", "local")
    direct, lb = found[("ipp-direct", "worst")], found[("ipp-lb", "worst")]
    check_worst_case(direct["rows"], lb["rows"])
    check_native(direct["native"], direct["rows"], lb["native"], lb["rows"])
    for trial in (direct["trial"], lb["trial"]):
        assert trial["trial_status"] == schema.TRIAL_OK
        assert trial["cluster"]["existing_cluster"] is False
        assert trial["cluster"]["startup_s"] > 0
        cid = trial["cluster"]["cluster_id"]
        cluster_file = next((tmp_path / "out").rglob(f".clusters/{cid}.json"))
        assert json.loads(cluster_file.read_text())["shutdown_s"] > 0
    assert direct["trial"]["run_info"]["receive_stamps"] == "per engine block"
    assert direct["trial"]["cluster"]["task_scheme"] == "leastload"
    assert lb["trial"]["cluster"]["task_scheme"] == "lru"  # reached the local controller
    witness = lb["trial"]["witness"]
    assert witness["matched"] == N_TASKS and witness["source"] == "ipp.metadata"
    assert witness["start_abs_median_ms"] < 20 and witness["end_abs_median_ms"] < 20

    # A task that kills its engine: a failed trial, recorded, not a hang.
    for sched in ("ipp-direct", "ipp-lb"):
        crash = found[(sched, "crash")]
        assert crash["trial"]["trial_status"] == schema.TRIAL_FAILED
        assert "EngineError" in crash["trial"]["trial_error"]
        rows = crash["rows"].set_index("task_id")
        assert rows.loc[1, "status"] == "error" and pd.isna(rows.loc[1, "end_ns"])


# -- an existing cluster, started here as separate processes -------------------------------
def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if is_running(p)]  # a zombie counts as gone


@pytest.fixture(scope="module")
def ipcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``ipcluster start -n 2`` with its profile and IPYTHONDIR in a temp dir; stopped (and
    checked gone) after the module's tests, never by the adapters."""
    import ipyparallel as ipp

    base = tmp_path_factory.mktemp("ipcluster")
    env = {**os.environ, "IPYTHONDIR": str(base / "ipython")}
    profile_dir = base / "profile"
    cmd = [sys.executable, "-m", "ipyparallel.cluster"]
    log = open(base / "ipcluster.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([*cmd, "start", "-n", "2", f"--profile-dir={profile_dir}",
                             "--ip=127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    procs = [psutil.Process(proc.pid)]
    try:
        conn = profile_dir / "security" / "ipcontroller-client.json"
        deadline = time.monotonic() + 60
        while not conn.exists():
            assert proc.poll() is None, (base / "ipcluster.log").read_text()
            assert time.monotonic() < deadline, "ipcluster wrote no connection file"
            time.sleep(0.2)
        with ipp.Client(str(conn), ipython_dir=str(base / "ipython")) as client:
            client.wait_for_engines(2, timeout=60)
        procs += procs[0].children(recursive=True)
        yield {"profile_dir": profile_dir, "connection_file": conn, "procs": procs}
    finally:
        with contextlib.suppress(psutil.Error):  # also when start-up failed half-way
            procs += [p for p in procs[0].children(recursive=True) if p not in procs]
        subprocess.run([*cmd, "stop", f"--profile-dir={profile_dir}"], env=env, timeout=60,
                       capture_output=True)
        try:
            proc.wait(30)
        finally:
            left = reap(procs, 15)  # those still there after 15 s, killed
            log.close()
        assert not left, f"ipcluster processes outlived 'ipcluster stop': {left}"


def engine_pids(ipcluster: dict[str, Any]) -> set[int]:
    return {p.pid for p in _alive(ipcluster["procs"]) if "ipyparallel.engine" in p.cmdline()}


@pytest.mark.slow
def test_sweep_on_an_existing_cluster_leaves_it_running(ipcluster: dict[str, Any],
                                                        tmp_path: Path) -> None:
    engines = engine_pids(ipcluster)
    assert len(engines) == 2
    cfg = write_config(tmp_path / "existing.toml", "existing", 2, f"""
[scheduler_options.ipp-lb]
profile_dir = "{ipcluster['profile_dir']}"
[scheduler_options.ipp-direct]
connection_file = "{ipcluster['connection_file']}"
{WORST_TOML}""")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 0

    found = read_sweep(tmp_path / "out", "existing")
    direct, lb = found[("ipp-direct", "worst")], found[("ipp-lb", "worst")]
    check_worst_case(direct["rows"], lb["rows"])
    check_native(direct["native"], direct["rows"], lb["native"], lb["rows"])
    for trial in (direct["trial"], lb["trial"]):
        assert trial["trial_status"] == schema.TRIAL_OK
        assert trial["cluster"]["existing_cluster"] is True
        assert trial["cluster"]["connection_file"] == str(ipcluster["connection_file"])
    # The same engine processes ran the tasks, and are still running after our shutdown.
    assert set(direct["rows"].pid) | set(lb["rows"].pid) == engines
    assert engine_pids(ipcluster) == engines


@pytest.mark.slow
def test_preflight_names_both_engine_counts(ipcluster: dict[str, Any], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    opts = IppDirect.validate_options({"connection_file": str(ipcluster["connection_file"])})
    IppDirect.preflight(2, opts)
    with pytest.raises(ParamError, match=r"has 2 engine\(s\), but .* n_workers = 3"):
        IppDirect.preflight(3, opts)
    cfg = write_config(tmp_path / "three.toml", "three", 3, f"""
[scheduler_options.ipp-lb]
profile_dir = "{ipcluster['profile_dir']}"
{WORST_TOML}
schedulers = ["ipp-lb"]""")
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "has 2 engine(s)" in err and "n_workers = 3" in err
    assert not list(tmp_path.glob("out/**/*.parquet"))


@pytest.mark.slow
def test_timeout_on_an_existing_cluster_frees_its_engines(ipcluster: dict[str, Any]) -> None:
    lb_opts = {"profile_dir": str(ipcluster["profile_dir"])}
    with get_scheduler("ipp-lb")(2, lb_opts) as sched:
        tasks = [Task(0, "sleep", 30.0, 30.0)] + [Task(i, "sleep", 0.1, 0.1) for i in (1, 2, 3)]
        t0 = time.monotonic()
        out = sched.run(tasks, timeout_s=1.0)
        assert time.monotonic() - t0 < 5
        assert out.error and "timeout" in out.error and sched.broken
    # The abandoned 30 s task was interrupted: both engines answer at once.
    direct_opts = {"connection_file": str(ipcluster["connection_file"])}
    with get_scheduler("ipp-direct")(2, direct_opts) as sched:
        t0 = time.monotonic()
        out = sched.run([Task(i, "sleep", 0.1, 0.1) for i in range(4)], timeout_s=10)
        assert out.error is None and time.monotonic() - t0 < 3
        assert {o.worker for o in out.outcomes} == {"engine-0", "engine-1"}


@pytest.mark.slow
def test_a_controller_reachable_from_outside_is_refused(tmp_path: Path, no_leaks: None) -> None:
    # A controller started by hand on every interface: what the adapter's check must catch.
    profile = tmp_path / "profile_open"
    ctl = subprocess.Popen([sys.executable, "-m", "ipyparallel.controller", "--ip=0.0.0.0",
                            f"--profile-dir={profile}", "--cluster-id=open"],
                           env={**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)  # its schedulers too are stopped below
    conn = profile / "security" / "ipcontroller-open-client.json"
    try:
        deadline = time.monotonic() + 60
        while not conn.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        pids = [ctl.pid, *(p.pid for p in psutil.Process(ctl.pid).children(recursive=True))]
        with pytest.raises(RuntimeError, match="reachable beyond this host.*0.0.0.0"):
            ipp_adapter.check_loopback(conn, pids)
    finally:
        # The whole group: the controller's scheduler processes outlive a terminated parent.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ctl.pid, signal.SIGTERM)
        try:
            ctl.wait(15)
        finally:
            time.sleep(1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(ctl.pid, signal.SIGKILL)
            ctl.wait(5)
    # The check passes on the cluster the adapter starts (loopback only).
    with IppLoadBalanced(1) as ok:
        assert ok.conn is not None
        ipp_adapter.check_loopback(ok.conn, [p.pid for p in ok.procs.collect()])
