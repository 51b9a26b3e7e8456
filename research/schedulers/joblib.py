"""joblib: ``Parallel(n_jobs=n)`` on the loky backend, results as each batch returns.

How work is assigned: ``Parallel`` cuts the task list into batches and hands them to loky's
process pool executor, whose idle workers take the next queued batch (self-scheduling, like
``Pool.imap_unordered``). ``pre_dispatch`` (default ``"2*n_jobs"``) bounds how many batches are
queued ahead; each finished batch dispatches the next one. With ``batch_size="auto"`` (the
default) batches start at one task; while a batch takes less than 0.2 s from dispatch to
completion the next size becomes ``min(2 x size, 2 x size x 0.2 s / duration)``, and above 2 s
it shrinks again. Tasks are sliced ``batch_size x n_jobs`` at a time and that slice is split in
``n_jobs`` batches; near the end of the list (a slice shorter than that) batches of
``len(slice) // (10 x n_jobs)`` (at least one) spread the tail. So: dynamic, with batches that
grow for short tasks and shrink again for the tail.

Results come back with ``return_as="generator_unordered"``, one by one as they arrive (tasks of
one batch arrive together), and each gets its own receive stamp; the submit stamp is the moment
the whole list is handed to ``Parallel``.

Workers are loky's reusable executor: the same processes serve every trial (``Parallel`` reuses
the executor while its arguments stay the same) and are only stopped by :meth:`Joblib._shutdown`,
which shuts the executor down with ``kill_workers=True``, waits (bounded) for the processes and
stops loky's own resource-tracker process (it would otherwise live as long as this
interpreter). Before the tracker stops, everything still registered with it is released, so
it is not restarted later: joblib's exit-time folder clean-ups (collected where joblib
registers them, see :class:`_AtexitShim`), the shut-down executor (dropped and collected) and
the semaphores of dead workers (reaped). A worker that dies mid-trial makes joblib raise
``TerminatedWorkerError``: the trial fails and the cluster is restarted.

Each worker labels itself ``joblib-<pid>`` on its first task. The ``multiprocessing`` backend
instead makes a new pool per ``Parallel`` call (joblib's design), so its start-up lands in
every trial.

Timeouts: ``Parallel(timeout=...)`` aborts (and kills the workers of) a run in which one batch
waits longer than that for its result; the trial's deadline is also checked as results arrive.
A hang is thus bounded by ``timeout_s``; a run whose tasks all finish but late is caught at the
next result. Temporary files (memmapped arguments, never used by these small tasks) go to the
work dir.

The library keeps no per-task timing records, so there is no native witness. ``joblib``
vendors loky (``joblib.externals.loky``): only joblib's version is recorded.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from .. import tasks as _tasks
from ..errors import ParamError
from ..params import Param
from ..tasks import Outcome, Task, execute, noop
from .base import RunOutput, Scheduler, stamp_all, timeout_error
from .cluster import EXIT_WAIT_S, ClusterProcesses, reap

BACKENDS = ("loky", "multiprocessing")
PRE_DISPATCH = re.compile(r"all|\d+|n_jobs|\d+\*n_jobs|n_jobs\*\d+")
WARM_SLEEP_S = 0.1
#: Command-line mark of loky's processes (workers and its resource tracker).
LOKY = "joblib.externals.loky"


def execute_labelled(task: Task) -> Outcome:
    """:func:`~research.tasks.execute` labelled ``joblib-<pid>`` (set on the first call)."""
    if _tasks.WORKER_LABEL is None:
        _tasks.set_worker_label(f"joblib-{os.getpid()}")
    return execute(task)


def execute_labelled_packed(task: tuple[Any, ...]) -> tuple[Any, ...]:
    """:func:`execute_labelled` on the plain-tuple wire format (:func:`research.tasks.pack`):
    a Task or Outcome pickles through a Python call, a plain tuple in C."""
    if _tasks.WORKER_LABEL is None:
        _tasks.set_worker_label(f"joblib-{os.getpid()}")
    return _tasks.execute_packed(task)


class _AtexitShim:
    """Stands in for ``atexit`` inside ``joblib._memmapping_reducer`` to see its finalisers.

    Every ``Parallel`` call registers a temporary folder with loky's resource tracker and an
    ``atexit`` finaliser that unregisters it (joblib unregisters the finaliser again when it
    cleans the folder itself). Once :meth:`Joblib._stop_resource_tracker` has stopped the
    tracker, a finaliser left for exit would start a new tracker that knows none of the folders
    and prints a ``KeyError`` for each. A timed-out (aborted) call leaves such finalisers behind
    in an executor joblib has already dropped, so they are collected here, where joblib
    registers them, and run at shutdown before the tracker stops.
    """

    def __init__(self, real: Any) -> None:
        self.real = real
        self.pending: list[Callable[[], Any]] = []

    def register(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.pending.append(fn)
        return self.real.register(fn, *args, **kwargs)

    def unregister(self, fn: Callable[..., Any]) -> None:
        self.pending = [f for f in self.pending if f is not fn]
        self.real.unregister(fn)

    def run_pending(self) -> None:
        """Run (and forget) the finalisers still waiting for exit."""
        pending, self.pending = self.pending, []
        for fn in pending:
            self.real.unregister(fn)
            with contextlib.suppress(Exception):
                fn()


def _forget_executor(loky: Any) -> None:
    """Drop loky's (and joblib's) reference to the shut-down executor and collect it now.

    Its queues hold semaphores registered with loky's resource tracker; collected at exit,
    after the tracker is stopped, they would start a new one that knows none of them. The next
    ``Parallel`` call simply creates a new executor.
    """
    if loky is not None and hasattr(loky, "_executor"):
        loky._executor = None
        loky._executor_kwargs = None
    jl_executor: Any = sys.modules.get("joblib.executor")  # private attributes below
    if jl_executor is not None and hasattr(jl_executor, "_executor_args"):
        jl_executor._executor_args = None
    # An executor that joblib replaced after a dead worker is still referenced by its manager
    # thread until that thread ends; wait (bounded) for those threads, then collect.
    deadline = time.monotonic() + EXIT_WAIT_S
    for thread in threading.enumerate():
        if type(thread).__name__ == "_ExecutorManagerThread":
            thread.join(max(0.0, deadline - time.monotonic()))
    # A worker that died is still listed in multiprocessing's set of children (with the
    # semaphore it was started with) until someone asks for the active ones.
    multiprocessing.active_children()
    gc.collect()


def _atexit_shim() -> _AtexitShim | None:
    """The shim inside joblib's memmapping module, installed on first use (private API)."""
    mod: Any = sys.modules.get("joblib._memmapping_reducer")  # private API
    if mod is None or not hasattr(mod, "atexit"):
        return None
    if not isinstance(mod.atexit, _AtexitShim):
        mod.atexit = _AtexitShim(mod.atexit)
    return mod.atexit


