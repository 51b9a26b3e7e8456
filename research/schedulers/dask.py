"""Dask distributed: ``Client.map`` on a ``LocalCluster`` (or on a scheduler already running).

Each worker is one process with one thread, so ``n_workers`` is also the number of task slots.
Tasks of one ``map`` form one task group: a group larger than twice the total threads is
"root-ish" and queues on the scheduler, which sends each worker at most
``ceil(worker_saturation * nthreads)`` tasks at a time; smaller groups are assigned up front by
estimated load and then corrected by work stealing. Both knobs are options here.

Options (``[scheduler_options.dask]``):

``work_stealing``
    ``distributed.scheduler.work-stealing``; unset = the library's default (on).
``worker_saturation``
    ``distributed.scheduler.worker-saturation``, a number > 0; unset = the library's default
    (1.1). ``"inf"`` (TOML ``inf`` or the string) turns queuing off: every task goes to a
    worker at once. A huge number such as ``1e9`` has the same effect.
``receive``
    ``"together"`` (the default): one ``gather`` once every task is done, as a user of
    ``client.map`` does; every task gets that moment as its receive stamp. ``"each"``: each
    result is fetched as its task finishes (``as_completed(with_results=True)``), a receive
    stamp per task, at about 0.5-1 ms per task more on this machine (``make bench`` measures
    it beside the default). Tasks arriving over time are always fetched one by one.
``address``
    ``tcp://HOST:PORT`` of a running scheduler: connect to it instead of starting a cluster,
    and never start or stop it (shutdown only closes our client). Its workers are counted by
    threads (worker processes x threads each); the count must equal ``n_workers``. Its settings
    cannot be changed from here, so ``work_stealing``/``worker_saturation``, if given, must
    match what it runs with (the preflight says so otherwise). Outcomes are labelled by worker
    address, one label per process: threads of one worker share it (and the GIL). Its workers
    must be able to import ``research`` (the task code is sent by reference).

Settings are put into ``dask.config`` before the local scheduler and its nannies are created:
the scheduler runs in this process and reads them at construction; nannies pass the config on
to the worker processes they spawn (and re-spawn). The values the scheduler really runs with
are read back from it and recorded in :meth:`Dask.info`. ``allowed-failures`` is 0 on a local
cluster, so a task whose worker dies fails at once with ``KilledWorker`` instead of being retried
on (and killing) the next worker; tasks queued on the same worker fail with it.

The native witness is the scheduler's task stream: one ``compute`` record per task with the
worker address and start/stop in wall-clock seconds (shifted by Dask's estimate of the worker's
clock offset). Task keys are ``task-<token>-<trial>-<task id>``, unique per adapter and trial,
since Dask caches results by key.

``distributed`` is imported only inside methods: importing this module starts nothing and
stays cheap (``import distributed`` is an absolute import: it never finds this module).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ParamError
from ..params import Param
from ..tasks import Outcome, Task, execute_packed, execute_pickled, pack, pickled, unpickled
from .base import (
    RECEIVE_EACH,
    RECEIVE_OPTION,
    RunOutput,
    paced,
    stamp_all,
    stop_pacing,
    timeout_error,
)
from .cluster import ClusterScheduler, check_worker_count

if TYPE_CHECKING:
    import pandas as pd

CONNECT_TIMEOUT_S = 20.0
CLOSE_TIMEOUT_S = 10.0
#: How long an existing cluster's workers may take to show up before they are counted.
WORKER_WAIT_S = 10.0
NATIVE_SOURCE = "dask.task_stream"
INF = "inf"


def _is_inf(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("inf", "+inf", "infinity")
    return isinstance(value, float) and value == math.inf


def _scheduler_settings(client: Any) -> dict[str, Any]:
    """What the scheduler really runs with (read from the scheduler object itself)."""

    def probe(dask_scheduler: Any) -> dict[str, Any]:  # pickled by value: nested
        sat = dask_scheduler.WORKER_SATURATION
        return {
            "work_stealing": "stealing" in dask_scheduler.extensions,
            "worker_saturation": "inf" if sat == float("inf") else float(sat),
            "allowed_failures": int(dask_scheduler.allowed_failures),
        }

    return client.run_on_scheduler(probe)


def _count_workers(client: Any) -> tuple[int, int]:
    """(worker processes, threads in all) known to the scheduler now."""
    nthreads = client.nthreads()
    return len(nthreads), sum(nthreads.values())


def _check_existing(client: Any, address: str, n_workers: int,
                    options: Mapping[str, Any]) -> dict[str, Any]:
    """Raise :class:`ParamError` if the running cluster does not fit; return its settings."""
    deadline = time.monotonic() + WORKER_WAIT_S
    procs, threads = _count_workers(client)
    while threads < n_workers and time.monotonic() < deadline:  # workers may still connect
        time.sleep(0.2)
        procs, threads = _count_workers(client)
    check_worker_count(
        n_workers, threads, f"the Dask scheduler at {address}",
        hint=f"workers are counted by threads; start {n_workers} single-threaded workers, or "
             f"change n_workers to {threads}",
        counted=f"{procs} worker process(es) with {threads} thread(s) in all")
    settings = _scheduler_settings(client)
    for key in ("work_stealing", "worker_saturation"):
        want = options.get(key)
        if want is not None and settings[key] != want:
            raise ParamError(
                key,
                f"the Dask scheduler at {address} runs with {key} = {settings[key]!r}, but "
                f"{want!r} was asked; an existing scheduler's settings cannot be changed from "
                f"here (start it with DASK_DISTRIBUTED__SCHEDULER__"
                f"{key.upper()}={want}, or drop the option)")
    return settings


def _connect(address: str) -> Any:
    import distributed

    try:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except OSError as exc:  # includes TimeoutError
        raise ParamError("address", f"cannot connect to a Dask scheduler at {address!r}: "
                                    f"{type(exc).__name__}: {exc}") from None


def _error_text(result: Any) -> str:
    """A future's error as text: ``result`` is (type, exception, traceback) or an exception."""
    exc = result[1] if isinstance(result, tuple) and len(result) == 3 else result
    if isinstance(exc, BaseException):
        try:
            text = str(exc)
        except Exception:  # a broken __str__ must not hide the failure itself
            text = repr(exc)
        return f"{type(exc).__name__}: {text}".rstrip(": ")
    return repr(exc)


