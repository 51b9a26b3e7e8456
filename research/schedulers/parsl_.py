"""Parsl: one ``python_app`` call per item on a HighThroughputExecutor we start on loopback.

Each task is one call of a Parsl ``python_app`` on a HighThroughputExecutor (HTEX): the
DataFlowKernel hands it to the executor, which sends it over ZMQ to its interchange process; the
interchange deals tasks to the worker pool (``process_worker_pool.py``) as it reports free worker
slots, and the pool's workers take them from a shared queue, so assignment is dynamic. Results
come back one by one: a done-callback on each AppFuture gives every task its own receive stamp.

The cluster is one block of a ``LocalProvider`` (one node, ``max_workers_per_node =
n_workers``), started by ``parsl.load`` and stopped by ``dfk.cleanup()`` and ``parsl.clear()``.
The interchange binds its worker and client ports to 127.0.0.1 (``address`` and
``loopback_address``); the run dir (logs, submit scripts) lives in the run's work dir, or in a
temp dir removed at shutdown, never ``./runinfo``. See :data:`HTEX_SETTINGS` for the settings
that keep start-up and per-task latency low. With ``config_file`` the adapter loads a user's
Parsl config (a Python file defining ``config``) instead; its worker count must equal n_workers
(:meth:`Parsl.preflight` checks).

The worker pool is launched by LocalProvider as a background shell job and re-parented to init,
so it is not a child of this process: shutdown finds it by the run dir in its command line.

This module is ``research.schedulers.parsl_`` (not ``parsl``, which would shadow the library);
it imports Parsl inside functions only, so the harness starts without Parsl installed.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import logging
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

from .. import tasks as _tasks
from ..errors import ParamError
from ..params import Param
from ..tasks import Outcome, Task, execute, pickled, unpickled
from .base import ReceiveStamps, RunOutput, paced, timeout_error
from .cluster import LOOPBACK, ClusterScheduler, check_worker_count, usable_as_tmpdir

#: Label of the executor this adapter builds.
EXECUTOR_LABEL = "htex_research"
#: HighThroughputExecutor settings of a cluster we start, and why:
HTEX_SETTINGS: dict[str, Any] = {
    # Interchange <-> workers on loopback only (the default, None, binds to all addresses);
    # the client <-> interchange ports use loopback_address (127.0.0.1 by default, set anyway).
    "address": LOOPBACK,
    "loopback_address": LOOPBACK,
    # A loopback-only cluster: CurveZMQ encryption (the default) only adds per-message cost.
    "encrypted": False,
    # The pool's watchdog checks for dead workers once per heartbeat period (default 30 s): a
    # worker that dies mid-task is reported (WorkerLost) and replaced within about 1 s.
    "heartbeat_period": 1,
    # Missed-heartbeat limit before the interchange drops a pool (default 120 s).
    "heartbeat_threshold": 10,
    # Idle timeout (ms) of the ZMQ poll loops; messages wake them at once (default 10).
    "poll_period": 10,
    # No task waits in a pool's queue while another worker is free (the default, 0).
    "prefetch_capacity": 0,
}
#: Config settings of a cluster we start: no scaling strategy (one fixed block; the default
#: "simple" strategy polls every 5 s and could cancel an idle block), no usage tracking.
CONFIG_SETTINGS: dict[str, Any] = {"strategy": "none", "usage_tracking": 0}
#: Log level of every component of a cluster we start (client, interchange, pool, workers):
#: files in the run dir as usual, but Parsl's default (DEBUG in the client, INFO in workers)
#: writes about 22 client and 4 worker log lines per task, which costs more CPU than the rest of
#: a no-op task's path on a 2-core machine.
LOG_LEVEL = logging.WARNING
#: Parsl's default run dir: a user's config that keeps it gets the work dir instead.
DEFAULT_RUN_DIR = "runinfo"
SHUTDOWN_WAIT_S = 15.0
WARM_SLEEP_S = 0.1


# -- what runs in the workers ---------------------------------------------------------------
def _label_worker() -> None:
    block = os.environ.get("PARSL_WORKER_BLOCK_ID", "?")
    rank = os.environ.get("PARSL_WORKER_RANK", str(os.getpid()))
    _tasks.set_worker_label(f"parsl-{block}-{rank}")


def execute_labelled(task: Sequence[Any]) -> tuple[Any, ...]:
    """:func:`~research.tasks.execute` in a Parsl worker, labelled ``parsl-<block>-<rank>``.

    Takes a :class:`~research.tasks.Task`'s fields and returns the
    :class:`~research.tasks.Outcome`'s, as plain tuples: Parsl serializes arguments and results
    with dill, which takes about 100 us for a NamedTuple and 10-30 us for a plain tuple.
    HTEX has no per-worker init hook: the label comes from the environment the pool gives each
    worker, read on the first call in each worker process and cached there.
    """
    if _tasks.WORKER_LABEL is None:
        _label_worker()
    return tuple(execute(Task(*task)))


def execute_labelled_pickled(blob: bytes) -> bytes:
    """:func:`execute_labelled` of a task sent as one pickle (:func:`research.tasks.pickled`),
    its outcome returned as one (:func:`research.tasks.unpickled`)."""
    if _tasks.WORKER_LABEL is None:
        _label_worker()
    return _tasks.execute_pickled(blob)


# -- helpers ----------------------------------------------------------------------------------
def import_parsl() -> ModuleType:
    """The Parsl library, or a clear error when it is not installed."""
    try:
        import parsl
    except ImportError as exc:
        raise RuntimeError("scheduler 'parsl' needs the parsl package: pip install parsl"
                           ) from exc
    if not hasattr(parsl, "load"):
        raise RuntimeError(f"'import parsl' found {parsl.__file__}, not the Parsl library")
    return parsl


def load_user_config(path: str) -> Any:
    """The ``config`` object defined by the Python file at ``path``."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ParamError("config_file", f"no such file: {str(file)!r}")
    import_parsl()
    spec = importlib.util.spec_from_file_location(f"_parsl_user_config_{abs(hash(file))}", file)
    if spec is None or spec.loader is None:
        raise ParamError("config_file", f"{str(file)!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ParamError("config_file", f"{str(file)!r} failed to run: "
                         f"{type(exc).__name__}: {exc}") from exc
    from parsl.config import Config

    config = getattr(module, "config", None)
    if not isinstance(config, Config):
        raise ParamError("config_file", f"{str(file)!r} must define `config`, a "
                         f"parsl.config.Config; found {type(config).__name__}")
    return config


