"""Schedule models of today's schedulers, on task lists small enough to work out by hand, and
the table that gives every registered scheduler its model."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import pytest

from research import schema
from research.analysis import claims, models, results
from research.schedulers import REGISTRY, get_scheduler
from research.tasks import Task

from analysis_data import records, task, write

EXACT = {"rel": 1e-12, "abs": 1e-12}


# -- Ray's Pool: round robin of chunks --------------------------------------------------------
def test_round_robin_of_chunks() -> None:
    d = [3.0, 1.0, 1.0, 1.0, 2.0, 2.0]
    # chunksize 1, 2 actors: actor 0 gets tasks 0, 2, 4 = 3 + 1 + 2 = 6; actor 1: 1 + 1 + 2 = 4.
    assert models.round_robin_chunks(d, 2, 1) == pytest.approx(6.0, **EXACT)
    # chunksize 2: chunks [4, 2, 4]; actor 0 gets chunks 0 and 2 = 8, actor 1 gets 2.
    assert models.round_robin_chunks(d, 2, 2) == pytest.approx(8.0, **EXACT)
    # Greedy over the same chunks would give max(4 + 2, 4) = 6 (chunk 2 to actor 1 at t = 2).
    assert models.chunked_greedy(d, 2, 2) == pytest.approx(6.0, **EXACT)


def test_strided_long_tasks_pile_on_one_actor() -> None:
    # 16 tasks, a 0.2 s task every 4th (positions 0, 4, 8, 12), 4 actors, chunksize 1: actor 0
    # gets all four long tasks, 4 x 0.2 = 0.8 s, with map and with imap alike.
    d = [0.2 if i % 4 == 0 else 0.02 for i in range(16)]
    assert models.round_robin_chunks(d, 4, 1) == pytest.approx(0.8, **EXACT)
    assert models.round_robin_paced(d, 4, 1) == pytest.approx(0.8, **EXACT)
    # Greedy in task order: L0 -> w0 (0.2); s1-s3 -> w1-w3 (0.02); L4 -> w1 (0.22); s5, s6 ->
    # w2, w3 (0.04); s7 -> w2 (0.06); L8 -> w3 (0.24); s9-s11 -> w2 (0.08, 0.10, 0.12);
    # L12 -> w2 (0.32); s13-s15 end by 0.24: 0.32 s.
    assert models.greedy_makespan(d, 4) == pytest.approx(0.32, **EXACT)
    # Blocked (long tasks first): every actor gets one long and three short: 0.26 s, as greedy.
    blocked = sorted(d, reverse=True)
    assert models.round_robin_chunks(blocked, 4, 1) == pytest.approx(0.26, **EXACT)
    assert models.greedy_makespan(blocked, 4) == pytest.approx(0.26, **EXACT)


def test_imap_releases_one_chunk_per_completion() -> None:
    # imap: 2 chunks in flight. c0 (10) on actor 0 [0, 10], c1 (1) on actor 1 [0, 1];
    # c2 is released at the 1st completion (t = 1) but actor 0 is busy: [10, 11];
    # c3 is released at the 2nd completion (t = 10): actor 1 idles from 1 to 10, then [10, 15].
    d = [10.0, 1.0, 1.0, 5.0]
    assert models.round_robin_paced(d, 2, 1) == pytest.approx(15.0, **EXACT)
    # map submits everything at once: actor 1 runs c1 and c3 back to back, 1 + 5 = 6; actor 0
    # runs 10 + 1 = 11.
    assert models.round_robin_chunks(d, 2, 1) == pytest.approx(11.0, **EXACT)


def test_ray_pool_default_chunk_sizes() -> None:
    # map: ceil(n / (4 actors)) as multiprocessing; imap/imap_unordered: 1.
    assert models.ray_pool_chunksize({"method": "map"}, 146, 12) == 4
    assert models.ray_pool_chunksize({"method": "imap_unordered"}, 146, 12) == 1
    assert models.ray_pool_chunksize({"method": "map", "chunksize": 3}, 146, 12) == 3


# -- joblib's auto batching -------------------------------------------------------------------
def test_joblib_auto_batching_by_hand() -> None:
    # 10 tasks of 0.05 s, 2 workers, pre_dispatch 2*n_jobs = 4.
    # t=0: batches of 1 for tasks 0-3 are dispatched; workers take 0 and 1 (end 0.05).
    # t=0.05, batch 0 ends: its size is the batch size (1): smoothed = 0.05 < 0.2, so the size
    #   becomes min(2 x 1, 2 x int(1 x 0.2 / 0.05)) = min(2, 8) = 2; a slice of 2 x 2 = 4 tasks
    #   (4-7) is cut in batches of 4 // 2 = 2: (4, 2) is dispatched, (6, 2) kept; worker 0
    #   takes batch 2 (queued first).
    # t=0.05, batch 1 ends (size 1 != 2: not counted): (6, 2) is dispatched; worker 1 takes 3.
    # t=0.10, batch 2 ends: a slice of 4 from task 8 holds 2 (< 4: the last one), cut in
    #   batches of max(1, 2 // (10 x 2)) = 1: (8, 1) dispatched, (9, 1) kept; worker 0 takes
    #   (4, 2) [0.10, 0.20]. Batch 3 ends: (9, 1) dispatched; worker 1 takes (6, 2).
    # t=0.20, (4, 2) ends: smoothed = 0.20 - 0.05 (its dispatch) = 0.15 < 0.2: size
    #   min(4, 2 x int(2 x 0.2 / 0.15)) = 4, but nothing is left. Workers take (8, 1), (9, 1):
    #   both end at 0.25.
    sched = models.joblib_schedule([0.05] * 10, 2)
    assert [(b[0], b[1]) for b in sched.batches] == [
        (0, 1), (1, 1), (2, 1), (3, 1), (4, 2), (6, 2), (8, 1), (9, 1)]
    assert [b[3] for b in sched.batches] == pytest.approx(
        [0.0, 0.0, 0.05, 0.05, 0.10, 0.10, 0.20, 0.20], **EXACT)
    assert sched.makespan == pytest.approx(0.25, **EXACT)


def test_joblib_batches_stay_single_for_long_tasks() -> None:
    # Tasks of 0.2 s and more: a batch never takes under 0.2 s, so the size stays 1 and the
    # schedule is greedy: 0.5, 0.5, 0.5, 0.5 on the 4 workers, then 14 x 0.1 s spread over them:
    # 0.5 + 4 x 0.1 on two workers and 0.5 + 3 x 0.1 on the others = 0.9 s.
    d = [0.5] * 4 + [0.1] * 14
    sched = models.joblib_schedule(d, 4)
    assert {b[1] for b in sched.batches} == {1}
    assert sched.makespan == pytest.approx(0.9, **EXACT)
    assert sched.makespan == pytest.approx(models.greedy_makespan(d, 4), **EXACT)


def test_joblib_fixed_batches_can_pair_long_tasks() -> None:
    # batch_size 2, pre_dispatch all: one slice of 2 x 2 = 4 tasks in batches of 4 // 2 = 2:
    # [5, 5] on worker 0 (10 s) and [1, 1] on worker 1 (2 s); greedy would give 6 s.
    assert models.joblib_makespan([5.0, 5.0, 1.0, 1.0], 2, 2, "all") == pytest.approx(10.0)
    assert models.greedy_makespan([5.0, 5.0, 1.0, 1.0], 2) == pytest.approx(6.0)


def test_joblib_pre_dispatch_expressions() -> None:
    assert models.joblib_pre_dispatch("2*n_jobs", 4, 100) == 8
    assert models.joblib_pre_dispatch("n_jobs * 3", 4, 100) == 12
    assert models.joblib_pre_dispatch("n_jobs", 4, 100) == 4
    assert models.joblib_pre_dispatch("all", 4, 100) == 100
    assert models.joblib_pre_dispatch("7", 4, 100) == 7
    with pytest.raises(ValueError, match="pre_dispatch"):
        models.joblib_pre_dispatch("half", 4, 100)


@pytest.mark.usefixtures("no_leaks")
def test_joblib_model_cuts_the_batches_joblib_cuts(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The real joblib (the adapter, 2 loky workers) against the model: the same batch sizes
    in the same order. 300 tasks of 2 ms keep every batch far under 0.2 s (the largest, 32
    tasks, takes about 0.07 s, twice that with its wait in the queue), so the sizes do not
    depend on this machine's speed: 1 x 4 (pre_dispatch 2 x 2), then slices of 2b tasks as b
    doubles (2 x 4, 4 x 4, 8 x 4, 16 x 4, 32 x 4: 4 + 248 = 252 tasks); the 48 left are less
    than a slice (2 x 32 or 2 x 64), so they are the last one, cut in batches of
    max(1, 48 // (10 x 2)) = 2.

    Unless the machine stalls: batches of a size whose smoothed duration reaches 0.2 s from
    dispatch to completion (queueing included; the 32-task batches take about 0.1 s) make
    joblib hold the size where the model doubles it (a CI run once did, at the 9th batch). So
    every size joblib computes is checked against the model's rule
    (:func:`models.joblib_next_batch_size`) on the duration joblib itself had measured, and
    the whole sequence against the model's whenever every such duration stayed under 0.2 s,
    where the rule always doubles."""
    import joblib._parallel_backends as backends
    import joblib.parallel

    sizes: list[int] = []
    computed: list[tuple[int, float, int]] = []  # (size before, smoothed duration, size after)
    real_dispatch = joblib.parallel.Parallel._dispatch
    real_compute = backends.AutoBatchingMixin.compute_batch_size
    real_completed = backends.AutoBatchingMixin.batch_completed
    # joblib's callback thread updates the smoothed duration outside the lock its dispatch
    # holds: one lock of the test's around both keeps a read here and joblib's read together.
    lock = threading.Lock()

    def observe(self: Any, batch: Any) -> Any:  # records each batch, then dispatches it
        sizes.append(len(batch))
        return real_dispatch(self, batch)

    def compute(self: Any) -> int:  # records joblib's own inputs and answer
        with lock:
            old, smoothed = self._effective_batch_size, self._smoothed_batch_duration
            new = real_compute(self)
        computed.append((old, smoothed, new))
        return new

    def completed(self: Any, batch_size: int, duration: float) -> None:
        with lock:
            real_completed(self, batch_size, duration)

    d = [0.002] * 300
    tasks = [Task(i, "sleep", x, x) for i, x in enumerate(d)]
    with get_scheduler("joblib")(2, workdir=tmp_path) as sched:
        sched.warm()
        monkeypatch.setattr(joblib.parallel.Parallel, "_dispatch", observe)
        monkeypatch.setattr(backends.AutoBatchingMixin, "compute_batch_size", compute)
        monkeypatch.setattr(backends.AutoBatchingMixin, "batch_completed", completed)
        out = sched.run(tasks, 60)
    assert out.error is None and len(out.outcomes) == 300 and sum(sizes) == 300
    assert computed and all(new == models.joblib_next_batch_size(old, s)
                            for old, s, new in computed), computed
    expected = [b[1] for b in models.joblib_schedule(d, 2).batches]
    assert expected == [1] * 4 + [2] * 4 + [4] * 4 + [8] * 4 + [16] * 4 + [32] * 4 + [2] * 24
    if max(s for _, s, _ in computed) < models.JOBLIB_MIN_BATCH_S:
        assert sizes == expected
    # The rule itself, at the durations that matter: doubled under 0.2 s, held from 0.2 s to
    # 2 s and before any duration (0), shrunk above 2 s.
    assert [models.joblib_next_batch_size(4, s) for s in (0.0, 0.01, 0.15, 0.5, 4.0)] == [
        4, 8, 8, 4, 1]
    assert models.joblib_next_batch_size(16, 0.15) == 32 and models.joblib_next_batch_size(
        16, 0.19) == 32 and models.joblib_next_batch_size(16, 0.3) == 16