def _wire(tasks: Sequence[Task]) -> tuple[Any, list[Any]]:
    """The function and the items a map sends: each task as one pickle, its outcome coming
    back as one (research.tasks.execute_pickled). Dask serialises a tuple element by element,
    a frame each: about 0.4 ms per task for a record, against one bytes object. Tasks with a
    bytes payload travel as plain tuples, so that Dask frames the payload without a copy."""
    if any(t.payload is not None or t.output_bytes for t in tasks):
        return execute_packed, pack(tasks)
    return execute_pickled, [pickled(t) for t in tasks]


def _outcome(result: Any) -> Outcome:
    """An :class:`Outcome` from what :func:`_wire`'s function returned."""
    return unpickled(result) if type(result) is bytes else tuple.__new__(Outcome, result)


def native_table(stream: Sequence[Mapping[str, Any]], key_to_id: Mapping[str, int]) -> pd.DataFrame:
    """Task-stream records of our keys -> one row per ``compute`` interval (ns, wall clock)."""
    import pandas as pd

    rows = []
    for rec in stream:
        key = rec.get("key")
        # Not ours: another client's task on a shared cluster.
        if not isinstance(key, str) or key not in key_to_id:
            continue
        for ss in rec.get("startstops", ()):
            if ss.get("action") != "compute":
                continue
            rows.append({
                "task_id": key_to_id[key], "worker": rec.get("worker"),
                "start_ns": round(ss["start"] * 1e9), "end_ns": round(ss["stop"] * 1e9),
                "source": NATIVE_SOURCE, "key": key, "thread": rec.get("thread"),
                "status": rec.get("status"),
            })
    cols = ["task_id", "worker", "start_ns", "end_ns", "source", "key", "thread", "status"]
    df = pd.DataFrame(rows, columns=cols)
    return df.astype({"task_id": "int64", "start_ns": "int64", "end_ns": "int64"})


