"""Schedule models: the makespan a task list would have under a given way of handing it out.

Contiguous blocks for a DirectView map, list scheduling (greedy) for a load-balanced
scheduler, greedy over chunks for chunked maps, and the lower bound no schedule beats. They
read planned durations only, never measurements, so they describe the workload.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence

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


def prefetch_makespan(durations: Sequence[float], nodes: int, per_node: int, prefetch: int,
                      acks_late: bool = False) -> float:
    """Makespan of Celery-style prefetching: ``nodes`` worker nodes of ``per_node`` processes.

    Each node keeps up to ``prefetch x per_node`` unacknowledged messages (0: no limit); a
    message is acknowledged when its task starts (with ``acks_late``, when it ends). Free
    window slots are filled from the shared queue in task order, one message per node in turn
    (the nodes wait on the broker side by side); inside a node each idle process takes the
    node's next reserved message (Celery 5's "fair" pool). One node is greedy list scheduling;
    several nodes with a deep window hold reserved blocks dealt in turn.
    """
    d = [float(x) for x in durations]
    cap = per_node * prefetch if prefetch > 0 else math.inf
    queue = deque(range(len(d)))
    reserved: list[deque[int]] = [deque() for _ in range(nodes)]
    running: list[list[float]] = [[] for _ in range(nodes)]  # end times, a heap per node
    t = end = 0.0
    while True:
        for r in running:
            while r and r[0] <= t + 1e-12:
                heapq.heappop(r)
        changed = True
        while changed:
            changed = False
            for k in range(nodes):  # idle processes start the node's next reserved tasks
                while reserved[k] and len(running[k]) < per_node:
                    finish = t + d[reserved[k].popleft()]
                    heapq.heappush(running[k], finish)
                    end, changed = max(end, finish), True
            for k in range(nodes):  # then one message per node with a free slot, in turn
                unacked = len(reserved[k]) + (len(running[k]) if acks_late else 0)
                if queue and unacked < cap:
                    reserved[k].append(queue.popleft())
                    changed = True
        busy = [r[0] for r in running if r]
        if not busy:
            return end
        t = min(busy)


__all__ = ["block_makespan", "block_sizes", "chunked_greedy", "greedy_counts",
           "greedy_makespan", "lower_bound", "pool_map_chunksize", "prefetch_makespan"]
