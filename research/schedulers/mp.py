"""``multiprocessing.Pool``: ``map`` (contiguous chunks) and ``imap_unordered`` (one by one)."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.pool
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ..guard import init_worker
from ..params import Param
from ..tasks import (
    Outcome,
    Task,
    chunks,
    execute_packed,
    execute_packed_block,
    map_chunksize,
    noop,
    pack,
    unpack_block,
    unpack_blocks,
)
from .base import RunOutput, Scheduler, paced, stamp_all, stop_pacing, timeout_error
from .pool import START_METHOD_OPTION

#: Seconds ``Pool.terminate()`` may take before the adapter kills the workers itself.
TERMINATE_WAIT_S = 10.0


class QuietPool(multiprocessing.pool.Pool):
    """``multiprocessing.Pool`` whose worker-handler thread wakes for what it handles only:
    a worker's exit and a change of the pool (close, terminate, the last job done).

    The stock pool (CPython 3.8 and later, ``Pool._get_sentinels``) also makes that thread
    wait on the result pipe. While a result sits in the pipe unread, the pipe stays readable,
    so the thread loops (``_maintain_pool``, then ``wait`` returns at once) and holds the GIL
    the result-handler thread needs to read that very result. Measured here: 400 no-ops
    through ``imap_unordered`` on 2 workers took 12 ms to 2.1 s of wall time (the parent
    using more CPU than wall time), and 8-20 ms with this pool (``analysis/pool_spin.py``);
    the last result of 50 sleeps of 0.45 ms through ``Pool.map`` on 4 workers reached the
    client a median 1.2 ms (at most 4.4) after the last task ended, against 0.5 ms (at most
    0.7) with this pool (``experiments/extra/quiet_pool.toml``). The adapters use the stock
    pool unless asked (option ``quiet_handler``): a what-if of that fix."""

    def _get_sentinels(self) -> list[Any]:
        """What the worker handler waits on besides the workers: the stock pool's list
        without the result pipe (``self._outqueue._reader``), which stays readable while a
        result waits for the result handler."""
        return [self._change_notifier._reader]  # type: ignore[attr-defined]


class _PoolScheduler(Scheduler):
    options_spec = {
        "chunksize": Param("int>0", None, help="default: the library's"),
        "start_method": START_METHOD_OPTION,
        "quiet_handler": Param(
            "bool", False, help="true: a pool whose worker-handler thread does not wake for "
            "every result (research.schedulers.mp.QuietPool; not the stock library)",
            omit_default=True),
    }
    run_options = frozenset({"chunksize"})

    def _start(self) -> None:
        ctx = multiprocessing.get_context(self.options["start_method"])
        # Absent at its default (Param.omit_default): the stock pool.
        pool = QuietPool if self.options.get("quiet_handler") else multiprocessing.pool.Pool
        # Workers die with their parent even after a SIGKILL of the run, and leave Ctrl-C to
        # the harness (research.guard.init_worker). ctx.Pool(...) is Pool(..., context=ctx).
        self.pool: multiprocessing.pool.Pool = pool(self.n_workers, init_worker, context=ctx)

    def _shutdown(self) -> None:
        # A pool that failed to start (e.g. a script without a __main__ guard under
        # forkserver) has nothing to stop: its own error is what the user must see.
        pool = getattr(self, "pool", None)
        if pool is None:
            return
        # terminate(), not close()+join(), which waits for a hung task. terminate() first
        # drains the task pipe under the pool's read lock, which the worker waiting for work
        # holds: one killed there (the OOM killer, a user's kill) leaves it taken for good
        # and terminate() waits forever. So it runs in a thread with a bound (_unstick).
        stopper = threading.Thread(target=pool.terminate, name="research-pool-terminate",
                                   daemon=True)
        stopper.start()
        stopper.join(TERMINATE_WAIT_S)
        if stopper.is_alive():
            self._unstick(pool, stopper)
        if not stopper.is_alive():
            pool.join()

    def _unstick(self, pool: multiprocessing.pool.Pool, stopper: threading.Thread) -> None:
        """A ``terminate()`` still running after its bound: kill the workers, free the read
        lock a dead one may hold (a plain semaphore: any process may release it), let
        ``terminate()`` finish, and say so."""
        # terminate() has already told the worker handler to stop: once it has, no worker
        # is started behind the list copied here.
        handler = getattr(pool, "_worker_handler", None)
        if handler is not None:
            handler.join(TERMINATE_WAIT_S)
        workers = list(getattr(pool, "_pool", []))
        for proc in workers:
            if proc.exitcode is None:
                proc.kill()
        for proc in workers:
            proc.join(TERMINATE_WAIT_S)
        lock = getattr(getattr(pool, "_inqueue", None), "_rlock", None)
        if lock is not None:
            with contextlib.suppress(ValueError):  # not held: nothing to free
                lock.release()
        stopper.join(TERMINATE_WAIT_S)
        left = " (it still runs: the pool's threads are daemons)" if stopper.is_alive() else ""
        warnings.warn(f"{self.name}: Pool.terminate() had not finished after "
                      f"{TERMINATE_WAIT_S:g} s, most likely a worker died holding the pool's "
                      f"read lock; its workers were killed and the lock freed{left}",
                      RuntimeWarning, stacklevel=4)


class MpMap(_PoolScheduler):
    """``Pool.map``: chunks of ``ceil(n / (4 * workers))`` contiguous tasks by default."""

    name = "mp-map"
    description = "multiprocessing.Pool.map (contiguous chunks, default chunksize)"

    def bare_noop(self, n_tasks: int) -> None:
        self.pool.map(noop, range(n_tasks), chunksize=self.options["chunksize"])

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        # The chunks Pool.map would cut (its default size, or the option), cut here and sent
        # one per item: the same messages, taken by whichever worker is free, as plain tuples
        # run by one call per chunk and answered as packed arrays (research.tasks.
        # execute_packed_block): the harness then costs
        # about as much per task as the library's own loop.
        size = self.options["chunksize"] or map_chunksize(len(tasks), self.n_workers)
        blocks = chunks(pack(tasks), size)
        submit = stamp_all(tasks, time.time_ns())
        result = self.pool.map_async(execute_packed_block, blocks, chunksize=1)
        try:
            replies = result.get(timeout_s)
        except multiprocessing.TimeoutError:
            # Pool.map never returns if a worker died holding a chunk: the timeout is the guard.
            self.broken = True
            return RunOutput([], submit, {}, error=timeout_error(timeout_s))
        receive = stamp_all(tasks, time.time_ns())  # the moment the results are here
        return RunOutput(unpack_blocks(replies), submit, receive)


class MpDynamic(_PoolScheduler):
    """``Pool.imap_unordered`` with chunksize 1: each idle worker takes the next task (with a
    ``chunksize`` option: the next chunk of that many contiguous tasks)."""

    name = "mp-dynamic"
    description = "multiprocessing.Pool.imap_unordered, chunksize 1"
    # imap_unordered reads its iterable lazily, in the pool's task-handler thread: a paced
    # generator hands each task over when it arrives.
    supports_arrivals = True

    @classmethod
    def workload_refusal(cls, params: Mapping[str, Any],
                         options: Mapping[str, Any]) -> tuple[str, str] | None:
        if params.get("arrival", "batch") != "batch" and (options.get("chunksize") or 1) > 1:
            return ("arrival", "tasks arriving over time go one at a time; chunksize "
                               f"{options['chunksize']} would hold each chunk back until its "
                               "last task arrived (use 1)")
        return super().workload_refusal(params, options)

    def bare_noop(self, n_tasks: int) -> None:
        for _ in self.pool.imap_unordered(noop, range(n_tasks), self.options["chunksize"] or 1):
            pass

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        deadline = time.monotonic() + timeout_s
        submit: dict[int, int] = {}
        chunksize = self.options["chunksize"] or 1
        if self.arrivals:
            items: Any = paced(tasks, self.arrivals, submit, deadline)
        else:
            submit, items = stamp_all(tasks, time.time_ns()), tasks
        # Plain tuples on the wire (research.tasks.pack): each task and outcome is pickled on
        # its own, and a record class costs a lookup per pickle (several us each way).
        if chunksize > 1:
            # imap_unordered with chunksize > 1 returns a plain generator over its iterator,
            # which has no next(timeout=): chunk here (contiguous, as the pool does) and map
            # the chunks one by one, keeping the pool's own iterator and its timeout.
            blocks = chunks(pack(tasks), chunksize)
            it: Any = self.pool.imap_unordered(execute_packed_block, blocks, chunksize=1)
            n_results = len(blocks)
        else:
            it = self.pool.imap_unordered(execute_packed, map(tuple, items), chunksize=1)
            n_results = len(tasks)
        outcomes: list[Outcome] = []
        receive: dict[int, int] = {}
        new = tuple.__new__
        try:
            for _ in range(n_results):
                try:
                    got = it.next(timeout=max(0.0, deadline - time.monotonic()))
                except StopIteration:  # pacing reached the deadline: the rest never went
                    self.broken = True
                    return RunOutput(outcomes, submit, receive, error=timeout_error(timeout_s))
                except multiprocessing.TimeoutError:
                    self.broken = True
                    return RunOutput(outcomes, submit, receive, error=timeout_error(timeout_s))
                now = time.time_ns()  # a chunk's outcomes come back together
                if chunksize > 1:
                    got_outcomes = unpack_block(got)
                    receive.update(dict.fromkeys((o[0] for o in got_outcomes), now))
                    outcomes.extend(got_outcomes)
                else:
                    receive[got[0]] = now
                    outcomes.append(new(Outcome, got))
        finally:
            # The paced generator runs in the pool's task-handler thread, which terminate()
            # joins: stop it now (Ctrl-C, a timeout), not when its next task is due.
            stop_pacing(self.arrivals)
        return RunOutput(outcomes, submit, receive)
