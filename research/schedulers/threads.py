"""Threads: a thread pool, one submit per task.

A thread cannot be stopped: a task that hangs past the trial's timeout keeps running until the
process exits. The pool's threads are daemon threads, so such a task never keeps the process
from exiting (``ThreadPoolExecutor`` joins its threads at interpreter exit, so a hung task
would hang the run at its very end).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any

from ..tasks import Task, execute_in_thread, noop
from .base import ReceiveStamps, RunOutput, Scheduler
from .pool import submit_and_collect


class DaemonThreadPool(Executor):
    """A fixed pool of daemon threads named ``<prefix>_<i>`` (as ``ThreadPoolExecutor``
    names them), fed from one queue."""

    def __init__(self, n_threads: int, thread_name_prefix: str = "worker") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{thread_name_prefix}_{i}",
                                          daemon=True) for i in range(n_threads)]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            fut, fn, args, kwargs, stamps = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                # A stamped item is fn(task): called without unpacking (every step here runs
                # under the GIL the client and the other workers wait for).
                result = fn(args) if stamps is not None else fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the future, as the stdlib does
                fut.set_exception(exc)
                if stamps is not None:  # done: the client reads the exception from the future
                    stamps._stamp(args[0])
                continue
            fut.set_result(result)
            if stamps is not None:
                # The result and its stamp in one call, in this thread (no done-callback, and
                # the client does not take the future's lock again).
                stamps.hand_over(args[0], result)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue ``fn(*args, **kwargs)``; its future."""
        if self._closed:
            raise RuntimeError("cannot submit after shutdown")
        fut: Future[Any] = Future()
        self._queue.put((fut, fn, args, kwargs, None))
        return fut

    def submit_stamped(self, fn: Callable[[Task], Any], task: Task,
                       stamps: ReceiveStamps) -> Future[Any]:
        """:meth:`submit` of ``fn(task)``, stamped in ``stamps`` by the worker thread right
        after it has set the future's result: the moment a done-callback would run, without
        registering one per task (which takes the future's lock once more)."""
        if self._closed:
            raise RuntimeError("cannot submit after shutdown")
        fut: Future[Any] = Future()
        self._queue.put((fut, fn, task, None, stamps))
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work; cancel what is queued (``cancel_futures``); join the threads
        (``wait``). A thread stuck in a task is left behind: it dies with the process."""
        self._closed = True
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for t in self._threads:
                t.join()


class Threads(Scheduler):
    """A thread pool: shares the GIL, so CPU bodies do not run in parallel."""

    name = "threads"
    description = "thread pool, one submit per task"
    shares_gil = True
    in_process = True
    can_stop_hung_task = False
    supports_arrivals = True

    def _start(self) -> None:
        self.pool = DaemonThreadPool(self.n_workers, thread_name_prefix="worker")

    def _shutdown(self) -> None:
        # Threads cannot be killed: a broken pool (a task hung past the timeout) is not joined.
        self.pool.shutdown(wait=not self.broken, cancel_futures=True)

    def bare_noop(self, n_tasks: int) -> None:
        for fut in [self.pool.submit(noop, i) for i in range(n_tasks)]:
            fut.result()

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        out = submit_and_collect(self.pool, execute_in_thread, tasks, timeout_s, self.arrivals)
        self.broken = self.broken or out.error is not None
        return out
