"""Dask's single-machine scheduler (no ``distributed``): ``dask.compute`` over ``dask.delayed``.

``scheduler`` picks the executor: ``processes`` (the default), ``threads`` or ``synchronous``.
Every task is one ``dask.delayed`` call without dependencies, computed in one ``dask.compute``.

How work is assigned (``dask.local.get_async``): the scheduler loop in the client keeps a list
of ready tasks and fills the executor with ``chunksize`` tasks per submit, at most
``chunksize x num_workers`` tasks in flight; each finished batch frees room for the next. The
executor's idle workers take queued batches (self-scheduling). With ``chunksize`` 1 (this
adapter's default) that is one task per idle worker, like ``Pool.imap_unordered``. Dask's own
default for ``processes`` is 6 (``multiprocessing.get``; 1 for ``threads``): up to
``6 x num_workers`` ready tasks are then dealt in static batches of 6, dynamic only between
batches, and a list of 6 tasks or fewer runs on one worker. That fails the shared contract
(two workers must share four tasks), so the default here is 1; ``chunksize = 6`` gives
Dask's behaviour. Ready tasks are taken from the end of Dask's ready list, sorted by its own
priority (``dask.order``); for independent tasks with random keys (``pure=False``) that is a
shuffle of the list, different in every trial: seen here, the talk's worst case started its
long tasks 4th, 5th, 6th and 15th, not first. So the order in which tasks start is Dask's.

One pool per cluster: without ``pool=`` the processes scheduler makes (and tears down) a new
``ProcessPoolExecutor`` in every ``compute``, and its start-up would land in every trial; the
threaded one caches a pool per calling thread that nobody shuts down. This adapter creates
one executor at start (``ProcessPoolExecutor(n, mp_context=forkserver)`` or
``ThreadPoolExecutor(n)``), passes it as ``pool=`` to every ``compute`` and shuts it down at
the end, so start-up is paid once and outside the trials, as for the other adapters.

``synchronous`` runs every task in the client, one at a time: it is one worker, like
``serial``; a config that asks for more is refused before anything runs (:meth:`preflight`).
``threads`` and ``synchronous`` run tasks in this process, so a ``crash`` task is refused.

Results come back together from ``compute``: one receive stamp for all. A per-task
``posttask`` callback of ``dask.callbacks.Callback`` could stamp them one by one, but it runs in
the scheduler loop, not where the client gets its result, so it is not used. Dask's local
scheduler keeps no timing records of its own: no native witness. A timeout cannot interrupt
``compute`` (it blocks the client), so it runs in a helper thread, and on timeout the pool's
processes are killed, which ends the ``compute`` with an error.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from .. import tasks as _tasks
from ..errors import ParamError
from ..params import Param
from ..tasks import Outcome, Task, execute_in_thread, noop, pickled, unpickled
from .base import RunOutput, Scheduler, WorkerTraits, stamp_all, timeout_error
from .cluster import EXIT_WAIT_S, reap

SCHEDULERS = ("processes", "threads", "synchronous")
THREAD_PREFIX = "dask-local"


def execute_labelled(blob: bytes) -> bytes:
    """:func:`~research.tasks.execute_pickled` labelled ``dask-local-<pid>`` (set on the first
    call): a task sent as one pickle, its outcome returned as one.

    Not a :class:`~research.tasks.Task`, nor its fields: ``dask.delayed`` walks every argument
    (a named tuple element by element) looking for its own objects, about 15 us per argument,
    and the process pool pickles each task and each result on its own with cloudpickle, which
    looks a record class up on every pickle. One bytes argument costs what the bare loop's int
    does."""
    if _tasks.WORKER_LABEL is None:
        import os

        _tasks.set_worker_label(f"dask-local-{os.getpid()}")
    return _tasks.execute_pickled(blob)


class DaskLocal(Scheduler):
    """``dask.compute`` of one ``dask.delayed`` per task on Dask's local scheduler."""

    name = "dask-local"
    description = "dask.compute on the local scheduler (processes, threads, synchronous)"
    options_spec = {
        "scheduler": Param("str", "processes", SCHEDULERS),
        "chunksize": Param("int>0", 1, help="tasks per submit (Dask's own default for "
                           "processes: 6, see the module docstring)"),
    }
    run_options = frozenset({"chunksize"})
    distributions = ("dask",)
    # None: its workers are forked by this interpreter's forkserver and carry that helper's
    # command line (cluster.HELPER_PROCESSES), so no mark is specific to them. They are this
    # process's descendants (the tests' no_leaks sees them) and are reaped by pid at shutdown.
    process_names = ()
    slow_start = False

    def __init__(self, n_workers: int, options: Mapping[str, Any] | None = None,
                 workdir: Path | None = None) -> None:
        super().__init__(n_workers, options, workdir)
        self.pool: Executor | None = None
        self._procs: list[psutil.Process] = []
        self._version: str | None = None

    @classmethod
    def preflight(cls, n_workers: int, options: Mapping[str, Any]) -> None:
        """``synchronous`` is one worker: refuse more, as a wrong worker count would be."""
        if options.get("scheduler") == "synchronous" and n_workers != 1:
            raise ParamError("scheduler", f"'synchronous' runs one task at a time in the client "
                             f"(one worker), but the config asks for {n_workers} workers: use "
                             "n_workers = 1, or 'processes' / 'threads'")

    @property
    def effective_workers(self) -> int:
        """``synchronous``: one; otherwise ``n_workers``."""
        return 1 if self.options["scheduler"] == "synchronous" else self.n_workers

    @classmethod
    def traits(cls, options: Mapping[str, Any] | None = None) -> WorkerTraits:
        """``threads`` and ``synchronous`` run the tasks in the client process, under its
        GIL; ``processes`` (the default) in worker processes."""
        if str((options or {}).get("scheduler")) in ("threads", "synchronous"):
            return WorkerTraits(shares_gil=True, in_process=True)
        return super().traits(options)

    # -- lifecycle -------------------------------------------------------------------------
    def _start(self) -> None:
        import dask

        self._version = dask.__version__
        kind = self.options["scheduler"]
        if kind == "processes":
            ctx = multiprocessing.get_context("forkserver")
            self.pool = ProcessPoolExecutor(self.n_workers, mp_context=ctx)
        elif kind == "threads":
            self.pool = ThreadPoolExecutor(self.n_workers, thread_name_prefix=THREAD_PREFIX)

    def _shutdown(self) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        procs = self._pool_procs(pool)
        if self.broken:  # a hung task would make shutdown(wait=True) wait for it
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    p.kill()
        # A thread cannot be killed: after a timeout, do not wait for the one still sleeping.
        wait = not (self.broken and isinstance(pool, ThreadPoolExecutor))
        pool.shutdown(wait=wait, cancel_futures=True)
        reap(procs, EXIT_WAIT_S)

    @staticmethod
    def _pool_procs(pool: Executor) -> list[psutil.Process]:
        out = []
        for pid in list(getattr(pool, "_processes", None) or {}):
            with contextlib.suppress(psutil.Error):
                out.append(psutil.Process(pid))
        return out

    # -- trials ----------------------------------------------------------------------------
    def _compute_kwargs(self) -> dict[str, Any]:
        kind = self.options["scheduler"]
        kwargs: dict[str, Any] = {"scheduler": kind}
        if kind != "synchronous":
            kwargs["pool"] = self.pool
            kwargs["num_workers"] = self.n_workers
        if self.options["chunksize"] is not None and kind != "synchronous":
            kwargs["chunksize"] = self.options["chunksize"]
        return kwargs

    def bare_noop(self, n_tasks: int) -> None:
        import dask

        dask.compute(*[dask.delayed(noop)(i) for i in range(n_tasks)], **self._compute_kwargs())

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        import dask

        if self.traits(self.options).in_process and any(t.body == "crash" for t in tasks):
            return RunOutput([], {}, {}, error=f"scheduler {self.options['scheduler']!r} runs "
                             "tasks in this process: a crash task cannot be injected")
        # pure=False: keys are unique per call, so equal tasks are never merged or cached.
        if self.options["scheduler"] == "processes":
            work = [dask.delayed(execute_labelled, pure=False)(pickled(t)) for t in tasks]
        else:  # in this process: nothing is pickled
            work = [dask.delayed(execute_in_thread, pure=False)(t) for t in tasks]
        kwargs = self._compute_kwargs()
        box: dict[str, Any] = {}

        def compute() -> None:
            try:
                box["out"] = dask.compute(*work, **kwargs)
            except BaseException as exc:  # reported to the client thread
                box["exc"] = exc

        submit = stamp_all(tasks, time.time_ns())
        if self.options["scheduler"] == "synchronous":
            # In the calling thread: the task is the client's; a deadline cannot stop it.
            compute()
            done = True
        else:
            thread = threading.Thread(target=compute, name="dask-local-compute", daemon=True)
            thread.start()
            thread.join(timeout_s)
            done = not thread.is_alive()
        received = time.time_ns()
        if not done:
            self.broken = True
            for p in self._pool_procs(self.pool) if self.pool else []:
                with contextlib.suppress(psutil.Error):
                    p.kill()  # ends the compute (BrokenProcessPool) and frees the thread
            return RunOutput([], submit, {}, error=timeout_error(timeout_s))
        if "exc" in box:
            exc = box["exc"]
            self.broken = True  # a dead worker breaks a ProcessPoolExecutor for good
            return RunOutput([], submit, {}, error=f"{type(exc).__name__}: {exc}")
        outcomes: list[Outcome] = [unpickled(o) if type(o) is bytes else o for o in box["out"]]
        if self.options["scheduler"] == "synchronous":
            outcomes = [o._replace(worker="dask-local-sync") for o in outcomes]
        return RunOutput(outcomes, submit, stamp_all(tasks, received))

    def info(self) -> dict[str, Any]:
        """Base facts plus the scheduler kind, chunk size and Dask's version."""
        out = super().info()
        out.update({
            "dask_version": self._version,
            "local_scheduler": self.options["scheduler"],
            "chunksize": self.options["chunksize"],
            "pool": type(self.pool).__name__ if self.pool else None,
        })
        return out
