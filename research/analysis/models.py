"""Schedule models: the makespan a task list would have under a given way of handing it out.

Contiguous blocks for a DirectView map, list scheduling (greedy) for a load-balanced
scheduler, greedy over chunks for chunked maps, a round robin of chunks (Ray's Pool), joblib's
auto batching, and the lower bound no schedule beats. They read planned durations, never
measured ones, so they describe the workload under a policy with zero overhead. (One model
also reads the order in which a trial's tasks started: Dask's local scheduler picks a new
random order in every trial, and the records are the only place it is written down.)

:data:`SCHEDULER_MODELS` is the table that gives every registered scheduler its model: the
scheduler's name -> a :class:`SchedulerModel` whose function reads the trial's task list and
the scheduler's options (``chunksize``, ``method``, ``batch_size``...). :func:`model_for_trial`
is what the summary uses to give each trial a ``model_s``.
"""

from __future__ import annotations

import bisect
import heapq
import math
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def greedy_makespan(durations: Sequence[float] | np.ndarray, n_workers: int) -> float:
    """List scheduling in the given order: each task goes to the worker that frees up first.

    This is what an ideal dynamic (load-balanced) scheduler with zero overhead achieves.
    """
    d = np.asarray(durations, dtype="float64")
    d = d[np.isfinite(d)]
    if len(d) == 0 or n_workers < 1:
        return math.nan
    if n_workers == 1:
        return float(d.sum())
    if len(d) <= n_workers:
        return float(d.max())
    free = [0.0] * n_workers
    for x in d.tolist():
        heapq.heapreplace(free, free[0] + x)
    return float(max(free))


def lower_bound(durations: Sequence[float] | np.ndarray, n_workers: int) -> float:
    """``max(sum / n_workers, max)``: no schedule of these tasks on ``n_workers`` is shorter."""
    d = np.asarray(durations, dtype="float64")
    d = d[np.isfinite(d)]
    if len(d) == 0 or n_workers < 1:
        return math.nan
    return float(max(d.sum() / n_workers, d.max()))



def block_sizes(n_tasks: int, n_workers: int) -> list[int]:
    """Contiguous block sizes of a DirectView map: the first ``n % q`` engines get one extra."""
    q, r = divmod(n_tasks, n_workers)
    return [q + 1 if i < r else q for i in range(n_workers)]


def block_makespan(durations: Sequence[float], n_workers: int) -> float:
    """Makespan of contiguous blocks, one per worker (a DirectView map)."""
    sums, i = [], 0
    for size in block_sizes(len(durations), n_workers):
        sums.append(float(sum(durations[i:i + size])))
        i += size
    return max(sums)


def pool_map_chunksize(n_tasks: int, n_workers: int) -> int:
    """``multiprocessing.Pool.map``'s default chunk size: ceil(n / (4 * workers))."""
    size, extra = divmod(n_tasks, n_workers * 4)
    return max(1, size + (1 if extra else 0))


def chunked_greedy(durations: Sequence[float], n_workers: int, chunksize: int) -> float:
    """Makespan when contiguous chunks are handed to whichever worker is free first."""
    chunks = [float(sum(durations[i:i + chunksize])) for i in range(0, len(durations), chunksize)]
    return greedy_makespan(chunks, n_workers)


def greedy_counts(durations: Sequence[float], n_workers: int) -> list[int]:
    """Tasks per worker under list scheduling in index order."""
    free = [(0.0, w) for w in range(n_workers)]
    counts = [0] * n_workers
    for d in durations:
        free.sort()
        t, w = free[0]
        free[0] = (t + d, w)
        counts[w] += 1
    return counts


def chunks_of(durations: Sequence[float], chunksize: int) -> list[float]:
    """Sums of contiguous chunks of ``chunksize`` tasks (the last one may be shorter)."""
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    return [float(sum(durations[i:i + chunksize])) for i in range(0, len(durations), chunksize)]


# -- Ray's multiprocessing Pool: chunks dealt round robin ---------------------------------------
def round_robin_chunks(durations: Sequence[float], n_workers: int, chunksize: int) -> float:
    """Makespan when chunk ``k`` goes to worker ``k mod n_workers``, all chunks at once.

    ``ray.util.multiprocessing.Pool.map``: each actor runs its chunks one after another, so the
    makespan is the largest per-actor sum ``max_a sum_{k = a mod n} chunk_k``.
    """
    chunks = chunks_of(durations, chunksize)
    if not chunks or n_workers < 1:
        return math.nan
    return max(float(sum(chunks[a::n_workers])) for a in range(n_workers))