def _htex_of(config: Any, where: str) -> Any:
    """The config's one HighThroughputExecutor (the adapter runs every task there)."""
    from parsl.executors import HighThroughputExecutor

    htex = [e for e in config.executors if isinstance(e, HighThroughputExecutor)]
    if len(htex) != 1:
        labels = [getattr(e, "label", type(e).__name__) for e in config.executors]
        raise ParamError("config_file", f"{where}: needs exactly one HighThroughputExecutor, "
                         f"found executors {labels}")
    return htex[0]


def config_workers(htex: Any) -> int:
    """Workers a HighThroughputExecutor's config gives: per node x nodes x blocks at start.

    ``max_workers_per_node`` unset means one per ``cores_per_worker`` cores of this machine
    (the pools here run on this machine).
    """
    per_node = htex.max_workers_per_node
    if per_node is None or math.isinf(per_node):
        per_node = math.floor((os.cpu_count() or 1) / htex.cores_per_worker)
    provider = htex.provider
    blocks = max(getattr(provider, "init_blocks", 1), getattr(provider, "min_blocks", 0))
    return int(per_node) * int(getattr(provider, "nodes_per_block", 1)) * int(blocks)


def _script_cmd(name: str) -> list[str]:
    """Command running Parsl's ``<name>.py`` script with this interpreter (the script beside
    it, else the module: both keep ``<name>`` in the command line)."""
    script = Path(sys.executable).parent / f"{name}.py"
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", f"parsl.executors.high_throughput.{name}"]


def _find_scripts(htex: Any) -> None:
    """Run Parsl's scripts with this interpreter where a config names them bare and they are
    not on PATH (a venv used without activating it)."""
    if list(htex.interchange_launch_cmd) == ["interchange.py"] and not shutil.which(
            "interchange.py"):
        htex.interchange_launch_cmd = _script_cmd("interchange")
    bare = "process_worker_pool.py"
    if htex.launch_cmd.startswith(bare + " ") and not shutil.which(bare):
        htex.launch_cmd = htex.launch_cmd.replace(
            bare, shlex.join(_script_cmd("process_worker_pool")), 1)