# -- Dask's local scheduler: its own order ----------------------------------------------------
def test_started_order() -> None:
    assert models.started_order(4, [0.3, 0.0, 0.2, math.nan], None) == [1, 2, 0, 3]
    # chunksize 2: worker A ran 3, 0, 5 (by start), worker B ran 1, 4, 2. Runs of 2: A [3, 0]
    # (from 0.0), [5] (2.0); B [1, 4] (0.5), [2] (2.5). By first start: 3 0 1 4 5 2.
    starts = [1.0, 0.5, 2.5, 0.0, 1.5, 2.0]
    workers = ["A", "B", "B", "A", "B", "A"]
    assert models.started_order(6, starts, workers, 2) == [3, 0, 1, 4, 5, 2]
    assert models.started_order(3, None, None) == [0, 1, 2]


def test_dask_local_follows_the_order_dask_chose() -> None:
    # Dask started the tasks last to first: greedy over [4, 3, 2, 1] on 2 workers: 4 | 3, then
    # 2 to the worker free at 3 (-> 5) and 1 to the one free at 4 (-> 5): 5 s. In task order
    # greedy gives 1 | 2, 3 -> 4, 4 -> 6: 6 s.
    tasks = models.TrialTasks([1.0, 2.0, 3.0, 4.0], 2, [3.0, 2.0, 1.0, 0.0], ["a", "b", "a", "b"])
    v = models.model_for_trial("dask-local", {"chunksize": 1, "scheduler": "processes"}, tasks)
    assert v.makespan_s == pytest.approx(5.0, **EXACT) and "Dask's start order" in v.label
    assert models.greedy_makespan([1.0, 2.0, 3.0, 4.0], 2) == pytest.approx(6.0, **EXACT)
    sync = models.model_for_trial("dask-local", {"scheduler": "synchronous"}, tasks)
    assert sync.makespan_s == pytest.approx(10.0, **EXACT)