def round_robin_paced(durations: Sequence[float], n_workers: int, chunksize: int) -> float:
    """Makespan of Ray's ``Pool.imap``/``imap_unordered``: chunk ``k`` still goes to worker
    ``k mod n_workers``, but only ``n_workers`` chunks are submitted at first and one more each
    time a chunk returns.

    So chunk ``k >= n`` is released at the ``(k - n + 1)``-th completion and starts at
    ``max(its worker's last end, release)``. (The ``(k - n + 1)``-th completion is among chunks
    ``0..k-1``: later ones are released no earlier and take time.) A worker can thus idle while
    its next chunk waits to be released, which plain round robin never does.
    """
    chunks = chunks_of(durations, chunksize)
    if not chunks or n_workers < 1:
        return math.nan
    free = [0.0] * n_workers
    ends: list[float] = []  # completion times so far, sorted
    for k, c in enumerate(chunks):
        release = 0.0 if k < n_workers else ends[k - n_workers]
        a = k % n_workers
        free[a] = max(free[a], release) + c
        bisect.insort(ends, free[a])
    return max(free)


# -- joblib's auto batching -------------------------------------------------------------------
#: joblib's ``AutoBatchingMixin`` targets (``joblib/_parallel_backends.py``): batches that take
#: less than MIN from dispatch to completion grow, batches that take more than MAX shrink.
JOBLIB_MIN_BATCH_S = 0.2
JOBLIB_MAX_BATCH_S = 2.0


def joblib_next_batch_size(old: int, smoothed_s: float) -> int:
    """joblib's ``AutoBatchingMixin.compute_batch_size``: the batch size after ``old``, given
    the smoothed duration of batches of size ``old`` (0: none has finished since the size last
    changed, so the size is held). Under :data:`JOBLIB_MIN_BATCH_S` the size doubles (joblib
    caps it at twice the size that would fill 0.2 s, which is never less than double);
    over :data:`JOBLIB_MAX_BATCH_S` it shrinks; between, it is held. The caller resets the
    smoothed duration when the size changes."""
    if 0 < smoothed_s < JOBLIB_MIN_BATCH_S:
        return max(1, min(2 * old, 2 * int(old * JOBLIB_MIN_BATCH_S / smoothed_s)))
    if smoothed_s > JOBLIB_MAX_BATCH_S and old >= 2:
        return max(1, 2 * int(old * JOBLIB_MIN_BATCH_S / smoothed_s))
    return old


_PRE_DISPATCH = re.compile(r"(?:(\d+)\*)?n_jobs(?:\*(\d+))?|(\d+)")


def joblib_pre_dispatch(expr: str | int, n_workers: int, n_tasks: int) -> int:
    """How many tasks ``Parallel`` dispatches at the start: ``'2*n_jobs'`` -> ``2 n``; ``'all'``
    -> every task; a number -> that number."""
    text = str(expr).replace(" ", "")
    if text == "all":
        return n_tasks
    m = _PRE_DISPATCH.fullmatch(text)
    if not m:
        raise ValueError(f"pre_dispatch {expr!r}: expected 'all', a number or 'k*n_jobs'")
    if m.group(3):
        return int(m.group(3))
    return int(m.group(1) or m.group(2) or 1) * n_workers


@dataclass(frozen=True)
class JoblibSchedule:
    """The outcome of :func:`joblib_schedule`: the makespan and each batch as
    (first task, size, worker, start, end), in dispatch order."""

    makespan: float
    batches: tuple[tuple[int, int, int, float, float], ...]