# -- the native witness ------------------------------------------------------------------------
def _local_ns(text: str | None) -> int | None:
    """Nanoseconds since the epoch of a monitoring timestamp: the workers' naive local
    ``datetime.now()``, stored by SQLAlchemy as ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if text is None:
        return None
    dt = datetime.datetime.fromisoformat(str(text))
    return int(dt.replace(microsecond=0).timestamp()) * 10**9 + dt.microsecond * 1000


def monitoring_table(db: str, run_id: str, ids: Mapping[int, int]) -> Any:
    """Rows of Parsl's monitoring database for the Parsl task ids in ``ids`` (mapped to ours).

    Per try, the worker-side wrapper around our function stamps ``task_try_time_running``
    (``try`` table) just before calling it, and a ``running_ended`` status (``status`` table)
    just after: ``start_ns``/``end_ns``. Parsl records the pool (block) and host, not the worker
    process, so ``worker`` is ``parsl-<block>``. The client-side ``task_try_time_launched`` and
    ``task_try_time_returned`` are kept as ``launched_ns``/``returned_ns``.
    """
    import sqlite3

    import pandas as pd

    lo, hi = min(ids), max(ids)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        cur = con.execute(
            "SELECT t.task_id, t.try_id, t.task_try_time_launched, t.task_try_time_running, "
            "t.task_try_time_returned, t.block_id, t.hostname, s.timestamp "
            'FROM "try" t LEFT JOIN status s ON s.run_id = t.run_id AND s.task_id = t.task_id '
            "AND s.try_id = t.try_id AND s.task_status_name = 'running_ended' "
            "WHERE t.run_id = ? AND t.task_id BETWEEN ? AND ?", (run_id, lo, hi))
        fetched = cur.fetchall()
    finally:
        con.close()
    rows = []
    for ptid, try_id, launched, running, returned, block, host, ended in fetched:
        if ptid not in ids:
            continue
        rows.append({
            "task_id": ids[ptid], "worker": f"parsl-{block}", "start_ns": _local_ns(running),
            "end_ns": _local_ns(ended), "launched_ns": _local_ns(launched),
            "returned_ns": _local_ns(returned), "parsl_task_id": ptid, "try_id": try_id,
            "hostname": host, "source": "parsl.monitoring",
        })
    if not rows:
        return None
    df = pd.DataFrame(rows).sort_values("task_id", ignore_index=True)
    return df.astype({c: "Int64" for c in ("start_ns", "end_ns", "launched_ns", "returned_ns")})


# -- the adapter ------------------------------------------------------------------------------
class Parsl(ClusterScheduler):
    """One Parsl ``python_app`` call per item on a HighThroughputExecutor, results as they
    arrive."""

    name = "parsl"
    description = ("Parsl HighThroughputExecutor (one local block, loopback), one app call per "
                   "item, results as they arrive")
    distributions = ("parsl",)
    supports_arrivals = True  # one app call per task, as each arrives; done-callbacks stamp
    #: Command-line marks of the processes a cluster of ours runs (interchange, worker pool,
    #: monitoring); the pool's workers are its children and share its command line.
    process_names = ("parsl: HTEX interchange", "interchange.py", "process_worker_pool",
                     "parsl: monitoring")
    exit_wait_s = SHUTDOWN_WAIT_S
    options_spec = {
        "config_file": Param("str", None, help="a Python file defining `config`, a Parsl Config "
                             "with one HighThroughputExecutor, to use instead of ours; its "
                             "worker count must equal n_workers"),
        "monitoring": Param("bool", False, help="run Parsl's monitoring (an SQLite database in "
                            "the run dir) and return its per-try running times as the native "
                            "witness; costs per task, so off by default (cluster we start only)"),
    }

    def __init__(self, n_workers: int, options: Mapping[str, Any] | None = None,
                 workdir: Path | None = None) -> None:
        super().__init__(n_workers, options, workdir)
        self.run_dir: str | None = None
        self._dfk: Any = None
        self._app: Any = None
        self._app_pickled: Any = None
        self._label = EXECUTOR_LABEL
        self._version: str | None = None
        self._labels_seen: set[str] = set()
        self.monitoring_db: str | None = None
        #: How long run() polls the monitoring database for the trial's records: the
        #: database manager writes them in batches, once a second (MONITORING_DB_BATCH_S).
        self.native_wait_s = 5.0
        if self.options["monitoring"] and self.options["config_file"] is not None:
            raise ParamError("monitoring", "only for a cluster this adapter starts; with "
                             "config_file, put a MonitoringHub in that config instead")

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def preflight(cls, n_workers: int, options: Mapping[str, Any]) -> None:
        """With ``config_file`` set, load it and check its worker count against n_workers."""
        path = options.get("config_file")
        if path is None:
            return
        htex = _htex_of(load_user_config(path), repr(path))
        check_worker_count(n_workers, config_workers(htex), f"the Parsl config {path!r}")

    def _start_cluster(self) -> None:
        parsl = import_parsl()
        self._version = parsl.__version__
        from parsl.errors import NoDataFlowKernelError

        try:
            parsl.dfk()
        except NoDataFlowKernelError:
            pass
        else:
            raise RuntimeError("a Parsl DataFlowKernel is already loaded in this process: "
                               "run one Parsl adapter at a time")
        self.run_dir = str(self.dir.make(self.workdir, "parsl", prefix="research-parsl-"))
        if self.options["config_file"] is None:
            config = self._config()
        else:
            config = load_user_config(self.options["config_file"])
            htex = _htex_of(config, repr(self.options["config_file"]))
            check_worker_count(self.n_workers, config_workers(htex),
                               f"the Parsl config {self.options['config_file']!r}")
            self._label = htex.label
            _find_scripts(htex)
            if config.run_dir == DEFAULT_RUN_DIR:  # never ./runinfo in the current directory
                config.run_dir = self.run_dir
            else:
                self.run_dir = str(config.run_dir)
        self._dfk = parsl.load(config)
        self.cluster_procs()
        self._app = parsl.python_app(execute_labelled, executors=[self._label],
                                     data_flow_kernel=self._dfk)
        self._app_pickled = parsl.python_app(execute_labelled_pickled, executors=[self._label],
                                             data_flow_kernel=self._dfk)

    def _config(self) -> Any:
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD
        from parsl.logconfigs.file import FileLogging
        from parsl.providers import LocalProvider

        htex = HighThroughputExecutor(
            label=EXECUTOR_LABEL,
            max_workers_per_node=self.n_workers,
            # Workers per node are min(max_workers_per_node, cores / cores_per_worker): a tiny
            # share lets n_workers exceed the cores, as in the other adapters.
            cores_per_worker=1e-6,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1, nodes_per_block=1,
                                   worker_init=self._worker_init()),
            # Parsl starts both by script name, found on PATH only when the venv is activated:
            # run them with this interpreter instead.
            interchange_launch_cmd=_script_cmd("interchange"),
            launch_cmd=DEFAULT_LAUNCH_CMD.replace(
                "process_worker_pool.py", shlex.join(_script_cmd("process_worker_pool")), 1),
            **HTEX_SETTINGS,
        )
        monitoring = None
        if self.options["monitoring"]:
            from parsl.monitoring import MonitoringHub

            self.monitoring_db = str(Path(self.run_dir or ".") / "monitoring.db")
            # interval 0: the workers send only each try's first and last message (running,
            # running_ended), no periodic resource samples (a forked sampler per task).
            monitoring = MonitoringHub(logging_endpoint=f"sqlite:///{self.monitoring_db}",
                                       resource_monitoring_enabled=True,
                                       resource_monitoring_interval=0)
        return Config(executors=[htex], run_dir=self.run_dir, monitoring=monitoring,
                      initialize_logging=FileLogging(level=LOG_LEVEL), **CONFIG_SETTINGS)

    def _worker_init(self) -> str:
        """The shell line run before the worker pool starts: its ``TMPDIR`` is the run dir
        (short enough), so the multiprocessing temp dirs (pymp-*) its terminated processes
        leave go with the cluster's own dir."""
        run_dir = self.run_dir
        if run_dir and usable_as_tmpdir(run_dir):
            return f"export TMPDIR={shlex.quote(run_dir)}"
        return ""

    def cluster_procs(self) -> list[psutil.Process]:
        """The cluster's processes, remembered until shutdown reaps them: our descendants since
        start (the interchange, monitoring) and the worker pool, found by the run dir in its
        command line (LocalProvider's background job is re-parented to init)."""
        run_dir = self.run_dir
        if run_dir:
            self.procs.add_matching(lambda cmd: run_dir in cmd)
        return self.procs.collect()

    def _stop_cluster(self) -> None:
        parsl = sys.modules.get("parsl")
        try:
            self.cluster_procs()  # workers get replaced: look again before stopping
            if self._dfk is not None:  # never another adapter's kernel (start refused it)
                with contextlib.suppress(Exception):
                    self._dfk.cleanup()
                if parsl is not None:
                    with contextlib.suppress(Exception):
                        parsl.clear()
            self.cluster_procs()  # anything started since the last look; reaped by the base
        finally:
            self._dfk = None
            self._app = self._app_pickled = None

    # -- trials ----------------------------------------------------------------------------
    def bare_noop(self, n_tasks: int) -> None:
        import parsl

        app = parsl.python_app(_tasks.noop, executors=[self._label], data_flow_kernel=self._dfk)
        for fut in [app(i) for i in range(n_tasks)]:
            fut.result()

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        deadline = time.monotonic() + timeout_s
        stamps = ReceiveStamps(len(tasks))
        submit: dict[int, int] = {}
        futures: dict[int, Any] = {}
        for task in paced(tasks, self.arrivals, submit, deadline):
            # Parsl serialises arguments and results with dill, whose pickler is the pure-Python
            # one: a Python call per object, 10-30 us for a task's and an outcome's tuples. One
            # bytes object each way is one call (pickled in C). A task with a bytes payload
            # goes as a plain tuple, so that the payload is not copied into a pickle first.
            if task.payload is None and not task.output_bytes:
                fut = self._app_pickled(pickled(task))
            else:
                fut = self._app(tuple(task))
            fut.add_done_callback(stamps.callback(task.task_id))
            futures[task.task_id] = fut
        received = stamps.wait(deadline - time.monotonic())
        outcomes: list[Outcome] = []
        error: str | None = None
        lost = 0
        for tid, fut in futures.items():
            if tid not in received:
                continue
            exc = fut.exception()
            if exc is None:
                got = fut.result()
                outcomes.append(unpickled(got) if type(got) is bytes else Outcome(*got))
                continue
            # execute() turns a task's own exception into an outcome: an exception here is the
            # executor's (a worker that died: WorkerLost; a pool that went away ...).
            lost += 1
            error = error or f"{type(exc).__name__}: {exc}"
            if type(exc).__name__ != "WorkerLost":
                self.broken = True
        receive = {o.task_id: received[o.task_id] for o in outcomes}
        if len(received) < len(tasks):
            # HTEX cannot stop a running task: the runner restarts the cluster.
            self.broken = True
            error = timeout_error(timeout_s) + (f"; then {error}" if error else "")
        self._labels_seen.update(o.worker for o in outcomes)
        info: dict[str, Any] = {"lost_tasks": lost} if lost else {}
        table = None
        if self.collect_native and self.monitoring_db and outcomes:
            ids = {fut.tid: tid for tid, fut in futures.items() if tid >= 0}
            table = self._native(ids, {o.task_id for o in outcomes})
            if table is not None:
                info["native_rows"] = len(table)
        return RunOutput(outcomes, submit, receive, error=error, native=table, info=info)

    def _native(self, ids: Mapping[int, int], done: set[int]) -> Any:
        """The monitoring database's records of this trial's tasks (Parsl task id -> ours),
        polled until every task that came back is there or :attr:`native_wait_s` passed."""
        if not ids or self.monitoring_db is None:
            return None
        want = {tid for tid in ids.values() if tid in done}
        deadline = time.monotonic() + self.native_wait_s
        while True:
            try:
                table = monitoring_table(self.monitoring_db, self._dfk.run_id, ids)
            except Exception:  # a witness is optional: never fail a trial for it
                return None
            got = set() if table is None else set(
                table.task_id[table.start_ns.notna() & table.end_ns.notna()])
            if want <= got or time.monotonic() > deadline:
                return table
            time.sleep(0.1)

    def connected_workers(self) -> int:
        """Workers of the pools registered with the interchange now."""
        htex = self._dfk.executors[self._label]
        return sum(int(m.get("worker_count", 0)) for m in htex.connected_managers()
                   if m.get("active", True))

    def warm(self, timeout_s: float = 60.0) -> None:
        """Wait until the pools' workers are registered, then run ``n`` concurrent short
        sleeps until ``n`` distinct workers answer (each has then imported the task code and
        set its label)."""
        n = self.effective_workers
        deadline = time.monotonic() + timeout_s
        while self.connected_workers() < n:
            if time.monotonic() > deadline:
                self.broken = True
                raise RuntimeError(f"parsl: {self.connected_workers()} of {n} workers "
                                   f"registered within {timeout_s:g} s")
            time.sleep(0.05)
        seen = 0
        while time.monotonic() < deadline:
            tasks = [Task(-1 - i, "sleep", WARM_SLEEP_S, WARM_SLEEP_S) for i in range(n)]
            out = self.run(tasks, max(deadline - time.monotonic(), 1.0))
            if out.error:
                self.broken = True
                raise RuntimeError(f"parsl: warm-up failed: {out.error}")
            seen = len({o.worker for o in out.outcomes})
            if seen == n:
                self.cluster_procs()
                return
        self.broken = True
        raise RuntimeError(f"parsl: warm-up saw {seen} of {n} workers within {timeout_s:g} s")

    def info(self) -> dict[str, Any]:
        """Base facts plus the run dir, executor label, settings and worker processes seen."""
        out = super().info()
        out.update({
            "run_dir": self.run_dir,
            "executor": self._label,
            "config_file": self.options["config_file"],
            "parsl_version": self._version,
            "htex_settings": None if self.options["config_file"] else dict(HTEX_SETTINGS),
            "worker_processes_seen": len(self._labels_seen),
            "monitoring_db": self.monitoring_db,
        })
        return out