# -- Celery: nodes that prefetch ---------------------------------------------------------------
def test_celery_prefetch_by_hand() -> None:
    # 2 nodes of 1 process, prefetch 1, acks on start. Dealt in turn: m0 -> n0, m1 -> n1; both
    # start (acked), so m2 -> n0 and m3 -> n1 wait there. n1 ends m1 at 1, starts m3 [1, 2] and
    # fetches m4; [2, 3]; fetches m5: [3, 4]. n0 ends m0 at 4 and only then starts its m2:
    # [4, 8]. Greedy: m2 goes to the process free at 1: [1, 5], and the rest end by 6.
    d = [4.0, 1.0, 4.0, 1.0, 1.0, 1.0]
    assert models.celery_prefetch(d, 2, nodes=2, prefetch_multiplier=1) == pytest.approx(8.0)
    assert models.greedy_makespan(d, 2) == pytest.approx(6.0)
    # acks_late: the running task fills the window, so nothing waits at a node: greedy.
    assert models.celery_prefetch(d, 2, 2, 1, acks_late=True) == pytest.approx(6.0)
    # One node: its processes share one queue: greedy.
    assert models.celery_prefetch(d, 2, 1, 4) == pytest.approx(6.0)
    # No limit (0): all messages dealt in turn, m0 m2 m4 to n0 (4 + 4 + 1 = 9).
    assert models.celery_prefetch(d, 2, 2, 0) == pytest.approx(9.0)
    assert models.round_robin_chunks(d, 2, 1) == pytest.approx(9.0)