def joblib_schedule(durations: Sequence[float], n_workers: int, batch_size: str | int = "auto",
                    pre_dispatch: str | int = "2*n_jobs") -> JoblibSchedule:
    """``joblib.Parallel(n_jobs=n_workers)`` on loky, replayed with zero overhead (joblib 1.6:
    ``Parallel.dispatch_one_batch``, ``BatchCompletionCallBack._dispatch_new``,
    ``AutoBatchingMixin``).

    * Start: the first ``pre_dispatch`` tasks are cut in slices of ``batch_size x n`` tasks and
      each slice in batches of ``len(slice) // n`` (at least 1); all are dispatched at t = 0.
    * The pool's idle workers take dispatched batches in order (FIFO), running a batch's tasks
      one after another.
    * Each completed batch, at time t: (auto) if its size is the current batch size, its
      duration *from dispatch* (queueing included) updates the smoothed duration (the first
      one, then ``0.8 old + 0.2 new``); then one more batch is dispatched. The batch size is
      recomputed first: a smoothed duration ``s`` in (0, 0.2 s) gives ``max(1, min(2 b,
      2 int(b 0.2 / s)))``, above 2 s (and ``b >= 2``) ``max(1, 2 int(b 0.2 / s))``; a change
      resets the smoothed duration. Batches already cut are dispatched first; a new slice of
      ``b x n`` tasks is cut only when none are left, in batches of ``len // n``, or, for the
      last slice (shorter than ``b x n``), of ``max(1, len // (10 n))``.

    Ties (batches that end at the same instant) are handled in dispatch order. Real runs add
    per-batch overhead to every duration, which can move a smoothed duration across the
    0.2 s line; task lists whose batch durations sit far from it are modelled exactly.
    """
    d = [float(x) for x in durations]
    n_tasks, n = len(d), int(n_workers)
    if n_tasks == 0 or n < 1:
        return JoblibSchedule(math.nan, ())
    auto = str(batch_size) == "auto"
    fixed = 1 if auto else int(batch_size)
    if fixed < 1:
        raise ValueError(f"batch_size must be 'auto' or >= 1, got {batch_size!r}")
    limit = min(n_tasks, joblib_pre_dispatch(pre_dispatch, n, n_tasks))
    state = {"eff": 1, "smoothed": 0.0, "pos": 0}
    ready: deque[tuple[int, int]] = deque()  # cut but not yet dispatched: (first, size)
    waiting: deque[tuple[int, int, float]] = deque()  # dispatched: (first, size, at)

    def batch_size_now() -> int:
        if not auto:
            return fixed
        old = int(state["eff"])
        new = joblib_next_batch_size(old, state["smoothed"])
        if new != old:
            state["eff"], state["smoothed"] = new, 0.0
        return int(new)

    def dispatch_one(end: int, final_slice_rule: bool, t: float) -> bool:
        b = batch_size_now()
        if not ready:
            first = int(state["pos"])
            stop = min(first + b * n, end)
            if stop <= first:
                return False
            state["pos"] = stop
            size = stop - first
            per = max(1, size // (10 * n)) if final_slice_rule and size < b * n else max(
                1, size // n)
            ready.extend((i, min(per, stop - i)) for i in range(first, stop, per))
        first, size = ready.popleft()
        waiting.append((first, size, t))
        return True

    # Start: everything the pre-dispatch slice holds (no batch has completed yet).
    while dispatch_one(limit, False, 0.0):
        pass
    feeding = str(pre_dispatch).replace(" ", "") != "all"
    idle = list(range(n))
    running: list[tuple[float, int, int, int, float, int]] = []  # (end, seq, first, size, at, w)
    out: list[tuple[int, int, int, float, float]] = []
    seq = 0

    def start_waiting(t: float) -> None:
        nonlocal seq
        while idle and waiting:
            first, size, at = waiting.popleft()
            w = idle.pop(0)
            end = t + sum(d[first:first + size])
            heapq.heappush(running, (end, seq, first, size, at, w))
            out.append((first, size, w, t, end))
            seq += 1

    start_waiting(0.0)
    makespan = 0.0
    while running:
        t, _, _, size, at, w = heapq.heappop(running)
        makespan = max(makespan, t)
        idle.append(w)
        idle.sort()
        if auto and size == state["eff"]:
            dur = t - at
            state["smoothed"] = dur if state["smoothed"] == 0.0 else (
                0.8 * state["smoothed"] + 0.2 * dur)
        if feeding and not dispatch_one(n_tasks, True, t):
            feeding = False
        start_waiting(t)
    return JoblibSchedule(makespan, tuple(out))


def joblib_makespan(durations: Sequence[float], n_workers: int, batch_size: str | int = "auto",
                    pre_dispatch: str | int = "2*n_jobs") -> float:
    """The makespan of :func:`joblib_schedule`."""
    return joblib_schedule(durations, n_workers, batch_size, pre_dispatch).makespan


# -- Celery: nodes that prefetch -----------------------------------------------------------------
def celery_prefetch(durations: Sequence[float], n_workers: int, nodes: int = 1,
                    prefetch_multiplier: int = 4, acks_late: bool = False) -> float:
    """Makespan of Celery workers that prefetch: ``nodes`` nodes of ``n_workers / nodes``
    pool processes (``c``), each holding up to ``W = prefetch_multiplier x c`` unacknowledged
    messages (0: no limit). Without ``acks_late`` a message is acknowledged when its task
    starts, so a node holds its running tasks plus up to ``W`` waiting; with ``acks_late``
    running tasks count against ``W``.

    Replayed with zero overhead as: messages are dealt to the nodes in turn (one each per
    round) while a node has room; a node's idle processes take its own messages in order
    (Celery 5's fair strategy); whenever a task starts or ends, nodes with room fetch the next
    message from the shared queue, again in turn. One node is greedy; an unlimited window is
    a round robin of all messages over the nodes, greedy within each.

    Dealing strictly in turn is an approximation of which node's fetch Redis answers first.
    Against the one-repeat run noted in experiments/prefetch.toml (4 workers): 1.0-1.1 s
    modelled where about 1.05 s was measured for the strided list in every variant but one;
    for 4 nodes x prefetch 4 the model puts every long task on one node (2.0-2.1 s) where 1.6-
    1.7 s was measured, so real dealing is only roughly in turn (an error up to about 25%).
    """
    d = [float(x) for x in durations]
    n_tasks = len(d)
    if n_tasks == 0 or n_workers < 1 or nodes < 1:
        return math.nan
    per = max(1, n_workers // nodes)
    window = prefetch_multiplier * per if prefetch_multiplier > 0 else math.inf
    reserved: list[deque[int]] = [deque() for _ in range(nodes)]
    idle = [per] * nodes
    running: list[tuple[float, int, int]] = []  # (end, seq, node)
    state = {"pos": 0, "seq": 0}
    makespan = 0.0

    def room(k: int) -> bool:
        held = len(reserved[k]) + ((per - idle[k]) if acks_late else 0)
        return held < window

    def settle(t: float) -> None:
        moved = True
        while moved:
            moved = False
            for k in range(nodes):
                while idle[k] and reserved[k]:
                    i = reserved[k].popleft()
                    idle[k] -= 1
                    heapq.heappush(running, (t + d[i], state["seq"], k))
                    state["seq"] += 1
                    moved = True
                if state["pos"] < n_tasks and room(k):
                    reserved[k].append(state["pos"])
                    state["pos"] += 1
                    moved = True

    settle(0.0)
    while running:
        t, _, k = heapq.heappop(running)
        makespan = max(makespan, t)
        idle[k] += 1
        settle(t)
    return makespan


# -- Dask's local scheduler: its own (random) order ---------------------------------------------
def started_order(n_tasks: int, starts: Sequence[float] | None,
                  workers: Sequence[str | None] | None, chunksize: int = 1) -> list[int]:
    """Task positions in the order a scheduler handed them out, read from when they started.

    With ``chunksize`` 1 that is the start order. With batches of ``chunksize`` tasks run one
    after another on one worker, each worker's tasks (by start) are cut into runs of
    ``chunksize``, and the runs are put in the order of their first start. Tasks that never
    started follow in task order. Without start stamps: task order.
    """
    idx = list(range(n_tasks))
    if starts is None:
        return idx
    st = [float(x) if x is not None else math.nan for x in starts]
    timed = [i for i in idx if math.isfinite(st[i])]
    untimed = [i for i in idx if not math.isfinite(st[i])]
    if chunksize <= 1 or workers is None:
        return sorted(timed, key=lambda i: (st[i], i)) + untimed
    runs: list[list[int]] = []
    by_worker: dict[str, list[int]] = {}
    for i in timed:
        by_worker.setdefault(str(workers[i]), []).append(i)
    for tasks in by_worker.values():
        tasks.sort(key=lambda i: (st[i], i))
        runs += [tasks[j:j + chunksize] for j in range(0, len(tasks), chunksize)]
    runs.sort(key=lambda r: (st[r[0]], r[0]))
    return [i for r in runs for i in r] + untimed


# -- the table: scheduler -> model --------------------------------------------------------------
@dataclass(frozen=True)
class TrialTasks:
    """What a model reads about one trial: planned durations in task order, the worker count,
    and, for the models that follow a scheduler's own order, each task's start (seconds, NaN
    if it never started) and worker label."""

    durations: Sequence[float]
    n_workers: int
    starts: Sequence[float] | None = None
    workers: Sequence[str | None] | None = None


@dataclass(frozen=True)
class ModelValue:
    """A model's makespan for one trial and what exactly was modelled (``round robin of chunks
    of 1``)."""

    makespan_s: float
    label: str


ModelFn = Callable[[TrialTasks, Mapping[str, Any]], ModelValue]


@dataclass(frozen=True)
class SchedulerModel:
    """How one scheduler hands out work, as a model: a short name, the formula in words, the
    options it reads, and the function (``fn(tasks, options) -> ModelValue``)."""

    name: str
    formula: str
    fn: ModelFn
    options: tuple[str, ...] = ()


def _opt_int(options: Mapping[str, Any], key: str) -> int | None:
    v = options.get(key)
    return None if v is None or v == "default" else int(v)


def _serial(t: TrialTasks, _: Mapping[str, Any]) -> ModelValue:
    return ModelValue(float(sum(t.durations)) if len(t.durations) else math.nan, "sum (one worker)")


def _greedy(t: TrialTasks, _: Mapping[str, Any]) -> ModelValue:
    return ModelValue(greedy_makespan(t.durations, t.n_workers), "greedy")


def _blocks(t: TrialTasks, _: Mapping[str, Any]) -> ModelValue:
    if not len(t.durations):
        return ModelValue(math.nan, "contiguous blocks")
    return ModelValue(block_makespan(list(t.durations), t.n_workers), "contiguous blocks")


def _chunks(default: Callable[[int, int], int]) -> ModelFn:
    def fn(t: TrialTasks, options: Mapping[str, Any]) -> ModelValue:
        cs = _opt_int(options, "chunksize") or default(len(t.durations), t.n_workers)
        if cs == 1:
            return ModelValue(greedy_makespan(t.durations, t.n_workers), "greedy")
        return ModelValue(chunked_greedy(t.durations, t.n_workers, cs),
                          f"greedy over chunks of {cs}")
    return fn


def _one(_n: int, _w: int) -> int:
    return 1


def ray_pool_chunksize(options: Mapping[str, Any], n_tasks: int, n_workers: int) -> int:
    """The chunk size Ray's Pool uses: the ``chunksize`` option, else the method's default
    (``map``: ceil(n / (4 actors)), as ``multiprocessing``; ``imap``/``imap_unordered``: 1)."""
    method = str(options.get("method") or "map")
    default = pool_map_chunksize(n_tasks, n_workers) if method == "map" else 1
    return _opt_int(options, "chunksize") or default


def _ray_pool(t: TrialTasks, options: Mapping[str, Any]) -> ModelValue:
    cs = ray_pool_chunksize(options, len(t.durations), t.n_workers)
    if str(options.get("method") or "map") == "map":
        return ModelValue(round_robin_chunks(t.durations, t.n_workers, cs),
                          f"round robin of chunks of {cs}")
    return ModelValue(round_robin_paced(t.durations, t.n_workers, cs),
                      f"round robin of chunks of {cs}, {t.n_workers} in flight")


def _joblib(t: TrialTasks, options: Mapping[str, Any]) -> ModelValue:
    bs = str(options.get("batch_size") or "auto")
    pre = str(options.get("pre_dispatch") or "2*n_jobs")
    sched = joblib_schedule(t.durations, t.n_workers, bs, pre)
    sizes = sorted({b[1] for b in sched.batches})
    shown = (f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}") if sizes else "-"
    return ModelValue(sched.makespan, f"joblib batching ({bs}; batches of {shown})")


def _dask_local(t: TrialTasks, options: Mapping[str, Any]) -> ModelValue:
    if options.get("scheduler") == "synchronous":
        return _serial(t, options)
    cs = _opt_int(options, "chunksize") or 1
    order = started_order(len(t.durations), t.starts, t.workers, cs)
    d = [t.durations[i] for i in order]
    what = "greedy" if cs == 1 else f"greedy over chunks of {cs}"
    return ModelValue(chunked_greedy(d, t.n_workers, cs), f"{what} in Dask's start order")


def _celery(t: TrialTasks, options: Mapping[str, Any]) -> ModelValue:
    nodes = _opt_int(options, "nodes") or 1
    pm = _opt_int(options, "prefetch_multiplier")
    pm = 4 if pm is None else pm
    acks_late = str(options.get("acks_late")).lower() in ("true", "1")
    if options.get("pool") == "solo":
        nodes = t.n_workers  # one task at a time per node (preflight requires nodes = n)
    what = "greedy" if nodes == 1 else (
        f"{nodes} nodes prefetching {'all' if pm == 0 else pm} per process"
        + (", acks late" if acks_late else ""))
    return ModelValue(celery_prefetch(t.durations, t.n_workers, nodes, pm, acks_late), what)


GREEDY = SchedulerModel(
    "greedy", "list scheduling in task order: each task to the worker that frees up first",
    _greedy)

#: Every registered scheduler's model (tests check that none is missing).
SCHEDULER_MODELS: dict[str, SchedulerModel] = {
    "serial": SchedulerModel("sum", "one worker: the sum of the durations", _serial),
    "threads": GREEDY,
    "mp-map": SchedulerModel(
        "chunks", "greedy over contiguous chunks of chunksize (default ceil(n / (4 workers)))",
        _chunks(pool_map_chunksize), ("chunksize",)),
    "mp-dynamic": SchedulerModel(
        "chunks", "greedy over contiguous chunks of chunksize (default 1: greedy)",
        _chunks(_one), ("chunksize",)),
    "futures": GREEDY,
    "ipp-direct": SchedulerModel(
        "blocks", "contiguous blocks, one per engine: the largest block's sum", _blocks),
    "ipp-lb": SchedulerModel(
        "chunks", "greedy over contiguous chunks of chunksize (default 1: greedy)",
        _chunks(_one), ("chunksize",)),
    "dask": GREEDY,
    "ray": GREEDY,
    "joblib": SchedulerModel(
        "joblib batching", "greedy over joblib's batches as auto batching cuts them "
        "(joblib_schedule)", _joblib, ("batch_size", "pre_dispatch")),
    "ray-pool": SchedulerModel(
        "round robin", "chunk k to actor k mod n (map: all at once, default chunksize "
        "ceil(n / (4 actors)); imap: n in flight, default 1)", _ray_pool,
        ("method", "chunksize")),
    "dask-local": SchedulerModel(
        "dask order", "greedy over chunks of chunksize (default 1) in the order Dask started "
        "the tasks (a new random order per trial)", _dask_local, ("scheduler", "chunksize")),
    "parsl": GREEDY,
    "celery": SchedulerModel(
        "prefetch", "nodes take messages in turn up to prefetch_multiplier x processes "
        "unacknowledged, processes take their node's messages in order (celery_prefetch)",
        _celery, ("nodes", "prefetch_multiplier", "acks_late", "pool")),
}


def scheduler_model(scheduler: str) -> SchedulerModel | None:
    """The model of a scheduler (a registry name or a label such as ``mp-map[chunksize=4]``);
    None for a scheduler not in the table."""
    return SCHEDULER_MODELS.get(str(scheduler).partition("[")[0])


def label_options(label: str) -> dict[str, str]:
    """Options written in a scheduler label: ``ray-pool[method=map,chunksize=1]`` -> dict."""
    _, bracket, rest = str(label).partition("[")
    if not bracket:
        return {}
    pairs = (p.partition("=") for p in rest.rstrip("]").split(","))
    return {k.strip(): v.strip() for k, eq, v in pairs if eq}


def model_for_trial(scheduler: str, options: Mapping[str, Any] | None,
                    tasks: TrialTasks) -> ModelValue:
    """The makespan the scheduler's model gives for a trial's task list.

    ``options``: the trial's scheduler options (file metadata), over those written in the label
    (``mp-map[chunksize=4]``), which are all there is for files without metadata. NaN, with
    the reason as label, for an unknown scheduler or an empty task list.
    """
    model = scheduler_model(scheduler)
    if model is None:
        return ModelValue(math.nan, f"no model for scheduler {scheduler!r}")
    d = [x for x in tasks.durations if math.isfinite(float(x))]
    if not d or tasks.n_workers < 1:
        return ModelValue(math.nan, "no task durations or workers")
    return model.fn(tasks, {**label_options(scheduler), **(options or {})})


__all__ = [
    "GREEDY", "JOBLIB_MAX_BATCH_S", "JOBLIB_MIN_BATCH_S", "SCHEDULER_MODELS", "JoblibSchedule",
    "ModelFn", "ModelValue", "SchedulerModel", "TrialTasks", "block_makespan", "block_sizes",
    "celery_prefetch",
    "chunked_greedy", "chunks_of", "greedy_counts", "greedy_makespan", "joblib_makespan",
    "joblib_next_batch_size", "joblib_pre_dispatch", "joblib_schedule", "label_options",
    "lower_bound",
    "model_for_trial", "pool_map_chunksize", "ray_pool_chunksize", "round_robin_chunks",
    "round_robin_paced", "scheduler_model", "started_order",
]
