"""The policy of each scheduler, as a small class overriding one method of
:class:`~research.simulate.core.Policy`; :data:`POLICIES` maps registry names to them."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from ..analysis.models import block_sizes, joblib_next_batch_size, pool_map_chunksize
from .core import Costs, Policy, State


def _chunks(n_tasks: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n_tasks))) for i in range(0, n_tasks, max(1, size))]


class Greedy(Policy):
    """Dynamic schedulers: one task at a time to the first free worker."""


class DaskQueued(Greedy):
    """Dask distributed's queuing of a root-ish group: a ``map`` of more tasks than twice the
    total threads waits on the scheduler, which keeps ``ceil(worker_saturation x threads)``
    tasks on each worker (1 thread per worker here: 2 at the default saturation of 1.1), so a
    worker starts its next task from its own queue while the scheduler refills the other slot.

    Why it matters for the costs: a freed slot is refilled only after a round trip (the
    worker's end through its 2 ms batched stream, the scheduler, its 5 ms batched stream back;
    ``Costs.requeue_s``), which a worker pays between tasks only when its tasks are shorter than
    the round trip (no-ops: about 4 ms per task per worker on 2 or 4 workers); tasks of 8 ms
    and more hide it and show only the worker's own cost per task (about 1.3 ms here). With one
    slot per worker (:class:`Greedy`) the no-op calibration's round trip is charged to every
    task of every trial. Smaller groups (assigned up front, then corrected by stealing) and
    ``worker_saturation = inf`` are modelled as a bounded queue too, as deep as the list."""

    name = "dask-queued"
    description = "greedy with ceil(1.1 x threads) = 2 tasks queued per worker"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        # Read once: pick() runs for every task of every trial the calibration simulates
        # (millions of calls per fit), and parsing the option there cost a fifth of the fit.
        sat = self.options.get("worker_saturation", 1.1)
        try:
            sat = float(sat)
        except (TypeError, ValueError):
            sat = 1.1
        self._prefetch = (1_000_000 if not math.isfinite(sat) or sat > 1e6
                          else max(1, math.ceil(sat)))

    @property
    def prefetch(self) -> int:
        return self._prefetch

    def pick(self, unit_index: int, ready_s: float, state: State) -> int:
        """Of the workers with a free slot soonest, the one free soonest (the scheduler sends
        a task to the least occupied worker: an idle one before one with a task running).

        Written out by hand (no tuples, no max()): the same comparisons, float for float, as
        keys ``(accept, max(free_at, accept))`` compared with a tolerance of 1e-15."""
        p, hold, free_at = self._prefetch, state.requeue_s, state.free_at
        best, best_a, best_f = 0, math.inf, math.inf
        for w, s in enumerate(state.slots):
            a = s[-p] + hold if len(s) >= p else 0.0
            if not a > ready_s:  # max(ready_s, a): the first of equals, as max() keeps it
                a = ready_s
            f = free_at[w]
            if a > f:
                f = a
            if a < best_a - 1e-15 or (abs(a - best_a) <= 1e-15 and f < best_f - 1e-15):
                best, best_a, best_f = w, a, f
        return best


class Blocks(Policy):
    """Contiguous blocks, one per worker, the first ``n % workers`` one task longer
    (ipyparallel's DirectView.map)."""

    name = "blocks"
    description = "contiguous blocks, one per worker"
    bounded = False

    def units(self, n_tasks: int, n_workers: int) -> list[list[int]]:
        out, i = [], 0
        for size in block_sizes(n_tasks, n_workers):
            out.append(list(range(i, i + size)))
            i += size
        return out

    def pick(self, unit_index: int, ready_s: float, state: State) -> int:
        return unit_index % state.n_workers


class ChunkedGreedy(Policy):
    """Contiguous chunks to whichever worker is free first (``Pool.map``; ipp-lb with a
    chunksize). ``chunksize`` from the trial's options; unset: ``default_chunksize``."""

    name = "chunked-greedy"
    description = "greedy over contiguous chunks"
    #: None: one task per chunk; "pool": multiprocessing's ceil(n / (4 x workers)).
    default_chunksize: str | None = "pool"

    def chunksize(self, n_tasks: int, n_workers: int) -> int:
        """The chunk size in force."""
        size = self.options.get("chunksize")
        if isinstance(size, int) and size > 0:
            return size
        if self.default_chunksize == "pool":
            return pool_map_chunksize(n_tasks, n_workers)
        return 1

    def units(self, n_tasks: int, n_workers: int) -> list[list[int]]:
        return _chunks(n_tasks, self.chunksize(n_tasks, n_workers))


class LoadBalanced(ChunkedGreedy):
    """ipyparallel's LoadBalancedView: one message per item (or chunk), at most ``hwm``
    outstanding per engine (default 1; 0: no limit), to the least loaded engine, the least
    recently used of equals (the controller's ``leastload`` scheme over its LRU-ordered
    engine list); with ``scheme = "lru"``, the least recently used engine below ``hwm``
    whatever its load. The random schemes (``plainrandom``, ``twobin``, ``weighted``) are
    modelled as ``leastload``."""

    name = "ipp-lb"
    description = ("greedy over chunks (default 1), bounded queue of hwm per engine, least "
                   "loaded then least recently used engine")
    default_chunksize = None

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        # Read once: pick() runs for every unit of every ipp-lb trial the calibration
        # simulates.
        hwm = self.options.get("hwm")
        self._prefetch = (1 if not isinstance(hwm, int) or hwm < 0
                          else 1_000_000 if hwm == 0 else hwm)
        self._by_load = self.options.get("scheme") != "lru"

    @property
    def prefetch(self) -> int:
        return self._prefetch

    def pick(self, unit_index: int, ready_s: float, state: State) -> int:
        """Of the engines with a free slot at ``ready_s`` (fewer than ``hwm`` units the
        controller has not heard back from), the one with the fewest such units, the least
        recently given one of equals; else the one whose slot frees first (the controller
        holds the task until an engine reports back), the least recently given one of equal
        times. Times compare with :meth:`Policy.pick`'s tolerance of 1e-15. The scan of
        every engine per unit (no heap, :meth:`Policy._schedule_greedy`) costs ipp-lb's share
        of a calibration fit about 1.7x; 12 engines at most here.

        Why not the lowest index on ties (:meth:`Policy.pick`): where the controller is the
        bottleneck most engines are idle whenever a task is handed over, and the lowest index
        then took most of them (5 to 57 tasks per engine predicted for ``holdout``'s
        exponential list on 8 engines, where they ran 31 to 48); ipyparallel moves an engine
        that gets a task to the back of its list (``TaskScheduler.add_job``)."""
        # Written out by hand (no key tuples). Keys compared in order: (no free slot,
        # outstanding units or when a slot frees, last unit given).
        p, hold = self._prefetch, state.requeue_s
        given = state.given or [-1] * state.n_workers
        best, best_c, best_l, best_g = 0, 2, math.inf, math.inf
        for w, s in enumerate(state.slots):
            a = s[-p] + hold if len(s) >= p else 0.0
            if a <= ready_s + 1e-15:  # a free slot: by units outstanding, then LRU
                c = 0
                # A unit is outstanding until the controller hears of its end (requeue_s
                # later); with one slot a free one means none. A worker's units end in the
                # order they were given: count back from the last until one was heard of
                # (hwm 0, no limit, would otherwise scan every unit it ever got).
                load = 0.0
                if p > 1 and self._by_load:
                    k = len(s) - 1
                    while k >= 0 and s[k] + hold > ready_s + 1e-15:
                        load += 1.0
                        k -= 1
            else:
                c, load = 1, a
            g = given[w]
            if c < best_c or (c == best_c and (load < best_l - 1e-15 or (
                    abs(load - best_l) <= 1e-15 and g < best_g))):
                best, best_c, best_l, best_g = w, c, load, g
        return best


class RoundRobin(ChunkedGreedy):
    """Chunks dealt to workers in turn, whatever they are doing (Ray's multiprocessing Pool:
    actor = chunk number mod actors)."""

    name = "round-robin"
    description = "chunks dealt to workers in turn"
    bounded = False

    def chunksize(self, n_tasks: int, n_workers: int) -> int:
        # imap and imap_unordered default to chunks of one; map to multiprocessing's formula.
        if self.options.get("method") in ("imap", "imap_unordered") and not isinstance(
                self.options.get("chunksize"), int):
            return 1
        return super().chunksize(n_tasks, n_workers)

    def pick(self, unit_index: int, ready_s: float, state: State) -> int:
        return unit_index % state.n_workers


class DaskChunks(ChunkedGreedy):
    """Greedy over chunks of ``chunksize`` (default 1): Dask's local scheduler and
    ``mp-dynamic`` (``imap_unordered`` with a chunksize)."""

    name = "greedy-chunks"
    description = "greedy over chunks of chunksize (default 1)"
    default_chunksize = None


class DaskLocal(DaskChunks):
    """Dask's local scheduler: its ready tasks leave in an order of its own, cut in chunks of
    ``chunksize`` (default 1), greedy over the chunks.

    The order is Dask's priority (``dask.order``) over random keys (``pure=False``): a shuffle
    of the list, a new one in every run, whatever the chunk size (with chunks of 1, the talk's
    worst case started its long tasks 4th, 5th, 6th and 15th). A trial's makespan is then one
    draw of many; the model runs :data:`ORDERS` seeded shuffles (seeded by the task count, so
    a prediction is reproducible) and keeps the schedule whose makespan is their median, the
    best single guess at a draw. Tasks that all last the same need one shuffle (any order
    gives the same makespan)."""

    name = "dask-local"
    description = "greedy over chunks of chunksize of a shuffled task list (median of shuffles)"
    #: Shuffles tried per prediction (odd: the median is one of them).
    ORDERS = 9

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._shuffle = 0  # which of the ORDERS shuffles units() cuts

    def units(self, n_tasks: int, n_workers: int) -> list[list[int]]:
        size = self.chunksize(n_tasks, n_workers)
        order = list(range(n_tasks))
        random.Random(n_tasks * 7919 + self._shuffle).shuffle(order)
        return [order[i:i + size] for i in range(0, n_tasks, size)]

    def schedule(self, durations: Sequence[float], n_workers: int,
                 costs: Costs) -> tuple[list[int], list[float], list[float]]:
        """The schedule of median makespan over :data:`ORDERS` shuffles (one if the tasks
        all last the same, or a duration is not finite)."""
        tries = (self.ORDERS if len(set(durations)) > 1 and math.isfinite(sum(durations))
                 else 1)
        runs = []
        try:
            for k in range(tries):
                self._shuffle = k
                worker, start, end = super().schedule(durations, n_workers, costs)
                span = max(end) - min(start) if start else 0.0
                runs.append((span, k, (worker, start, end)))
        finally:
            self._shuffle = 0  # units() outside schedule() cuts the first shuffle
        runs.sort(key=lambda r: (r[0], r[1]))
        if tries > 1:
            self.spread = (runs[0][0], runs[-1][0])
        return runs[len(runs) // 2][2]


class JoblibBatches(Policy):
    """joblib's ``Parallel`` on loky: the client cuts the list into batches as it goes and
    the executor's workers take them greedily, in order.

    What joblib 1.x does (``Parallel.dispatch_one_batch`` and ``AutoBatchingMixin``): it first
    dispatches the ``pre_dispatch`` (default ``2*n_jobs``) first tasks, in batches of
    ``len(slice) // n_jobs``; then each batch's completion callback dispatches one more batch.
    The callback runs in the executor's result thread as soon as the batch's result arrives:
    its end + ``requeue_s`` (the scheduler hears of the end, then sends). The main thread that
    hands the results to the caller only polls for them, every 10 ms (``Parallel._retrieve``),
    which ``return_s`` covers; it does not hold back the next batch. With ``batch_size="auto"`` the
    size starts at 1 and is retuned at each dispatch from the smoothed duration (dispatch to
    callback) of the batches of the size in force: below 0.2 s it at most doubles (to ``2 x
    int(size x 0.2 / duration)``), above 2 s it shrinks; the estimate restarts whenever the size
    changes. A slice of ``size x n_jobs`` tasks is cut into ``n_jobs`` batches; the last, short
    slice into batches of ``len // (10 x n_jobs)`` (at least 1), to even out the end. Each batch
    is one message (``dispatch_s`` on the client, serial with the callbacks); ``batch_size`` an
    integer: that size throughout (the same slicing). The short tasks of a long list thus travel
    in ever bigger batches, which is why joblib's cost per task falls as the list grows and why
    ``batch_size=1`` costs more.
    """

    name = "joblib-batches"
    description = "greedy over batches joblib sizes from their durations (batch_size auto)"
    bounded = False

    def pre_dispatch(self, n_workers: int) -> int | None:
        """Tasks dispatched before any completes (None: all of them)."""
        raw = str(self.options.get("pre_dispatch") or "2*n_jobs").replace(" ", "")
        if raw == "all":
            return None
        expr = raw.replace("n_jobs", str(n_workers))
        a, _, b = expr.partition("*")
        try:
            return max(1, int(a) * (int(b) if b else 1))
        except ValueError:
            return 2 * n_workers

    def schedule(self, durations: Sequence[float], n_workers: int,
                 costs: Costs) -> tuple[list[int], list[float], list[float]]:
        costs = costs.at(n_workers)
        n = len(durations)
        fixed = str(self.options.get("batch_size", "auto"))  # "auto", or an int (or its str)
        fixed_size = int(fixed) if fixed.isdigit() and int(fixed) > 0 else None
        size, smoothed = 1, 0.0  # AutoBatchingMixin's effective size and smoothed duration
        pre = self.pre_dispatch(n_workers)
        pre_end = n if pre is None else min(n, pre)
        worker, start, end = [0] * n, [0.0] * n, [0.0] * n
        free = [(0.0, w) for w in range(n_workers)]  # (free at, worker): FIFO queue, greedy
        ready_q: list[list[int]] = []  # joblib's _ready_batches
        nxt = 0  # next task of the list not yet sliced
        client = costs.start_s + costs.start_per_task_s * n  # when the client is free
        done: list[tuple[float, float, int]] = []  # (callback time, dispatch stamp, size)

        def batch_size() -> int:
            nonlocal size, smoothed
            if fixed_size is not None:
                return fixed_size
            old = size
            size = joblib_next_batch_size(old, smoothed)
            if size != old:
                smoothed = 0.0
            return size

        def next_batch(limit: int, from_original: bool) -> list[int] | None:
            nonlocal nxt
            bs = batch_size()
            if not ready_q:
                take = min(bs * n_workers, limit - nxt)
                if take <= 0:
                    return None
                cut = (max(1, take // (10 * n_workers)) if from_original
                       and take < bs * n_workers else max(1, take // n_workers))
                ready_q.extend(list(range(i, min(i + cut, nxt + take)))
                               for i in range(nxt, nxt + take, cut))
                nxt += take
            return ready_q.pop(0)

        self.sent = 0  # one message per batch (core_load)

        def run(batch: list[int]) -> None:
            nonlocal client
            self.sent += 1
            stamp = client
            client += costs.dispatch_s
            f, w = heapq.heappop(free)
            t = max(f, client) + costs.unit_s
            for i in batch:
                t += costs.worker_s
                worker[i], start[i] = w, t
                t += durations[i]
                end[i] = t
            heapq.heappush(free, (t, w))
            heapq.heappush(done, (t + costs.requeue_s, stamp, len(batch)))

        while (b := next_batch(pre_end, pre is None)) is not None:
            run(b)
        while done and (ready_q or nxt < n):
            cb, stamp, k = heapq.heappop(done)
            client = max(client, cb)
            if k == size:  # batch_completed: only batches of the size in force count
                smoothed = cb - stamp if smoothed == 0.0 else 0.8 * smoothed + 0.2 * (cb - stamp)
            b = next_batch(n, True)
            if b is not None:
                run(b)
        return worker, start, end


class CeleryNodes(Policy):
    """Celery: ``nodes`` worker nodes of ``n / nodes`` pool processes each. A node reserves
    messages while it holds fewer than ``prefetch_multiplier x processes`` not yet started
    (with ``acks_late``: not yet finished); its processes take its messages in order. The
    shared queue deals each message to the node that has room first, in turn on ties (the
    replay of :func:`~research.analysis.models.celery_prefetch`). One node is greedy."""

    name = "celery"
    description = "nodes reserve prefetch_multiplier x processes messages; greedy within"
    bounded = False  # the nodes fetch from the broker themselves: no hub to hear back from

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self._turn = 0

    def layout(self, n_workers: int) -> tuple[int, int, float, bool]:
        """(nodes, processes per node, window, acks_late) for ``n_workers``."""
        nodes = self.options.get("nodes")
        nodes = nodes if isinstance(nodes, int) and nodes > 0 else 1
        if self.options.get("pool") == "solo":
            nodes = n_workers
        nodes = min(nodes, max(1, n_workers))
        per = max(1, n_workers // nodes)
        pm = self.options.get("prefetch_multiplier")
        pm = pm if isinstance(pm, int) and pm >= 0 else 4
        acks_late = str(self.options.get("acks_late")).lower() in ("true", "1")
        return nodes, per, (pm * per if pm > 0 else math.inf), acks_late

    @property
    def greedy(self) -> bool:
        n = self.options.get("nodes")
        return (n in (None, 1) and self.options.get("pool") != "solo")

    def pick(self, unit_index: int, ready_s: float, state: State) -> int:
        nodes, per, window, acks_late = self.layout(state.n_workers)
        if unit_index == 0:
            self._turn = 0
        best_k, best_t = 0, math.inf
        for j in range(nodes):
            k = (self._turn + j) % nodes
            held: list[float] = []  # when each message the node holds leaves the window
            for w in range(k * per, min((k + 1) * per, state.n_workers)):
                marks = state.slots[w] if acks_late else state.starts[w]
                for x in reversed(marks):  # non-decreasing per worker: the held ones last
                    if x <= ready_s:
                        break
                    held.append(x)
            m = len(held)
            t = ready_s if m < window else sorted(held)[m - int(window)]
            if t < best_t - 1e-15:
                best_k, best_t = k, t
        self._turn = (best_k + 1) % nodes
        ws = range(best_k * per, min((best_k + 1) * per, state.n_workers))
        return min(ws, key=lambda w: (state.free_at[w], w))


class Prefetching(Greedy):
    """Greedy with a bounded per-worker queue of ``prefetch`` tasks (Celery: the prefetch
    multiplier, default 4)."""

    name = "prefetch"
    description = "greedy with a per-worker queue of `prefetch` tasks"

    @property
    def prefetch(self) -> int:
        p = self.options.get("prefetch_multiplier") or self.options.get("prefetch")
        return p if isinstance(p, int) and p > 0 else 4


#: Registry name -> policy class. Names not listed get :data:`DEFAULT_POLICY`.
POLICIES: dict[str, type[Policy]] = {
    "serial": Greedy, "threads": Greedy, "mp-dynamic": DaskChunks, "futures": Greedy,
    "dask": DaskQueued, "ray": Greedy, "parsl": Greedy, "dask-local": DaskLocal,
    "joblib": JoblibBatches, "mp-map": ChunkedGreedy, "ipp-direct": Blocks, "ipp-lb": LoadBalanced,
    "ray-pool": RoundRobin, "celery": CeleryNodes,
}
DEFAULT_POLICY: type[Policy] = Greedy


def base_name(label: str) -> str:
    """``mp-map[chunksize=4]`` -> ``mp-map``."""
    return str(label).partition("[")[0]


def policy_for(scheduler: str, options: Mapping[str, Any] | None = None) -> Policy:
    """The policy of a scheduler (a registry name or a labelled variant) with its options."""
    return POLICIES.get(base_name(scheduler), DEFAULT_POLICY)(options)


__all__ = ["DEFAULT_POLICY", "POLICIES", "Blocks", "CeleryNodes", "ChunkedGreedy", "DaskChunks",
           "DaskQueued", "Greedy", "JoblibBatches", "LoadBalanced",
           "Prefetching", "RoundRobin", "base_name", "policy_for"]