# -- the table ----------------------------------------------------------------------------------
def test_every_registered_scheduler_has_a_model() -> None:
    missing = sorted(set(REGISTRY) - set(models.SCHEDULER_MODELS))
    assert not missing, f"add these schedulers to models.SCHEDULER_MODELS: {missing}"
    assert not set(models.SCHEDULER_MODELS) - set(REGISTRY)
    d = [0.2, 0.02, 0.02, 0.02] * 4
    tasks = models.TrialTasks(d, 4, [0.01 * i for i in range(16)], [f"w{i % 4}" for i in
                                                                     range(16)])
    for name, model in models.SCHEDULER_MODELS.items():
        cls = get_scheduler(name)
        # The options a model reads are options of the adapter (a rename would go unseen).
        assert set(model.options) <= set(cls.options_spec), (name, model.options)
        value = models.model_for_trial(name, cls.validate_options({}), tasks)
        assert math.isfinite(value.makespan_s), (name, value)
        # No schedule beats the lower bound, and none is slower than one worker.
        assert models.lower_bound(d, 4) - 1e-12 <= value.makespan_s <= sum(d) + 1e-12, name


def test_models_by_label_and_unknown_schedulers() -> None:
    tasks = models.TrialTasks([0.2 if i % 4 == 0 else 0.02 for i in range(16)], 4)
    by_label = models.model_for_trial("ray-pool[method=imap_unordered,chunksize=2]", None, tasks)
    # chunks of 2: [0.22, 0.04] x 4; actors 0 and 2 get 0.22 + 0.22 = 0.44 s.
    assert by_label.makespan_s == pytest.approx(0.44, **EXACT)
    assert "chunks of 2" in by_label.label
    unknown = models.model_for_trial("slurm", None, tasks)
    assert math.isnan(unknown.makespan_s) and "no model" in unknown.label


def test_the_summary_has_each_trials_model(tmp_path: Path) -> None:
    # Ray's Pool on a strided list (what orders.toml runs): the summary's model_s is the round
    # robin's 0.8 s, read with the options of the file metadata (chunksize 1).
    d = [0.2 if i % 4 == 0 else 0.02 for i in range(16)]
    free = [0.0] * 4
    rows = []
    for i, x in enumerate(d):
        w = i % 4
        rows.append(task(i, f"ray-{w}", free[w], free[w] + x, planned=x))
        free[w] += x
    df = records(rows, scheduler="ray-pool[method=map]", workload="strided", n_workers=4,
                 experiment="orders")
    path = write(df, tmp_path)
    assert schema.read_metadata(path)["trial"]["options"] == {}  # so the label's are used
    s = results.load_results(tmp_path).summary
    row = s.iloc[0]
    assert row["model_s"] == pytest.approx(0.8) and row["makespan_s"] == pytest.approx(0.8)
    assert row["model"] == "round robin of chunks of 1"
    assert row["greedy_s"] == pytest.approx(0.32)
    groups = results.group_summary(s)
    assert groups.iloc[0]["model_s_median"] == pytest.approx(0.8)
    v = claims.evaluate(s, tmp_path).set_index("claim_id").loc["RP1"]
    assert v["verdict"] == claims.REPRODUCED, v.to_dict()
    assert "ray-pool[method=imap_unordered]" in v["note"]  # not run: said, not hidden
