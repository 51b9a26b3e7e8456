"""Ray: one remote task per item, on a local Ray cluster we start or on an existing one.

Each task is one ``@ray.remote`` call with ``num_cpus=1`` and ``max_retries=0``: a node with
``num_cpus=n`` runs at most ``n`` of them at once and its raylet hands the next queued task to
whichever worker process frees first, so assignment is dynamic. Results come back with one
``ray.get`` for all, as a user's would (every task gets that call's return as its receive
stamp); with ``receive = "each"`` a callback per result stamps each as it arrives, at a cost per
task that ``make bench`` measures beside the default. Tasks arriving over time are always
stamped one by one. Tasks and outcomes travel as plain tuples (:func:`research.tasks.pack`).

The local cluster is started with ``ray.init(num_cpus=n_workers)``, bound to 127.0.0.1, with
usage stats off, token auth off (a local, loopback-only cluster) and profiling on; its session
directory lives in the run's work dir (or in a short directory under /tmp when that path would be
too long for Ray's unix sockets, removed again at shutdown). With ``address`` set the adapter
connects to a running cluster instead and never starts or stops it: its total CPU resources are
its workers, so ``n_workers`` must equal them (:meth:`Ray.preflight` checks).

This module is ``research.schedulers.ray``; it imports the library as the absolute ``ray``
inside functions only, so the harness starts without Ray installed.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, NamedTuple

from .. import tasks as _tasks
from ..errors import ParamError
from ..params import Param
from ..tasks import Outcome, Task
from .base import RECEIVE_EACH, RECEIVE_OPTION, ReceiveStamps, RunOutput, paced, timeout_error
from .cluster import ClusterScheduler, check_worker_count

#: How often workers send profile events to the GCS in a cluster we start (Ray's default,
#: 1000 ms, is what an existing cluster has): the native table is read right after a trial.
EVENTS_REPORT_MS = 100
#: Tasks whose events the GCS keeps; a trial of more tasks gets a partial native table.
GCS_TASK_EVENTS = 10_000
#: Environment for a cluster we start; set in this process for the cluster's life (its
#: processes inherit it) and restored at shutdown.
CLUSTER_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # never phone home
    # Per-task profile events for ray.timeline() (the native witness) cost every task: only with
    # the `witness` option (see Ray.__init__), else "0".
    "RAY_PROFILING": "0",
    "RAY_AUTH_MODE": "disabled",  # a loopback-only cluster; also silences the token warning
    # On Linux Ray swaps 127.0.0.1 for the machine's outward address and listens there; with
    # this it keeps the loopback address, as it does on a laptop (see _loopback_only).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_task_events_report_interval_ms": str(EVENTS_REPORT_MS),
    # The GCS keeps the session's task events (Ray's default: the last 100000 tasks) and each
    # trial reads them all to find its own; fewer keep that read under a second.
    "RAY_task_events_max_num_task_in_gcs": str(GCS_TASK_EVENTS),
}
#: Ray's unix sockets live at <temp dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store,
#: about 64 characters below the temp dir, and a socket path may have at most 107.
MAX_TEMP_DIR_CHARS = 40
#: Results are small and travel inline; a small object store spares /dev/shm on shared machines.
OBJECT_STORE_BYTES = 256 * 2**20
SHUTDOWN_WAIT_S = 15.0
WARM_SLEEP_S = 0.1


# -- what runs in the workers ---------------------------------------------------------------
def _label_worker() -> None:
    import ray

    _tasks.set_worker_label("ray-" + ray.get_runtime_context().get_worker_id()[:8])


def execute_labelled_packed(task: tuple[Any, ...]) -> tuple[Any, ...]:
    """:func:`~research.tasks.execute_packed` in a Ray worker, labelled ``ray-<worker id
    prefix>`` (a task with a bytes payload, sent as a plain tuple: :func:`research.tasks.pack`).

    The label is looked up on the first call in each worker process and cached there, so later
    calls cost one attribute check."""
    if _tasks.WORKER_LABEL is None:
        _label_worker()
    return _tasks.execute_packed(task)


def execute_labelled_pickled(blob: bytes) -> bytes:
    """:func:`execute_labelled_packed` of a task sent as one pickle
    (:func:`research.tasks.pickled`), its outcome returned as one: Ray serialises a bytes
    object more cheaply than a tuple."""
    if _tasks.WORKER_LABEL is None:
        _label_worker()
    return _tasks.execute_pickled(blob)


def _as_outcome(value: Any) -> Any:
    """An :class:`Outcome` from what a remote call returned (a pickle or a plain tuple); any
    other value (a task error Ray handed back) as it is."""
    if type(value) is bytes:
        return _tasks.unpickled(value)
    if type(value) is tuple:
        return tuple.__new__(Outcome, value)
    return value


def execute_labelled_block(block: Sequence[tuple[Any, ...]] | bytes) -> _tasks.PackedBlock:
    """:func:`research.tasks.execute_packed_block` in a Ray worker, labelled as
    :func:`execute_labelled_packed` is (one chunk of a pool's map, cut by the adapter)."""
    if _tasks.WORKER_LABEL is None:
        _label_worker()
    return _tasks.execute_packed_block(block)


# -- helpers ----------------------------------------------------------------------------------
def import_ray() -> ModuleType:
    """The Ray library (never this module), or a clear error when it is not installed."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("scheduler 'ray' needs the ray package: pip install 'ray>=2.30'"
                           ) from exc
    if not hasattr(ray, "init") or Path(ray.__file__).resolve() == Path(__file__).resolve():
        raise RuntimeError(f"'import ray' found {ray.__file__}, not the Ray library")
    return ray


def _is_loopback(host_port: str) -> bool:
    host = host_port.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _resolve_address(ray: ModuleType, address: str) -> str:
    """``auto`` as Ray would resolve it (RAY_ADDRESS, the last ``ray start``, a running GCS)."""
    if address != "auto":
        return address
    with contextlib.suppress(Exception):  # private helper: fall back to letting ray.init look
        from ray._private.services import get_ray_address_from_environment

        return get_ray_address_from_environment("auto", None) or address
    return address


def _auto_init(enabled: bool) -> bool | None:
    """Turn Ray's auto-init on or off; the setting it had (None where this Ray has none).

    Ray starts a fresh local cluster (``ray.init()`` with its defaults: ``/tmp/ray``, a
    dashboard) when one of its calls (``ray.wait``, ``ray.get``...) finds no driver. A library
    thread still polling after our shutdown (a Pool's result thread) would then start a
    cluster nobody stops, whose driver exits this process (``_exit(1)``, no traceback) 60 s
    after its GCS is gone. Off while an adapter of ours runs Ray, so such a call fails instead.
    """
    try:
        from ray._private import auto_init_hook
    except ImportError:
        return None
    old = getattr(auto_init_hook, "enable_auto_connect", None)
    if isinstance(old, bool):
        auto_init_hook.enable_auto_connect = enabled
        return old
    return None


#: Ray's auto-init setting before an adapter of ours turned it off (None: ours is not off).
#: Process-wide, as the setting is: a second adapter must not take "off" for the original.
_auto_init_saved: bool | None = None
#: Library threads a shutdown left running that may still call Ray: auto-init stays off
#: until they are gone.
_threads_left: list[threading.Thread] = []


def _auto_init_off() -> None:
    """Turn Ray's auto-init off for as long as an adapter of ours runs Ray (see
    :func:`_auto_init`), remembering the setting it had."""
    global _auto_init_saved
    was = _auto_init(False)
    if _auto_init_saved is None:
        _auto_init_saved = was


def _auto_init_back(left: Iterable[threading.Thread] = ()) -> None:
    """Put Ray's auto-init back as it was, unless a library thread that may call Ray is still
    running (``left``, and those left by earlier shutdowns)."""
    global _auto_init_saved
    _threads_left[:] = [t for t in (*_threads_left, *left) if t.is_alive()]
    if _auto_init_saved is not None and not _threads_left:
        _auto_init(_auto_init_saved)
        _auto_init_saved = None


@contextlib.contextmanager
def _env(values: Mapping[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _loopback_only(ray: ModuleType) -> Iterator[None]:
    """Keep 127.0.0.1 as the node address while inside.

    On Linux ``ray.init`` rewrites a loopback node or cluster address to the machine's outward
    address (so other nodes could join); its servers then listen there and a cluster started on
    127.0.0.1 cannot be reached. Ray reads the switch that turns this off from the environment at
    import time, so the module constant is set too, in case Ray was imported before.
    """
    from ray._private import ray_constants

    old = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with _env({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}):
            yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old


@contextlib.contextmanager
def _connected(ray: ModuleType, address: str) -> Iterator[None]:
    """A driver connected to the cluster at ``address`` while inside (preflight)."""
    _connect(ray, address)
    try:
        yield
    finally:
        ray.shutdown()


def _connect(ray: ModuleType, address: str) -> str:
    resolved = _resolve_address(ray, address)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    with _env({"RAY_USAGE_STATS_ENABLED": "0"}):
        if _is_loopback(resolved):
            with _loopback_only(ray):
                ray.init(address=resolved, **kwargs)
        else:
            ray.init(address=resolved, **kwargs)
    return resolved


def _cluster_cpus(ray: ModuleType) -> int:
    return int(ray.cluster_resources().get("CPU", 0))


class Event(NamedTuple):
    """One profile event of Ray's timeline, times in wall-clock nanoseconds."""

    cat: str
    tid: str  # "worker:<worker id hex>"
    start_ns: int
    end_ns: int
    task_hex: str | None  # args.task_id, on the per-task span only
    node: str


def timeline_events(ray: ModuleType) -> list[Event]:
    """The session's profile events: the data ``ray.timeline()`` turns into Chrome trace events.

    ``ray.timeline()`` first sleeps 1 s for events still on their way to the GCS, and would
    stretch every trial by that; this reads the same records straight from Ray's global state
    (a private API, hence the fallback) and the caller polls for the ones it wants instead.
    """
    try:
        from ray._private.state import state

        by_component = state.profile_events()
    except (ImportError, AttributeError):
        return _chrome_events(ray)
    out = []
    for component_events in by_component.values():
        for e in component_events:
            if e["component_type"] not in ("worker", "driver"):
                continue
            out.append(Event(e["event_type"], f"{e['component_type']}:{e['component_id']}",
                             int(e["start_time"]), int(e["end_time"]),
                             (e.get("extra_data") or {}).get("task_id"),
                             str(e["node_ip_address"])))
    return out


def _chrome_events(ray: ModuleType) -> list[Event]:
    """``ray.timeline()`` (``ts``/``dur`` in microseconds), without its warning about a future
    data source."""
    log = logging.getLogger("ray._private.state")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        events = ray.timeline() or []
    finally:
        log.setLevel(level)
    return [Event(e["cat"], str(e["tid"]), round(float(e["ts"]) * 1e3),
                  round((float(e["ts"]) + float(e["dur"])) * 1e3),
                  (e.get("args") or {}).get("task_id"), str(e.get("pid", "")))
            for e in events]


def native_table(events: Sequence[Event], ids: Mapping[str, int]) -> Any:
    """The trial's rows of Ray's timeline: one per task whose hex id is in ``ids``.

    Ray 2.60 records, per task and worker (``tid`` = ``worker:<worker id>``), a span
    ``cat="task::<function name>"`` (here ``task::execute_labelled_packed``; ``args.task_id`` = the
    task's hex id) around deserialising the arguments, running the function and storing the
    outputs; inside it, an event ``cat="task:execute"`` (no task id) for the function call
    alone. The inner event is the one comparable with our in-task stamps: it gives
    ``start_ns``/``end_ns``; the outer span is kept as ``span_start_ns``/``span_end_ns``.
    """
    import pandas as pd

    inner: dict[str, list[tuple[int, int]]] = {}
    for e in events:
        if e.cat == "task:execute":
            inner.setdefault(e.tid, []).append((e.start_ns, e.end_ns))
    for spans in inner.values():
        spans.sort()
    rows = []
    seen: set[str] = set()
    for e in events:
        if (not e.cat.startswith("task::") or e.task_hex is None or e.task_hex not in ids
                or e.task_hex in seen):
            continue
        seen.add(e.task_hex)
        start, end = e.start_ns, e.end_ns
        spans = inner.get(e.tid, [])
        i = bisect.bisect_left(spans, (e.start_ns, -1))
        if i < len(spans) and spans[i][1] <= e.end_ns + 1000:  # inside the span (1 us slack)
            start, end = spans[i]
        worker_id = e.tid.split(":", 1)[-1]
        rows.append({
            "task_id": ids[e.task_hex], "worker": f"ray-{worker_id[:8]}",
            "start_ns": start, "end_ns": end,
            "span_start_ns": e.start_ns, "span_end_ns": e.end_ns,
            "ray_task_id": e.task_hex, "ray_worker_id": worker_id, "node": e.node,
            "source": "ray.timeline",
        })
    if not rows:
        return None
    df = pd.DataFrame(rows).sort_values("task_id", ignore_index=True)
    return df.astype({c: "int64" for c in ("task_id", "start_ns", "end_ns", "span_start_ns",
                                            "span_end_ns")})


# -- the adapter ------------------------------------------------------------------------------
def _stamp_when_ready(refs: Mapping[Any, int], deadline: float
                      ) -> tuple[dict[int, int], dict[int, Any]]:
    """Receive stamps, taken by a callback the moment each result is ready in this process,
    and the results the callbacks were handed.

    ``ray.wait(num_returns=1)`` in a loop costs O(n) per call, O(n^2) per trial. A callback per
    ref is O(1): ``ObjectRef._on_completed`` hands it the deserialised result, so the results
    need no second ``ray.get`` (``ref.future()`` wraps the same callback in a
    ``concurrent.futures.Future`` and the result was then fetched again: about 140 us per task
    more than a user's single ``ray.get``). Returns when all are ready or at the deadline.
    """
    stamps = ReceiveStamps(len(refs))
    values: dict[int, Any] = {}
    for ref, tid in refs.items():
        _watch(ref, tid, stamps, values)
    return stamps.wait(deadline - time.monotonic()), values


def _get_together(ray: ModuleType, refs: Mapping[Any, int], deadline: float,
                  failures: tuple[type[BaseException], ...]
                  ) -> tuple[dict[int, int], dict[int, Any]]:
    """One ``ray.get`` for all, as a user's: every task gets its return as receive stamp.

    A failure (a lost worker) ends the get at once: the others are waited for until the
    deadline. Those then ready are stamped now, without values (the caller fetches them one
    by one to tell the failures apart), the rest not."""
    order = list(refs)
    try:
        got = ray.get(order, timeout=max(0.0, deadline - time.monotonic()))
    except failures:
        ready, _ = ray.wait(order, num_returns=len(order),
                            timeout=max(0.0, deadline - time.monotonic()))
        return dict.fromkeys([refs[r] for r in ready], time.time_ns()), {}
    now = time.time_ns()
    values = {refs[r]: v for r, v in zip(order, got, strict=True)}
    return dict.fromkeys(values, now), values


def _watch(ref: Any, tid: int, stamps: ReceiveStamps, values: dict[int, Any]) -> None:
    """Stamp ``tid`` (and keep its value) the moment ``ref``'s result is ready here."""
    def cb(value: Any) -> None:
        values[tid] = value
        stamps._stamp(tid)

    if hasattr(ref, "_on_completed"):
        ref._on_completed(cb)
    else:  # an older Ray: the public future API
        ref.future().add_done_callback(stamps.callback(tid))


class Ray(ClusterScheduler):
    """One ``@ray.remote`` task per item (``num_cpus=1``, no retries), results together."""

    name = "ray"
    description = "Ray remote functions, one task per item, num_cpus=1, one ray.get"
    options_spec = {
        "address": Param("str", None, help="connect to this running cluster ('host:port' or "
                         "'auto') instead of starting one; its total CPUs must equal n_workers"),
        "witness": Param("bool", False, help="record Ray's own per-task timeline (the native "
                         "witness; turns RAY_PROFILING on, which slows every task)"),
        "receive": RECEIVE_OPTION,
    }
    run_options = frozenset({"receive"})  # how results are fetched: no new cluster needed
    existing_keys = ("address",)
    supports_arrivals = True  # one remote call per task, as each arrives (run)
    distributions: ClassVar[tuple[str, ...]] = ("ray",)
    # Its binaries, its ``ray::`` workers, and its Python services (log monitor, dashboard agent)
    process_names: ClassVar[tuple[str, ...]] = ("raylet", "gcs_server", "ray::", "ray/_private/",
                                                "ray/dashboard/")
    exit_wait_s = SHUTDOWN_WAIT_S

    def __init__(self, n_workers: int, options: Mapping[str, Any] | None = None,
                 workdir: Path | None = None) -> None:
        super().__init__(n_workers, options, workdir)
        self.address: str | None = self.options["address"]
        self.temp_dir: str | None = None
        self._env_cm: contextlib.ExitStack | None = None
        self._remote: Any = None
        self._remote_pickled: Any = None
        self._node_ip: str | None = None
        self._cluster_cpus: int | None = None
        self._labels_seen: set[str] = set()
        self._version: str | None = None
        self._driver = False  # this adapter called ray.init (so shutdown is ours to do)
        #: This adapter started a local cluster: its processes are reaped at shutdown. Never
        #: set when start refused a second driver, whose processes are another adapter's.
        self._launched = False
        #: How long run() polls for the trial's native records (see EVENTS_REPORT_MS).
        self.native_wait_s = 1.0 if self.address is None else 3.0
        #: The native witness needs RAY_PROFILING, which users do not run with: off by default.
        self.witness = bool(self.options.get("witness"))
        self.collect_native = self.witness

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def preflight(cls, n_workers: int, options: Mapping[str, Any]) -> None:
        """With ``address`` set, connect and check that the cluster has ``n_workers`` CPUs."""
        address = options.get("address")
        if address is None:
            return
        ray = import_ray()
        if ray.is_initialized():  # another Ray driver lives here; _start will refuse it
            return
        try:
            with _connected(ray, address):
                cpus = _cluster_cpus(ray)
        except Exception as exc:
            raise ParamError("address", f"cannot connect to the Ray cluster at {address!r}: "
                             f"{type(exc).__name__}: {exc}") from exc
        _check_cpus(n_workers, address, cpus)

    def _start_cluster(self) -> None:
        ray = import_ray()
        self._version = ray.__version__
        if ray.is_initialized():
            raise RuntimeError("a Ray driver is already connected in this process: "
                               "run one Ray adapter at a time")
        _auto_init_off()
        if self.address is None:
            self._start_local(ray)
        else:
            self._driver = True
            self.address = _connect(ray, self.address)
            self._cluster_cpus = _cluster_cpus(ray)
            _check_cpus(self.n_workers, self.address, self._cluster_cpus)
        self._node_ip = ray.util.get_node_ip_address()
        # Built after init, on the function the workers import by module path.
        self._remote = ray.remote(execute_labelled_packed).options(max_retries=0, num_cpus=1)
        self._remote_pickled = ray.remote(execute_labelled_pickled).options(max_retries=0,
                                                                           num_cpus=1)

    def _start_local(self, ray: ModuleType) -> None:
        self.temp_dir = self._pick_temp_dir()
        self._env_cm = contextlib.ExitStack()
        self._env_cm.enter_context(_env({**CLUSTER_ENV,
                                         "RAY_PROFILING": "1" if self.witness else "0"}))
        self._env_cm.enter_context(_loopback_only(ray))
        self._driver = self._launched = True
        info = ray.init(
            address="local",  # never a cluster named by RAY_ADDRESS
            num_cpus=self.n_workers,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            _temp_dir=self.temp_dir,
            _node_ip_address="127.0.0.1",
            logging_level=logging.WARNING,
            log_to_driver=False,  # worker output stays in the session's log files
        )
        self.address = info.address_info.get("gcs_address")
        self._cluster_cpus = self.n_workers
        node_ip = info.address_info.get("node_ip_address")
        if node_ip != "127.0.0.1":
            raise RuntimeError(f"ray: the local cluster took node address {node_ip!r}, "
                               "not 127.0.0.1")

    def _pick_temp_dir(self) -> str:
        # Ray's unix socket paths must stay short: a long work dir gives a short dir in /tmp.
        path = self.dir.make(self.workdir, "ray", prefix="ray-", max_chars=MAX_TEMP_DIR_CHARS,
                             tmp_root="/tmp" if os.path.isdir("/tmp") else None)
        return str(path)

    def _stop_cluster(self) -> None:
        ray = sys.modules.get("ray")
        try:
            if not self._driver:  # never got as far as ray.init: nothing of ours runs
                return
            self._driver = False
            # An existing cluster: the driver only, the cluster is not ours. A local one: its
            # processes were collected before this and are reaped after it.
            if ray is not None and ray.is_initialized():
                ray.shutdown()
        finally:
            self._remote = self._remote_pickled = None
            if self._env_cm is not None:
                self._env_cm.close()
                self._env_cm = None
            _auto_init_back(self._threads_running())

    def _threads_running(self) -> list[threading.Thread]:
        """Library threads of this cluster still running after shutdown, which may call Ray
        (Ray's auto-init then stays off until they are gone). None here; the Pool has result
        threads."""
        return []

    def match_process(self, cmd: str) -> bool:
        """Ray's processes below this one: its binaries, scripts and ``ray::`` workers."""
        if not self._launched:
            return False
        ray = sys.modules.get("ray")
        ray_file = getattr(ray, "__file__", None)
        marks = [m for m in (self.temp_dir, ray_file and os.path.dirname(ray_file)) if m]
        return cmd.startswith("ray::") or any(m in cmd for m in marks)

    # -- trials ----------------------------------------------------------------------------
    def bare_noop(self, n_tasks: int) -> None:
        import ray

        remote = ray.remote(_tasks.noop).options(max_retries=0, num_cpus=1)
        ray.get([remote.remote(i) for i in range(n_tasks)])

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        return self._run(tasks, timeout_s, native=self.collect_native)

    def _submit(self, task: Task) -> Any:
        """One remote call: the task as one pickle, or as a plain tuple when it carries a bytes
        payload (which Ray then passes without another copy)."""
        if task.payload is None and not task.output_bytes:
            return self._remote_pickled.remote(_tasks.pickled(task))
        return self._remote.remote(tuple(task))

    def _run(self, tasks: Sequence[Task], timeout_s: float, native: bool) -> RunOutput:
        import ray
        from ray.exceptions import GetTimeoutError, RayError, WorkerCrashedError

        deadline = time.monotonic() + timeout_s
        submit: dict[int, int] = {}
        refs: dict[Any, int] = {}
        outcomes: list[Outcome]
        # Plain tuples on the wire (research.tasks.pack): Ray pickles each argument and each
        # result with cloudpickle, which makes a Python call per record class otherwise.
        if self.arrivals:
            # Arriving over time: each result is watched from its submission on, so tasks that
            # finish while later ones are still to arrive get their receive stamps on time.
            stamps = ReceiveStamps(len(tasks))
            values: dict[int, Any] = {}
            for task in paced(tasks, self.arrivals, submit, deadline):
                ref = self._submit(task)
                refs[ref] = task.task_id
                _watch(ref, task.task_id, stamps, values)
            receive = stamps.wait(deadline - time.monotonic())
        else:
            for task in paced(tasks, None, submit):
                refs[self._submit(task)] = task.task_id
            if self.options["receive"] == RECEIVE_EACH:
                receive, values = _stamp_when_ready(refs, deadline)
            else:
                receive, values = _get_together(ray, refs, deadline, (GetTimeoutError, RayError))
        values = {tid: _as_outcome(v) for tid, v in values.items()}
        error: str | None = None
        crashed = 0
        # The callbacks were handed the results; only what is not an Outcome (a task error,
        # a lost worker) is fetched again, one by one, to tell the failures apart.
        outcomes = [values[tid] for tid in receive if isinstance(values.get(tid), Outcome)]
        got = {o.task_id for o in outcomes}
        ready = [ref for ref, tid in refs.items() if tid in receive and tid not in got]
        pending = [ref for ref, tid in refs.items() if tid not in receive]
        if ready and not values:  # the future API (older Ray): one get for all
            try:
                outcomes = [_as_outcome(v) for v in ray.get(ready)]
                ready = []
            except RayError:
                outcomes = []
        for ref in ready:
            try:
                out = ray.get(ref)
            except WorkerCrashedError as exc:  # max_retries=0: the task is lost, not rerun
                crashed += 1
                error = error or f"{type(exc).__name__}: {exc}"
                continue
            except RayError as exc:  # a lost object, a dead raylet ...: start afresh
                self.broken = True
                error = error or f"{type(exc).__name__}: {exc}"
                continue
            outcomes.append(_as_outcome(out))
        receive = {o.task_id: receive[o.task_id] for o in outcomes}
        if pending:
            # Force-cancel kills the workers running them, so the next trial starts clean.
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            self.broken = True
            error = timeout_error(timeout_s) + (f"; then {error}" if error else "")
        self._labels_seen.update(o.worker for o in outcomes)
        info: dict[str, Any] = {"crashed_tasks": crashed} if crashed else {}
        table = self._native(refs, outcomes) if native and outcomes else None
        if table is not None:
            info["native_rows"] = len(table)
        return RunOutput(outcomes, submit, receive, error=error, native=table, info=info)

    def _native(self, refs: Mapping[Any, int], outcomes: list[Outcome]) -> Any:
        """Ray's own timing records of this trial's tasks (the timeline holds the session's).

        Workers send their events every ``task_events_report_interval_ms``; this polls until
        every task that came back is there, or :attr:`native_wait_s` has passed.
        """
        import ray

        ids = {ref.task_id().hex(): tid for ref, tid in refs.items() if tid >= 0}
        done = {o.task_id for o in outcomes}
        want = {h for h, tid in ids.items() if tid in done}
        deadline = time.monotonic() + self.native_wait_s
        while True:
            try:
                table = native_table(timeline_events(ray), ids)
            except Exception:  # a witness is optional: never fail a trial for it
                return None
            got = set() if table is None else set(table.ray_task_id)
            if want <= got or time.monotonic() > deadline:
                return table
            time.sleep(0.05)

    def warm(self, timeout_s: float = 60.0) -> None:
        """Run ``n`` concurrent short sleeps until ``n`` distinct worker processes answer.

        Each answering worker has then imported the task code and set its label. Ray starts
        workers lazily and replaces dead ones, so the first round may see fewer; it retries.
        """
        n = self.effective_workers
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            tasks = [Task(-1 - i, "sleep", WARM_SLEEP_S, WARM_SLEEP_S) for i in range(n)]
            out = self._run(tasks, max(deadline - time.monotonic(), 1.0), native=False)
            if out.error:
                self.broken = True
                raise RuntimeError(f"ray: warm-up failed: {out.error}")
            seen = len({o.worker for o in out.outcomes})
            if seen == n:
                return
        self.broken = True
        raise RuntimeError(f"ray: warm-up saw {seen} of {n} workers within {timeout_s:g} s")

    def info(self) -> dict[str, Any]:
        """Base facts plus the cluster's address, node address, CPUs and worker processes seen.

        ``worker_processes_seen`` counts distinct worker processes that ran a task over the
        cluster's life: Ray replaces crashed or cancelled workers, so it can exceed n_workers.
        """
        out = super().info()
        out.update({
            "address": self.address,
            "node_ip": self._node_ip,
            "cluster_cpus": self._cluster_cpus,
            "temp_dir": self.temp_dir,
            "ray_version": self._version,
            "worker_processes_seen": len(self._labels_seen),
            "task_options": {"num_cpus": 1, "max_retries": 0},
        })
        return out


def _check_cpus(n_workers: int, address: str, cpus: int) -> None:
    check_worker_count(n_workers, cpus, f"the Ray cluster at {address}", "CPU(s) in all",
                       "its total CPUs are its workers: each task takes one CPU")
