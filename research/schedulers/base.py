"""The one small interface every scheduler adapter implements.

An adapter starts a cluster of ``n_workers`` (or connects to an existing one), runs a task list
and hands back each task's :class:`~research.tasks.Outcome` with the client-side submit and
receive stamps, and shuts down. It is a context manager, so the cluster is shut down on success,
error and Ctrl-C alike. Adapters override only what they need.

ADAPTER AUTHORS: read research/schedulers/README.md first (rules every adapter follows).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psutil

from .. import guard
from ..errors import ParamError
from ..params import REQUIRED, Param, check_param
from ..tasks import Outcome, Task

#: When a client-side scheduler's results are fetched (``receive``): ``"together"``, with one
#: call once all are done, as its users' ``gather``/``get`` does (every task gets that call's
#: receive stamp), or ``"each"``, as each task finishes (a receive stamp per task, at a cost
#: per task that ``make bench`` measures). Tasks arriving over time always go ``"each"``: a
#: response time needs its own stamp.
RECEIVE_TOGETHER, RECEIVE_EACH = "together", "each"
RECEIVE_OPTION = Param(
    "str", RECEIVE_TOGETHER, (RECEIVE_TOGETHER, RECEIVE_EACH),
    help="'together': one fetch once all are done, one receive stamp for all (what a user's "
         "gather does); 'each': each result as its task finishes, a stamp per task (costs "
         "per task: see make bench)")


@dataclass(frozen=True)
class WorkerTraits:
    """What the harness must know of an adapter's workers under given options
    (:meth:`Scheduler.traits`): the config's checks, the runner's oversubscription record and
    the analysis (METG's efficiency cap) read them from here, not from class attributes, so an
    option that changes them (``dask-local[scheduler=threads]``) is seen everywhere alike."""

    #: The workers share one interpreter: CPU bodies cannot run in parallel (N workers do one
    #: core's work), and CPU-bodied workers beyond the cores do not oversubscribe them.
    shares_gil: bool
    #: Tasks run inside the client process: a task that kills its process would kill the
    #: harness, so the ``crash`` fault cannot be injected; workers cost a thread's memory.
    in_process: bool


@dataclass
class RunOutput:
    """What one trial produced on the client side.

    ``submit_ns``/``receive_ns`` map task id to stamp; a scheduler that hands over (or returns)
    the whole map at once gives every task the same stamp. ``error`` is a trial-level failure
    (timeout, dead worker): the outcomes that did arrive are kept.
    """

    outcomes: list[Outcome]
    submit_ns: dict[int, int]
    receive_ns: dict[int, int]
    error: str | None = None
    native: Any = None  # a pandas DataFrame of the system's own timing records, if it has them
    info: dict[str, Any] = field(default_factory=dict)


class Scheduler(ABC):
    """Base class of scheduler adapters; subclasses set :attr:`name` and implement
    :meth:`_start`, :meth:`_shutdown` and :meth:`run`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: Accepted ``[scheduler_options.NAME]`` keys.
    options_spec: ClassVar[dict[str, Param]] = {}
    #: Option keys read per trial (e.g. a map's chunksize): trials that differ only in these
    #: share one cluster; any other option needs a cluster of its own.
    run_options: ClassVar[frozenset[str]] = frozenset()
    #: Upper bound on workers this scheduler can use (serial: 1); None means no bound.
    max_workers: ClassVar[int | None] = None
    #: Workers share one interpreter (threads): CPU bodies cannot run in parallel. Read it
    #: through :meth:`traits`, which sees the options.
    shares_gil: ClassVar[bool] = False
    #: Tasks run inside the client process (serial, threads): a task that kills its process
    #: would kill the harness, so the ``crash`` fault cannot be injected. Read it through
    #: :meth:`traits`, which sees the options.
    in_process: ClassVar[bool] = False
    #: PyPI distributions whose installed versions every trial's metadata records (e.g.
    #: ``("dask", "distributed")``); read from the class, without importing the library.
    distributions: ClassVar[tuple[str, ...]] = ()
    #: Substrings of the command lines of the processes this adapter starts (e.g. "raylet"):
    #: the tests look for them after shutdown, to find leaks.
    process_names: ClassVar[tuple[str, ...]] = ()
    #: Starting a cluster takes seconds: the tests mark this adapter's contract tests slow.
    slow_start: ClassVar[bool] = False
    #: Whether a task still running at the trial's timeout is stopped (its worker killed or the
    #: cluster restarted). False for serial and threads: a hung task runs on in the client
    #: process; the trial is still recorded as timed out.
    can_stop_hung_task: ClassVar[bool] = True
    #: Adapters of one family drive the same kind of cluster through different APIs
    #: (ipp-direct and ipp-lb: one controller and its engines, two views). Trials of a family
    #: with the same worker count and :meth:`cluster_options` share one running cluster
    #: (:meth:`view_as`), which saves a start and a shutdown per family. None: no sharing.
    cluster_family: ClassVar[str | None] = None
    #: Whether tasks can be handed over one at a time at their arrival times (a workload's
    #: ``arrival = "poisson"`` or ``"trace"``): the adapter's :meth:`run` takes its tasks from
    #: :func:`paced`. False for a static map that needs the whole list up front: such
    #: workloads are refused before anything runs (:meth:`workload_refusal`).
    supports_arrivals: ClassVar[bool] = False
    #: Why not, when it does not (the refusal's text).
    no_arrivals_because: ClassVar[str] = "needs the whole task list up front (a static map)"
    #: Whether a task's bytes payload (``input_bytes``/``output_bytes``) can travel (False
    #: where the transport is JSON, which has no bytes).
    supports_payloads: ClassVar[bool] = True
    #: Whether a ``calls`` task (any picklable arguments and result) can travel.
    supports_calls: ClassVar[bool] = True

    def __init__(
        self, n_workers: int, options: Mapping[str, Any] | None = None, workdir: Path | None = None
    ) -> None:
        if n_workers < 1:
            raise ParamError("n_workers", f"must be >= 1, got {n_workers}")
        self.n_workers = n_workers
        self.options = self.validate_options(options or {})
        self.workdir = workdir
        self.startup_s: float | None = None
        self.shutdown_s: float | None = None
        self.rss_mib: float | None = None
        self.started = False
        #: Set by an adapter when a failure left the cluster unusable; the runner restarts it.
        self.broken = False
        #: Gather the system's own timing records after each trial (the native witness). They
        #: are read after the last result, outside a trial's timeline; benchmarks turn it off.
        self.collect_native = True
        #: Task id -> seconds from the start of :meth:`run` at which to hand it over; None (a
        #: batch) hands over everything at once. Set by the runner for a trial's tasks only.
        self.arrivals: Mapping[int, float] | None = None

    @classmethod
    def validate_options(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Check options against :attr:`options_spec`; fill defaults (None when not given),
        except those of an option that is left out at its default (``Param.omit_default``)."""
        unknown = sorted(set(raw) - set(cls.options_spec))
        if unknown:
            allowed = ", ".join(cls.options_spec) or "none"
            raise ParamError(unknown[0],
                             f"not an option of scheduler {cls.name!r}; allowed: {allowed}")
        out: dict[str, Any] = {}
        for key, spec in cls.options_spec.items():
            if raw.get(key) is not None:
                out[key] = check_param(key, spec, raw[key])
            else:
                out[key] = None if spec.default is REQUIRED else spec.default
            if spec.omit_default and out[key] == spec.default:
                del out[key]  # the trial keys of results stored before it existed stay
        return out

    @classmethod
    def traits(cls, options: Mapping[str, Any] | None = None) -> WorkerTraits:
        """What its workers are under ``options`` (validated, or as written in a label such as
        ``dask-local[scheduler=threads]``; None or missing keys: the defaults). The class
        attributes :attr:`shares_gil` and :attr:`in_process` here; an adapter whose options
        change them overrides this (and only this)."""
        return WorkerTraits(shares_gil=cls.shares_gil, in_process=cls.in_process)

    @classmethod
    def workload_refusal(cls, params: Mapping[str, Any],
                         options: Mapping[str, Any]) -> tuple[str, str] | None:
        """(key, why) when this scheduler cannot run a workload with these validated params and
        options (checked before anything runs); None when it can. The one compatibility hook:
        adapters override it for option-dependent cases (and call this one)."""
        arrival = params.get("arrival", "batch")
        if arrival != "batch" and not cls.supports_arrivals:
            from . import REGISTRY, get_scheduler

            able = [n for n in REGISTRY if get_scheduler(n).supports_arrivals]
            why = ("the trace's arrival_s column (arrival = 'trace' is the default when the "
                   "trace has one)" if arrival == "trace" else f"arrival = {arrival!r}")
            return ("arrival", f"{cls.no_arrivals_because}, so it cannot take tasks arriving "
                               f"over time, as {why} asks; set arrival = \"batch\" to submit "
                               f"them all at once, or use a scheduler that takes arrivals: "
                               f"{', '.join(able)}")
        if (params.get("input_bytes") or params.get("output_bytes")) and not cls.supports_payloads:
            key = "input_bytes" if params.get("input_bytes") else "output_bytes"
            return (key, "its messages are JSON, which cannot carry a bytes payload")
        if params.get("body") == "call" and not cls.supports_calls:
            return ("function", "its messages are JSON, which cannot carry a call's arguments "
                                "and result faithfully")
        if params.get("crash_ids") and cls.traits(options).in_process:
            return ("crash_ids", "it runs tasks in the client process, which a crashing task "
                                 "would kill; drop it from this workload's schedulers")
        return None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or connect to) the cluster; records start-up seconds and resident memory."""
        t0 = time.perf_counter()
        self.started = True  # set first, so a failed start is still shut down
        self._start()
        self.startup_s = time.perf_counter() - t0
        self.rss_mib = descendants_rss_mib()

    def shutdown(self) -> None:
        """Stop what :meth:`start` started; safe to call twice and after a failed start. A
        stop signal waits until it is done (:func:`research.guard.critical`): cut short, it
        would leave the cluster's processes running."""
        if not self.started:
            return
        self.started = False
        t0 = time.perf_counter()
        try:
            with guard.critical():
                self._shutdown()
        finally:
            self.shutdown_s = time.perf_counter() - t0

    def __enter__(self) -> Scheduler:
        try:
            self.start()
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def _shutdown(self) -> None: ...

    @abstractmethod
    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        """Run ``tasks`` and return their outcomes; give up after ``timeout_s`` seconds."""

    # -- optional hooks --------------------------------------------------------------------
    @classmethod
    def cluster_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options that shape the cluster itself: trials whose (family, worker count,
        cluster options) agree run on one cluster. The default: every option but the
        per-trial :attr:`run_options`. A family's adapters leave out options at their defaults
        that the others do not have, so that their keys agree."""
        return {k: v for k, v in options.items() if k not in cls.run_options}

    def view_as(self, cls: type[Scheduler]) -> Scheduler:
        """This running cluster, driven by adapter ``cls`` of the same :attr:`cluster_family`.

        The view shares this adapter's state (one object dictionary: one client, one set of
        processes, one ``broken`` flag), so shutting either down stops the cluster once.
        """
        if cls is type(self):
            return self
        if self.cluster_family is None or cls.cluster_family != self.cluster_family:
            raise TypeError(f"{cls.name} cannot drive a {self.name} cluster")
        view = cls.__new__(cls)
        view.__dict__ = self.__dict__
        return view

    @classmethod
    def preflight(cls, n_workers: int, options: Mapping[str, Any]) -> None:
        """Check, before any trial runs, that the sweep can use this scheduler as configured.

        Adapters that connect to an existing cluster override this to count its workers and
        raise :class:`~research.errors.ParamError` naming both numbers when they differ.
        """
        return None

    def warm(self, timeout_s: float = 60.0) -> None:
        """Make sure every worker is up and has imported the task code before a trial.

        The default runs one short sleep per worker through :meth:`run`; adapters that can
        address workers one by one do better.
        """
        n = self.effective_workers
        out = self.run([Task(-1 - i, "sleep", 0.05, 0.05) for i in range(n)], timeout_s)
        if out.error:
            self.broken = True
            raise RuntimeError(f"{self.name}: warm-up failed: {out.error}")

    def bare_noop(self, n_tasks: int) -> None:
        """Run ``n_tasks`` calls of :func:`research.tasks.noop` through the library's own API,
        as a user would without this harness (no stamps, no records): the overhead benchmark's
        baseline. Adapters implement it with the same library calls their :meth:`run` makes."""
        raise NotImplementedError(f"{self.name} has no bare baseline")

    @property
    def effective_workers(self) -> int:
        """Workers this adapter really uses (serial: always 1)."""
        return min(self.n_workers, self.max_workers or self.n_workers)

    def info(self) -> dict[str, Any]:
        """Cluster facts stored in each trial file's metadata."""
        return {
            "scheduler": self.name,
            "n_workers": self.effective_workers,
            "startup_s": self.startup_s,
            "shutdown_s": self.shutdown_s,
            "rss_mib": self.rss_mib,
            "existing_cluster": False,
        }


class ReceiveStamps:
    """Receive stamps taken by done-callbacks, the moment each result is there.

    Callbacks cost O(1) per task, unlike waiting on n futures in a loop. :meth:`wait` waits for
    the callbacks themselves: futures may wake their waiters before running callbacks. A stamp
    is one ``time_ns`` and two dict/set operations; the only lock is taken by the last one.
    """

    def __init__(self, n_expected: int) -> None:
        self.stamps: dict[int, int] = {}
        #: Results handed over with their stamps (a stamping pool's, see threads.py): read
        #: from here, the futures need not be touched again.
        self.values: dict[int, Any] = {}
        self._n = n_expected
        self._all = threading.Event()
        if n_expected == 0:
            self._all.set()

    def callback(self, task_id: int) -> Callable[[Any], None]:
        """A done-callback that stamps ``task_id``."""
        return functools.partial(self._on_done, task_id)

    def _on_done(self, task_id: int, _future: Any) -> None:
        stamps = self.stamps
        stamps[task_id] = time.time_ns()
        # A dict store and len() are atomic under the GIL (and per-object locked in free-threaded
        # builds): the callback that makes the count complete sets the event; a task stamped
        # twice is counted once.
        if len(stamps) >= self._n:
            self._all.set()

    def _stamp(self, task_id: int) -> None:
        self._on_done(task_id, None)

    def hand_over(self, task_id: int, value: Any) -> None:
        """Stamp ``task_id`` now and keep its result ``value`` in :attr:`values` (a stamping
        pool's worker, right after it has set the future's result)."""
        self.values[task_id] = value
        stamps = self.stamps
        stamps[task_id] = time.time_ns()
        if len(stamps) >= self._n:
            self._all.set()

    def wait(self, timeout_s: float) -> dict[int, int]:
        """Wait until every result is stamped or ``timeout_s`` passes; the stamps so far."""
        self._all.wait(max(0.0, timeout_s))
        return dict(self.stamps)


def descendants_rss_mib() -> float:
    """Resident memory of this process's child processes, summed, in MiB."""
    total = 0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total / 2**20


def timeout_error(timeout_s: float) -> str:
    """The error text of a trial that did not finish within ``timeout_s`` seconds."""
    return f"timeout after {timeout_s:g} s"


class Arrivals(Mapping[int, float]):
    """A trial's arrival offsets (task id -> seconds after the first hand-over), and what
    :func:`paced` learns while it hands the tasks over: how late each hand-over was.

    The runner sets one as :attr:`Scheduler.arrivals`; adapters pass it to :func:`paced` as
    the plain mapping it also is, and the runner adds :meth:`info` to the trial's ``run_info``.
    """

    def __init__(self, offsets: Mapping[int, float]) -> None:
        self.offsets = dict(offsets)
        #: Seconds each hand-over came after its task's due time (in hand-over order).
        self.lags: list[float] = []
        #: Set to stop pacing at once (Ctrl-C, an error, a pool's shutdown): :func:`paced`
        #: waits on it between tasks, so a pacing thread (a pool's task handler, Dask's
        #: submitter) is never left sleeping until the next task is due.
        self.stop = threading.Event()

    def __getitem__(self, task_id: int) -> float:
        return self.offsets[task_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets)

    def info(self) -> dict[str, Any]:
        """``pacing_lag_max_s`` and ``pacing_lag_median_s``: how late tasks were handed over
        after their due times (their ``submit_ns``); ``pacing_handed_over``: how many were."""
        lags = sorted(self.lags)
        n = len(lags)
        median = (lags[n // 2] if n % 2 else (lags[n // 2 - 1] + lags[n // 2]) / 2) if n else None
        return {"pacing_lag_max_s": lags[-1] if n else None, "pacing_lag_median_s": median,
                "pacing_handed_over": n}


def stop_pacing(arrivals: Mapping[int, float] | None) -> None:
    """Make :func:`paced` stop handing over ``arrivals``' tasks (call it in a ``finally``)."""
    if isinstance(arrivals, Arrivals):
        arrivals.stop.set()


def paced(tasks: Sequence[Task], arrivals: Mapping[int, float] | None,
          submit: dict[int, int], deadline: float | None = None) -> Iterator[Task]:
    """Yield each task when it is due, after stamping ``submit[task_id]``: the one pacing loop
    every adapter with per-task submission uses (the caller hands each yielded task over at
    once).

    ``arrivals`` maps task id to seconds after the first ``next()``; None (a batch) yields
    every task at once, each stamped when it is handed over. With arrivals, a task's
    ``submit_ns`` is its due time (the wall clock of the first ``next()`` plus its offset),
    not the moment it was handed over: a consumer that is busy when a task is due (serial
    runs each task before asking for the next; a pool's task handler blocked on a full pipe)
    keeps the task waiting, and that wait is queueing delay, not a later arrival. How late
    the hand-overs were is recorded in ``arrivals.lags`` when ``arrivals`` is an
    :class:`Arrivals`. Pacing stops at ``deadline`` (``time.monotonic()``): tasks not yet due
    then are never submitted; and at once when the :class:`Arrivals`' ``stop`` event is set.
    """
    if not arrivals:
        for task in tasks:
            submit[task.task_id] = time.time_ns()
            yield task
        return
    lags = arrivals.lags if isinstance(arrivals, Arrivals) else []
    stop = arrivals.stop if isinstance(arrivals, Arrivals) else threading.Event()
    # Wall clock first, then the monotonic one: a due time in wall nanoseconds is then never
    # later than the moment the monotonic clock says it is due (start >= submit holds).
    t0_ns = time.time_ns()
    t0 = time.monotonic()
    for task in tasks:
        offset = arrivals.get(task.task_id, 0.0)
        due = t0 + offset
        if deadline is not None and due > deadline:
            return
        delay = due - time.monotonic()
        if stop.wait(delay) if delay > 0 else stop.is_set():
            return
        submit[task.task_id] = t0_ns + round(offset * 1e9)
        lags.append(max(0.0, time.monotonic() - due))
        yield task


#: The collector's thresholds during a trial (:func:`gc_frozen`); Python's default is
#: (700, 10, 10). Recorded in each trial's metadata (``gc_threshold``).
TRIAL_GC_THRESHOLD = (10_000, 10, 10)


@contextlib.contextmanager
def gc_frozen() -> Iterator[None]:
    """Keep the objects alive now out of the garbage collector's passes for the block, and
    run its young-generation pass every 10,000 allocations instead of 700.

    A trial builds a record per task; each full collection during it would walk every object
    the process holds (the libraries imported, earlier trials' tables), a pause that grows
    with the heap, not with the trial, and lands in its timeline. ``gc.freeze()`` moves them
    to a permanent generation, so collections during the trial walk only what it creates
    (its own garbage is still collected: unlike ``gc.disable()``, a user's function that makes
    cycles cannot grow memory without bound).

    The threshold: a client that keeps a future and a record per task (the harness, and any
    user's list of futures) triggers a collection every few dozen tasks at 700, and in a
    thread pool, where the collector runs under the GIL every worker waits for, that cost
    per task was 3.7 us of a bare no-op's 10 us and 8 us of the harness's (measured here;
    1.4 us and 0.2 us more with the collector off). At 10,000, the bare loop and the
    harness took 7.4 and 8.7 us. Both restored on leaving."""
    import gc

    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*TRIAL_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def stamp_all(tasks: Sequence[Task], ns: int) -> dict[int, int]:
    """One stamp for every task: the map was handed over (or returned) as a whole."""
    return dict.fromkeys((t.task_id for t in tasks), ns)
