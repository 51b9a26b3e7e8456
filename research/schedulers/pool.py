"""What the local pool adapters share (threads, ``concurrent.futures``, ``multiprocessing``):
start methods, and running a task list one submit per task with per-task receive stamps."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from typing import Any

from ..params import Param
from ..tasks import Outcome, Task
from .base import ReceiveStamps, RunOutput, paced, timeout_error

#: ``multiprocessing`` start methods a process pool accepts; forkserver is the default (fork is
#: unsafe with threads in the client, spawn re-imports everything per worker).
START_METHODS = ("forkserver", "spawn", "fork")
#: The ``start_method`` option of a process pool adapter.
START_METHOD_OPTION = Param("str", "forkserver", START_METHODS)


def submit_and_collect(
    pool: Executor, fn: Callable[[Any], Any], tasks: Sequence[Task], timeout_s: float,
    arrivals: Mapping[int, float] | None = None, packed: bool = False,
) -> RunOutput:
    """Submit one future per task (each when it arrives: :func:`paced`), then wait for all of
    them until the deadline.

    The receive stamp is taken by a done-callback (:class:`ReceiveStamps`), which runs in the
    client process the moment the result is there. Every call on a future takes its lock (and,
    in a thread pool, competes for the GIL with the workers), so each future is touched twice
    only: its callback is added, and a stamped (hence finished) one is read once.

    ``packed``: ``fn`` takes and returns plain tuples (:func:`research.tasks.execute_packed`),
    for a process pool that pickles each task and each outcome on its own.
    """
    submit: dict[int, int] = {}
    futures: list[tuple[int, Future[Any]]] = []
    stamps = ReceiveStamps(len(tasks))
    deadline = time.monotonic() + timeout_s
    # Our thread pool stamps in its worker threads, right after setting each result.
    stamped = getattr(pool, "submit_stamped", None)
    if stamped is not None and not arrivals:
        # A batch into a stamping pool: paced()'s loop inlined (a generator step is about
        # 0.3 us per task, taken under the GIL the pool's threads are waiting for).
        time_ns = time.time_ns
        for task in tasks:
            tid = task[0]
            submit[tid] = time_ns()
            futures.append((tid, stamped(fn, task, stamps)))
    else:
        for task in paced(tasks, arrivals, submit, deadline):
            if stamped is not None:
                fut = stamped(fn, task, stamps)
            else:
                fut = pool.submit(fn, tuple(task) if packed else task)
                fut.add_done_callback(stamps.callback(task.task_id))
            futures.append((task.task_id, fut))
    receive = stamps.wait(deadline - time.monotonic())
    values = stamps.values  # a stamping pool's results (each future's lock not taken again)
    if len(values) == len(tasks) == len(receive):
        return RunOutput(list(values.values()), submit, receive)  # all in, none failed
    outcomes: list[Outcome] = []
    new = tuple.__new__
    error = timeout_error(timeout_s) if len(receive) < len(tasks) else None
    for tid, fut in futures:
        if tid not in receive:  # not finished by the deadline (a stamp means done)
            fut.cancel()
            continue
        if tid in values:
            outcomes.append(values[tid])
            continue
        try:
            outcomes.append(new(Outcome, fut.result(0)) if packed else fut.result(0))
        except Exception as exc:  # the pool itself failed (e.g. a worker process died)
            error = error or f"{type(exc).__name__}: {exc}"
            del receive[tid]
    return RunOutput(outcomes, submit, receive, error=error)