class Dask(ClusterScheduler):
    """Dask distributed ``LocalCluster`` (one single-threaded process per worker),
    ``client.map``."""

    name = "dask"
    supports_arrivals = True  # one client.submit per task, as each arrives (_paced)
    description = "Dask distributed LocalCluster, client.map + gather"
    options_spec = {
        "work_stealing": Param("bool", None, help="default: the library's (on)"),
        "worker_saturation": Param(
            "float>0", None,
            help="default: the library's (1.1); inf (or e.g. 1e9) sends every task at once"),
        "address": Param("str", None, help="tcp://HOST:PORT of a running scheduler to use"),
        "receive": RECEIVE_OPTION,
        "security": Param("bool", False,
                          help="TLS between client, scheduler and workers with a temporary "
                               "certificate (local clusters; off: Dask's default, no auth)"),
    }
    existing_keys = ("address",)
    run_options = frozenset({"receive"})  # how results are fetched: no new cluster needed
    distributions = ("dask", "distributed")
    # Not bare "dask": any command line under a path such as wt-dask-... would match.
    process_names = ("distributed.cli", "dask worker", "dask scheduler", "nanny")
    exit_wait_s = CLOSE_TIMEOUT_S

    def __init__(self, n_workers: int, options: Mapping[str, Any] | None = None,
                 workdir: Path | None = None) -> None:
        super().__init__(n_workers, options, workdir)
        self.client: Any = None
        self.cluster: Any = None
        self._token = uuid.uuid4().hex[:8]
        self._trial = 0
        self._workers: dict[str, int] = {}  # address -> pid, as of the last warm()
        #: What the scheduler really runs with, read back from it at start.
        self.settings: dict[str, Any] = {}
        self.worker_processes: int | None = None
        self.worker_threads: int | None = None

    @classmethod
    def validate_options(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """As the base, but ``worker_saturation`` may also be infinite (``inf``/``"inf"``)."""
        raw = dict(raw)
        inf = _is_inf(raw.get("worker_saturation"))
        if inf:
            del raw["worker_saturation"]
        out = super().validate_options(raw)
        if inf:
            out["worker_saturation"] = INF  # as Dask spells it; also JSON-safe
        address = out.get("address")
        if address is not None and not address.strip():
            raise ParamError("address", "must not be empty (e.g. 'tcp://127.0.0.1:8786')")
        return out

    @classmethod
    def preflight(cls, n_workers: int, options: Mapping[str, Any]) -> None:
        """With ``address``: the running cluster must have ``n_workers`` threads in all and,
        if given, the asked work-stealing and saturation settings."""
        address = options.get("address")
        if address and options.get("security"):
            raise ParamError("security", "applies to the local cluster this package starts; an "
                                         "existing scheduler's security is its own (drop the "
                                         "option, or use a tls:// address set up for it)")
        if not address:
            return
        client = _connect(address)
        try:
            _check_existing(client, address, n_workers, options)
        finally:
            client.close()

    # -- lifecycle -------------------------------------------------------------------------
    def match_process(self, cmd: str) -> bool:
        """Worker processes the nannies spawned (``multiprocessing`` spawn), restarted ones
        too; the scheduler and the nannies run in this process."""
        return "spawn_main" in cmd

    def _start_cluster(self) -> None:
        address = self.options["address"]
        if address:
            self.client = _connect(address)
            self.settings = _check_existing(self.client, address, self.n_workers, self.options)
        else:
            self._start_local()
        self.worker_processes, self.worker_threads = _count_workers(self.client)
        self._label()

    def _start_local(self) -> None:
        import dask
        import distributed

        local_dir = self.dir.make(self.workdir, f"dask-{self._token}", prefix="research-dask-")
        # temporary-directory: the client's and scheduler's scratch space too (else a
        # dask-scratch-space in the system temp dir, which a killed run would leave behind).
        config: dict[str, Any] = {"distributed.scheduler.allowed-failures": 0,
                                  "temporary-directory": str(local_dir)}
        if self.options["work_stealing"] is not None:
            config["distributed.scheduler.work-stealing"] = self.options["work_stealing"]
        if self.options["worker_saturation"] is not None:
            config["distributed.scheduler.worker-saturation"] = self.options["worker_saturation"]
        # The scheduler (in this process) reads these when it is built; each nanny keeps a copy
        # for the worker processes it spawns and re-spawns. Restored on leaving the block.
        # security = true: TLS with a certificate made for this cluster (needs `cryptography`),
        # so that only holders of it (this process and its workers) can talk to the scheduler.
        tls: dict[str, Any] = {}
        if self.options["security"]:
            from distributed.security import Security

            tls = {"protocol": "tls", "security": Security.temporary()}
        with dask.config.set(config):
            self.cluster = distributed.LocalCluster(
                n_workers=self.n_workers, threads_per_worker=1, processes=True,
                host="127.0.0.1", local_directory=str(local_dir),
                # No dashboard. The scheduler serves a few plain HTTP routes (health, metrics)
                # regardless; with no address it would take port 8787, so a free one it is.
                dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False}, **tls,
            )
        self.client = distributed.Client(self.cluster, set_as_default=False,
                                         security=tls.get("security"))
        self.client.wait_for_workers(self.n_workers, timeout=CONNECT_TIMEOUT_S)
        self.settings = _scheduler_settings(self.client)
        expected = {"work_stealing": self.options["work_stealing"],
                    "worker_saturation": self.options["worker_saturation"],
                    "allowed_failures": 0}
        for key, want in expected.items():
            if want is not None and self.settings[key] != want:
                raise RuntimeError(f"dask: the scheduler runs with {key} = "
                                   f"{self.settings[key]!r}, not the {want!r} that was set")

    def _label(self) -> None:
        """Label every worker process by its address; remember address -> pid."""
        from ..tasks import set_worker_label

        self._workers = self.client.run(lambda dask_worker: set_worker_label(dask_worker.address))
        if not self.existing:  # waited for at shutdown (closing can return while they exit)
            self.procs.add(self._workers.values())

    def _stop_cluster(self) -> None:
        try:
            if self.client is not None:
                with contextlib.suppress(Exception):
                    self.client.close(timeout=CLOSE_TIMEOUT_S)
            if self.cluster is not None:
                with contextlib.suppress(Exception):
                    self.cluster.close(timeout=CLOSE_TIMEOUT_S)
        finally:
            self.client = self.cluster = None

    # -- work ------------------------------------------------------------------------------
    def warm(self, timeout_s: float = 60.0) -> None:
        """Wait for every worker, label each by its address (again after a nanny restarted
        one) and run one tiny task on each, so the task code is imported everywhere."""
        import distributed

        from ..tasks import execute

        try:
            if self.cluster is not None:
                self.client.wait_for_workers(self.n_workers, timeout=timeout_s)
            procs, threads = _count_workers(self.client)
            if threads != self.n_workers:
                raise RuntimeError(f"{procs} worker process(es) with {threads} thread(s) in "
                                   f"all, expected {self.n_workers} threads")
            self._label()
            self._trial += 1
            futures = [
                self.client.submit(execute, Task(-1, "noop", 0, 0.0), workers=[addr],
                                   allow_other_workers=False, pure=False,
                                   key=f"warm-{self._token}-{self._trial}-{i}")
                for i, addr in enumerate(self._workers)
            ]
            # distributed.wait() needs a default client; ours is not one (set_as_default=False).
            for fut in distributed.as_completed(futures, loop=self.client.loop,
                                                timeout=timeout_s):
                if fut.status != "finished":
                    raise RuntimeError(f"warm-up task on {fut.key} {fut.status}")
            del futures
        except Exception as exc:
            self.broken = True
            raise RuntimeError(f"{self.name}: warm-up failed: {type(exc).__name__}: {exc}"
                               ) from exc

    def bare_noop(self, n_tasks: int) -> None:
        from ..tasks import noop

        self.client.gather(self.client.map(noop, range(n_tasks), pure=False))

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        import distributed

        self._trial += 1
        prefix = f"task-{self._token}-{self._trial}-"
        keys = [f"{prefix}{t.task_id}" for t in tasks]
        key_to_id = {k: t.task_id for k, t in zip(keys, tasks, strict=True)}
        outcomes: list[Outcome] = []
        receive: dict[int, int] = {}
        errors: dict[int, str] = {}  # task id -> error text, for futures that erred
        timed_out = False
        futures: list[Any] = []
        each = self.arrivals is not None or self.options["receive"] == RECEIVE_EACH
        # The task stream (a scheduler plugin recording every task) is the native witness:
        # only when it is collected (the overhead benchmark turns it off).
        recorder: Any = (distributed.get_task_stream(client=self.client) if self.collect_native
                         else contextlib.nullcontext(None))
        with recorder as stream:
            submit: dict[int, int] = {}
            try:
                if self.arrivals:
                    results = self._paced(tasks, keys, submit, futures, timeout_s)
                else:
                    submit = stamp_all(tasks, time.time_ns())  # one map hands over the list
                    futures = self.client.map(*_wire(tasks), key=keys, pure=False)
                if each:
                    if not self.arrivals:  # each result fetched as its task finishes
                        results = distributed.as_completed(
                            futures, loop=self.client.loop, with_results=True,
                            raise_errors=False, timeout=timeout_s)
                    for fut, result in results:
                        now = time.time_ns()
                        if fut.status == "finished":
                            outcomes.append(_outcome(result))
                            receive[key_to_id[fut.key]] = now
                        else:  # erred (KilledWorker: its worker died) or cancelled
                            errors[key_to_id[fut.key]] = _error_text(result)
                else:
                    # One gather for all, as client.gather does (its own wait per future,
                    # bounded by the deadline); the tasks that erred are skipped here and
                    # asked for their errors below.
                    got = self.client.sync(self.client._gather, futures, errors="skip",
                                           callback_timeout=timeout_s)
                    now = time.time_ns()
                    outcomes = [_outcome(r) for r in got]
                    receive = dict.fromkeys((o.task_id for o in outcomes), now)
                    if len(outcomes) < len(futures):
                        for fut in futures:
                            if fut.status in ("error", "cancelled"):
                                errors[key_to_id[fut.key]] = _error_text(fut.exception())
            except TimeoutError:
                timed_out = True
                if not each:  # what did finish is kept, as the per-task path keeps it
                    done = [f for f in futures if f.status == "finished"]
                    with contextlib.suppress(Exception):
                        got = self.client.gather(done, errors="skip")
                        outcomes = [_outcome(r) for r in got]
                        receive = dict.fromkeys((o.task_id for o in outcomes), time.time_ns())
            finally:
                # Release everything (results held on workers) and stop what has not run; a
                # task already running goes on in its worker: the run is marked broken below.
                pending = [f for f in futures if not f.done()]
                if pending:
                    with contextlib.suppress(Exception):
                        self.client.cancel(pending)
                del futures, pending
        error = None
        if errors:
            # With allowed-failures 0, tasks queued on a worker that died fail with it.
            first = next(iter(errors.items()))
            error = (f"{len(errors)} task(s) failed (ids {sorted(errors)}); first, task "
                     f"{first[0]}: {first[1]}")
        if timed_out:
            error = timeout_error(timeout_s) + (f"; {error}" if error else "")
        if error is not None:
            self.broken = True
        info = {"key_prefix": prefix, "workers": dict(self._workers),
                "receive_stamps": "per task" if each else "one for all (one gather)",
                "task_stream_records": len(stream.data) if stream is not None else 0}
        native = native_table(stream.data, key_to_id) if stream is not None else None
        return RunOutput(outcomes, submit, receive, error=error, native=native, info=info)

    def _paced(self, tasks: Sequence[Task], keys: list[str], submit: dict[int, int],
               futures: list[Any], timeout_s: float) -> Iterator[tuple[Any, Any]]:
        """Tasks arriving over time: a thread submits each when it is due (``client.submit``)
        while this generator yields (future, result) as each finishes, fetched at once.

        A failure in the submitting thread is raised here (not reported as a timeout); when
        nothing is in flight the generator waits on a condition the submitter notifies, and
        on any exit (Ctrl-C, an error) it stops the pacing before joining the thread."""
        import distributed

        from ..tasks import execute_packed

        deadline = time.monotonic() + timeout_s
        ac = distributed.as_completed([], loop=self.client.loop, with_results=True,
                                      raise_errors=False, timeout=timeout_s)
        changed = threading.Condition()
        state: dict[str, Any] = {"sent": False, "error": None}
        key_of = {t.task_id: k for t, k in zip(tasks, keys, strict=True)}
        arrivals = self.arrivals

        def submitter() -> None:
            try:
                for task in paced(tasks, arrivals, submit, deadline):
                    fut = self.client.submit(execute_packed, tuple(task),
                                             key=key_of[task.task_id], pure=False)
                    futures.append(fut)
                    ac.add(fut)
                    with changed:
                        changed.notify()
            except BaseException as exc:  # handed to the consumer, which raises it
                state["error"] = exc
            finally:
                with changed:
                    state["sent"] = True
                    changed.notify()

        thread = threading.Thread(target=submitter, name="research-dask-pacer", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    yield next(ac)
                    continue
                except StopIteration:  # nothing in flight: done, or the next task not yet due
                    pass
                with changed:
                    while ac.is_empty() and not state["sent"]:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutError
                        changed.wait(left)
                    sent = state["sent"]
                if state["error"] is not None:
                    raise state["error"]
                if sent and ac.is_empty():
                    if len(futures) < len(tasks):  # pacing reached the deadline
                        raise TimeoutError
                    return
        finally:
            stop_pacing(arrivals)
            thread.join(5.0)

    def info(self) -> dict[str, Any]:
        import distributed

        out = super().info()
        out.update({
            "address": self.options["address"],
            "security": bool(self.options["security"]),
            "distributed_version": distributed.__version__,
            "worker_processes": self.worker_processes,
            "worker_threads": self.worker_threads,
            # A LocalCluster's scheduler runs in this process: rss_mib (children) omits it.
            "scheduler_in_process": self.options["address"] is None,
            # What the scheduler really ran with, read back from it at start.
            "work_stealing": self.settings.get("work_stealing"),
            "worker_saturation": self.settings.get("worker_saturation"),
            "allowed_failures": self.settings.get("allowed_failures"),
        })
        return out
