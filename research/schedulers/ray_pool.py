"""Ray's ``multiprocessing.Pool`` drop-in: ``ray.util.multiprocessing.Pool`` on a local Ray.

How work is assigned (``ray/util/multiprocessing/pool.py``, Ray 2.60): the pool has one actor
(worker process, ``num_cpus=0``) per pool process. Every map cuts the list into contiguous
chunks of ``chunksize`` items and deals chunk ``k`` to actor ``k mod n_actors``, whatever that
actor is doing: a static round robin of chunks. ``map`` submits all chunks at once (default
chunksize ``ceil(n / (4 x actors))``, as ``multiprocessing.Pool``); ``imap`` and
``imap_unordered`` submit one chunk per actor, then one more each time a chunk returns, but the
next chunk still goes to actor ``k mod n_actors``, not to the one that freed up (default
chunksize 1). Long tasks at every ``n_actors``-th position therefore all queue on one actor
(ray-project/ray#29453); with chunk size ``c`` the fatal stride is ``c x n_actors``.

Results: ``map`` returns them together (one receive stamp for all); ``imap``/``imap_unordered``
yield them one by one (tasks of one chunk arrive together), each stamped as it arrives. Ray's
result thread polls with ``ray.wait(timeout=0.1)``, so a result can wait up to 0.1 s before the
client sees it.

The cluster is the ``ray`` adapter's (this class extends :class:`~.ray.Ray`): a local Ray started
the same way (loopback only, session dir in the work dir, usage stats off) or an existing one
(``address``), and the same shutdown, which waits for and reaps every Ray process. The pool's
actors are created at start, labelled ``ray-<worker id>`` on their first task, and killed by
``Pool.terminate`` before Ray shuts down.

Native witness: Ray's timeline has one span per chunk (an actor task ``PoolActor.run_batch``),
read as the ray adapter reads its tasks' (:func:`~.ray.native_table`) and given one row per
chunk with ``task_id`` null (or the task, for a chunk of one) and ``task_ids`` listing the
chunk's tasks. The chunks' object refs come from the pool's result thread (private attributes,
hence the guard: without them there is simply no witness).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..params import Param
from ..tasks import Outcome, Task, chunks, map_chunksize, pack, unpack_block, unpack_blocks
from .base import RunOutput, stamp_all, timeout_error
from .ray import Ray, execute_labelled_block, import_ray, native_table, timeline_events

METHODS = ("map", "imap", "imap_unordered")
WARM_SLEEP_S = 0.1
#: Seconds shutdown waits for the pool's result threads to end once its actors are killed
#: (their chunks then fail within about a second).
RESULT_THREAD_WAIT_S = 5.0


class RayPool(Ray):
    """``ray.util.multiprocessing.Pool(n)``: chunks dealt to actors in turn."""

    name = "ray-pool"
    supports_arrivals = False  # a Pool map: the whole list up front
    description = "ray.util.multiprocessing.Pool (chunks dealt to actors round robin)"
    options_spec = {
        "method": Param("str", "map", METHODS),
        "chunksize": Param("int>0", None, help="default: the library's (map: ceil(n / (4 x "
                           "actors)), imap/imap_unordered: 1)"),
        # Not Ray's `receive`: a pool's results come back as its method returns them.
        **{k: v for k, v in Ray.options_spec.items() if k != "receive"},
    }
    run_options = frozenset({"method", "chunksize"})
    # distributions, process_names, slow_start: the ray adapter's (the same cluster)

    def __init__(self, n_workers: int, options: Mapping[str, Any] | None = None,
                 workdir: Path | None = None) -> None:
        super().__init__(n_workers, options, workdir)
        self.pool: Any = None
        #: The pool's result threads that may still run (a map cut short by its timeout):
        #: ended at shutdown before Ray is (:meth:`_stop_cluster`).
        self._result_threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------
    def _start_cluster(self) -> None:
        super()._start_cluster()  # a local Ray (or the cluster at ``address``), as ``ray``
        import_ray()
        from ray.util.multiprocessing import Pool

        # Ray is initialised: the pool uses it and starts n actors, waiting until they answer.
        self.pool = Pool(processes=self.n_workers)

    def _stop_cluster(self) -> None:
        pool, self.pool = self.pool, None
        self._end_result_threads()
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.terminate()  # ray.kill on every actor
        self._join_result_threads(RESULT_THREAD_WAIT_S)
        super()._stop_cluster()

    def _keep_result_thread(self, handle: Any) -> None:
        """Remember the result thread of a map (private attribute: none, nothing to keep)."""
        self._result_threads = [t for t in self._result_threads if t.is_alive()]
        thread = getattr(handle, "_result_thread", None)
        if isinstance(thread, threading.Thread) and thread.is_alive():
            self._result_threads.append(thread)

    def _end_result_threads(self) -> None:
        """Have every result thread still running end, while Ray still runs.

        Ray's ``ResultThread`` polls ``ray.wait`` every 0.1 s while it has results out, and
        otherwise waits on its queue for the next chunk of an ``imap``, which a cut-short map
        never sends. Each gets the end marker (no more chunks: it stops once what it has is
        in) and then one result that is ready at once, so that even one with nothing out
        wakes, counts it and returns. Those with results out end once their chunks fail with
        the actors (:meth:`_stop_cluster` kills them next)."""
        import ray

        for thread in self._result_threads:
            add = getattr(thread, "add_object_ref", None)
            if thread.is_alive() and add is not None:
                with contextlib.suppress(Exception):
                    add(getattr(thread, "END_SENTINEL", None))
                    add(ray.put([]))  # an empty chunk: nothing to count as a result

    def _join_result_threads(self, timeout_s: float) -> None:
        """Wait (bounded) for the result threads to end: one that polled after
        ``ray.shutdown`` would start a new cluster (see :func:`.ray._auto_init`)."""
        deadline = time.monotonic() + timeout_s
        for thread in self._result_threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._result_threads = [t for t in self._result_threads if t.is_alive()]

    def _threads_running(self) -> list[threading.Thread]:
        return list(self._result_threads)

    # -- trials ----------------------------------------------------------------------------
    def warm(self, timeout_s: float = 60.0) -> None:
        """One short sleep per actor (chunksize 1: actor ``k`` gets task ``k``)."""
        n = self.effective_workers
        tasks = [Task(-1 - i, "sleep", WARM_SLEEP_S, WARM_SLEEP_S) for i in range(n)]
        out = self._map(tasks, timeout_s, "map", 1)
        if out.error:
            self.broken = True
            raise RuntimeError(f"{self.name}: warm-up failed: {out.error}")
        seen = len({o.worker for o in out.outcomes})
        if seen != n:
            self.broken = True
            raise RuntimeError(f"{self.name}: warm-up saw {seen} of {n} actors")

    def bare_noop(self, n_tasks: int) -> None:
        from ..tasks import noop

        method, chunksize = self.options["method"], self.options["chunksize"]
        if method == "map":  # Pool.map is map_async(...).get(): its thread is kept
            handle = self.pool.map_async(noop, range(n_tasks), chunksize=chunksize)
            self._keep_result_thread(handle)
            handle.get()
        else:  # the same call run() makes, results drained one by one
            handle = getattr(self.pool, method)(noop, list(range(n_tasks)), chunksize or 1)
            self._keep_result_thread(handle)
            for _ in handle:
                pass

    def run(self, tasks: Sequence[Task], timeout_s: float) -> RunOutput:
        return self._map(tasks, timeout_s, self.options["method"], self.options["chunksize"])

    def _map(self, tasks: Sequence[Task], timeout_s: float, method: str,
             chunksize: int | None) -> RunOutput:
        deadline = time.monotonic() + timeout_s
        items = list(tasks)
        outcomes: list[Outcome] = []
        receive: dict[int, int] = {}
        submit = stamp_all(tasks, time.time_ns())
        handle: Any = None
        # The pool's chunks (its default size, or the option), cut here and sent one per item
        # with chunksize 1: chunk k still goes to actor k mod n, as plain tuples run by one
        # call per chunk (research.tasks.execute_packed_block), not by the actor's loop per item.
        if method == "map":
            chunksize = chunksize or map_chunksize(len(items), self.n_workers)
        else:
            chunksize = chunksize or 1  # Pool.imap's own default
        blocks: list[Any] = chunks(pack(items), chunksize)
        if not any(t.payload is not None for t in items):
            # Each chunk as one pickle (and answered as a PackedBlock): Ray serialises a list
            # of tuples with cloudpickle, a Python call per object (a 6,250-task chunk's
            # outcomes: 5 us per task, against 2 us as bytes). A bytes payload stays a plain
            # tuple's field, so that it is not copied into a pickle first.
            blocks = [pickle.dumps(b, protocol=pickle.HIGHEST_PROTOCOL) for b in blocks]
        try:
            if method == "map":
                handle = self.pool.map_async(execute_labelled_block, blocks, chunksize=1)
                self._keep_result_thread(handle)
                got = handle.get(timeout_s)
                receive = stamp_all(tasks, time.time_ns())  # the moment the results are here
                outcomes = unpack_blocks(got)
            else:
                handle = getattr(self.pool, method)(execute_labelled_block, blocks, chunksize=1)
                self._keep_result_thread(handle)
                for _ in range(len(blocks)):
                    got = handle.next(timeout=max(0.0, deadline - time.monotonic()))
                    if isinstance(got, BaseException):
                        # imap hands a chunk's failure (a dead actor) back as a result
                        raise got
                    now = time.time_ns()  # a chunk's outcomes come back together
                    got_outcomes = unpack_block(got)
                    receive.update(dict.fromkeys((o[0] for o in got_outcomes), now))
                    outcomes.extend(got_outcomes)
        except (TimeoutError, multiprocessing.TimeoutError):
            self.broken = True
            return RunOutput(outcomes, submit, receive, error=timeout_error(timeout_s))
        except Exception as exc:  # a dead actor (RayActorError) and the like
            self.broken = True
            return RunOutput(outcomes, submit, receive, error=f"{type(exc).__name__}: {exc}")
        self._labels_seen.update(o.worker for o in outcomes)
        table = None
        if self.collect_native and outcomes and all(t.task_id >= 0 for t in items):
            table = self._chunk_native(handle, items, chunksize)
        info = {"native_rows": len(table)} if table is not None else {}
        return RunOutput(outcomes, submit, receive, native=table, info=info)

    def _chunk_native(self, handle: Any, items: Sequence[Task], chunksize: int) -> Any:
        """Ray's own records of this map's chunks, one row each (see the module docstring).

        Polls like :meth:`Ray._native` until every chunk's span is there or
        :attr:`native_wait_s` has passed; never fails a trial.
        """
        try:
            import ray

            refs = list(handle._result_thread._object_refs)  # chunk order = submission order
            members = {ref.task_id().hex(): [t.task_id for t in
                                             items[k * chunksize:(k + 1) * chunksize]]
                       for k, ref in enumerate(refs)}
            ids = {h: k for k, h in enumerate(members)}
            deadline = time.monotonic() + self.native_wait_s
            while True:
                table = native_table(timeline_events(ray), ids)
                got = set() if table is None else set(table.ray_task_id)
                if set(ids) <= got or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        except Exception:
            return None
        if table is None:
            return None
        table = table.rename(columns={"task_id": "chunk"})
        table["task_ids"] = [members[h] for h in table.ray_task_id]
        table["task_id"] = [m[0] if len(m) == 1 else None for m in table.task_ids]
        table["task_id"] = table["task_id"].astype("Int64")
        table["source"] = "ray.timeline (PoolActor.run_batch)"
        return table

    def info(self) -> dict[str, Any]:
        """The ray adapter's facts plus the map method and chunk size."""
        out = super().info()
        out.pop("task_options", None)
        out.update({"method": self.options["method"], "chunksize": self.options["chunksize"],
                    "pool_actors": self.n_workers})
        return out