class Joblib(Scheduler):
    """``joblib.Parallel(n_jobs=n)`` on loky, ``return_as="generator_unordered"``."""

    name = "joblib"
    description = "joblib.Parallel on loky (batch_size auto), results as they arrive"
    options_spec = {
        "batch_size": Param("str", "auto", help="'auto' or a positive integer as a string "
                            "(TOML: \"auto\", \"4\"); also an integer"),
        "pre_dispatch": Param("str", "2*n_jobs", help="batches queued ahead, e.g. '2*n_jobs', "
                              "'all' or a number"),
        "backend": Param("str", "loky", BACKENDS),
    }
    run_options = frozenset({"batch_size", "pre_dispatch"})
    distributions = ("joblib",)  # loky is vendored: joblib.externals.loky
    # loky's workers (python -m ...popen_loky_posix) and its resource tracker (-c "from ...")
    process_names = (f"{LOKY}.backend.popen_loky", f"{LOKY}.backend.resource_tracker")
    slow_start = False

    @classmethod
    def validate_options(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """As the base, but ``batch_size`` may be an integer or ``"auto"``."""
        raw = dict(raw)
        bs = raw.get("batch_size")
        if isinstance(bs, int) and not isinstance(bs, bool):
            raw["batch_size"] = str(bs)
        out = super().validate_options(raw)
        bs = out["batch_size"]
        if bs != "auto" and not (bs.isdigit() and int(bs) > 0):
            raise ParamError("batch_size", f"expected 'auto' or an integer >= 1, got {bs!r}")
        # joblib evaluates pre_dispatch with n_jobs bound; accept the forms its docs show.
        if not PRE_DISPATCH.fullmatch(out["pre_dispatch"].replace(" ", "")):
            raise ParamError("pre_dispatch", f"expected 'all', a number, 'n_jobs' or "
                             f"'<number>*n_jobs', got {out['pre_dispatch']!r}")
        return out

    def __init__(self, n_workers: int, options: Mapping[str, Any] | None = None,
                 workdir: Path | None = None) -> None:
        super().__init__(n_workers, options, workdir)
        self._temp_folder: str | None = None
        # loky's workers spawned since start; the tracker is stopped on its own, last.
        self.procs = ClusterProcesses(lambda cmd: LOKY in cmd and "resource_tracker" not in cmd)
        self._pids: set[int] = set()
        self._version: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def _start(self) -> None:
        import joblib
        import joblib._memmapping_reducer  # noqa: F401  (for the shim below)

        self._version = joblib.__version__
        self.procs.snapshot()
        _atexit_shim()
        if self.workdir is not None:
            folder = Path(self.workdir) / "joblib"
            folder.mkdir(parents=True, exist_ok=True)
            self._temp_folder = str(folder)
        # The executor itself starts with the first Parallel call (warm-up).

    def _parallel(self, timeout_s: float | None = None, return_as: str = "generator_unordered"
                  ) -> Any:
        import joblib

        bs = self.options["batch_size"]
        return joblib.Parallel(
            n_jobs=self.n_workers, backend=self.options["backend"],
            batch_size=bs if bs == "auto" else int(bs), pre_dispatch=self.options["pre_dispatch"],
            return_as=return_as, timeout=timeout_s, temp_folder=self._temp_folder,
        )

    def _shutdown(self) -> None:
        # Before stopping: the workers (and, for the multiprocessing backend, the processes
        # that ran tasks, known by pid) while they are still our children.
        self.procs.add(p for p in psutil.Process().children(recursive=True)
                       if p.pid in self._pids)
        self.procs.collect()
        loky = sys.modules.get("joblib.externals.loky.reusable_executor")
        executor = getattr(loky, "_executor", None) if loky else None
        if executor is not None:
            with contextlib.suppress(Exception):
                executor.shutdown(wait=True, kill_workers=True)
        del executor  # collected by _forget_executor, while the tracker still runs
        shim = _atexit_shim()
        if shim is not None:
            shim.run_pending()
        _forget_executor(loky)
        self.procs.reap(EXIT_WAIT_S)
        self._stop_resource_tracker()

    @staticmethod
    def _stop_resource_tracker() -> None:
        """Stop loky's resource tracker: a helper process that otherwise outlives the cluster.

        It is started again on demand by the next executor; closing its pipe makes it exit.
        """
        mod = sys.modules.get("joblib.externals.loky.backend.resource_tracker")
        tracker = getattr(mod, "_resource_tracker", None) if mod else None
        pid = getattr(tracker, "_pid", None)
        if tracker is None or pid is None:
            return
        with contextlib.suppress(Exception):
            proc = psutil.Process(pid)
            stop = getattr(tracker, "_stop", None)
            if stop is not None:
                # The stdlib's _stop closes the pipe, then waits for the pid (it exits then).
                stop()
            reap([proc], 5.0)

    # -- trials ----------------------------------------------------------------------------
    def warm(self, timeout_s: float = 60.0) -> None:
        """Run ``n`` short sleeps until ``n`` distinct worker processes have answered."""
        deadline = time.monotonic() + timeout_s
        seen: set[str] = set()
        while time.monotonic() < deadline:
            tasks = [Task(-1 - i, "sleep", WARM_SLEEP_S, WARM_SLEEP_S)
                     for i in range(self.n_workers)]
            out = self.run(tasks, max(deadline - time.monotonic(), 1.0))
            if out.error:
                self.broken = True
                raise RuntimeError(f"{self.name}: warm-up failed: {out.error}")
            seen |= {o.worker for o in out.outcomes}
            if len({o.worker for o in out.outcomes}) == self.n_workers:
                return
        self.broken = True
        raise RuntimeError(f"{self.name}: warm-up saw {len(seen)} of {self.n_workers} workers "
                           f"within {timeout_s:g} s")

    def bare_noop(self, n_tasks: int) -> None:
        from joblib import delayed

        for _ in self._parallel()(delayed(noop)(i) for i in range(n_tasks)):
            pass

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        from joblib import delayed

        deadline = time.monotonic() + timeout_s
        submit = stamp_all(tasks, time.time_ns())
        outcomes: list[Outcome] = []
        receive: dict[int, int] = {}
        error: str | None = None
        gen = self._parallel(timeout_s)(delayed(execute_labelled_packed)(tuple(t))
                                        for t in tasks)
        new = tuple.__new__
        try:
            for out in gen:
                receive[out[0]] = time.time_ns()
                outcomes.append(new(Outcome, out))
                if time.monotonic() > deadline and len(outcomes) < len(tasks):
                    error = timeout_error(timeout_s)
                    break
        except (TimeoutError, multiprocessing.TimeoutError):  # joblib raises the latter
            error = timeout_error(timeout_s)
        except Exception as exc:  # a worker that died (TerminatedWorkerError) and the like
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if error is not None:
                self.broken = True
                with contextlib.suppress(Exception):
                    gen.close()  # aborts the run; loky's workers are killed
        self._pids.update(o.pid for o in outcomes)
        return RunOutput(outcomes, submit, receive, error=error)

    def info(self) -> dict[str, Any]:
        """Base facts plus the options in force, the library version and processes seen."""
        out = super().info()
        out.update({
            "joblib_version": self._version,
            "backend": self.options["backend"],
            "batch_size": self.options["batch_size"],
            "pre_dispatch": self.options["pre_dispatch"],
            "worker_processes_seen": len(self._pids),
        })
        return out
