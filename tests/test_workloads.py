"""Workload generators: counts, ordering, seeds, the talk's numbers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from research import workloads
from research.errors import ParamError
from research.tasks import is_prime


def _tasks(shape: str, raw: dict, n_workers: int = 4, rate: float | None = None):
    return workloads.build_tasks(shape, workloads.validate(shape, raw, n_workers), n_workers, rate)


def test_talk_gamma_draws_are_reproduced() -> None:
    raw = {"n_tasks": 180, "seed": 9527, "unit_s": 0.1, "distribution": "gamma",
           "gamma_shape": 7.5, "gamma_scale": 0.5}
    planned = [t.planned_s for t in _tasks("random", raw, 12)]
    assert len(planned) == 180
    assert round(sum(planned), 2) == 66.71
    assert round(min(planned), 3) == 0.110 and round(max(planned), 3) == 0.920


def test_talk_worst_case() -> None:
    tasks = _tasks("worst_case", {"n_tasks": 146, "long_s": 1.0, "short_s": 0.2}, 12)
    assert [t.planned_s for t in tasks[:13]] == [1.0] * 12 + [0.2]
    assert len(tasks) == 146 and math.isclose(sum(t.planned_s for t in tasks), 38.8)


@given(n_tasks=st.integers(1, 500), n_workers=st.integers(1, 64),
       long_s=st.floats(0, 10), short_s=st.floats(0, 10))
def test_worst_case_long_tasks_come_first(n_tasks: int, n_workers: int, long_s: float,
                                          short_s: float) -> None:
    raw = {"n_tasks": n_tasks, "long_s": long_s, "short_s": short_s}
    tasks = _tasks("worst_case", raw, n_workers)
    n_long = n_tasks // n_workers
    assert len(tasks) == n_tasks
    assert [t.task_id for t in tasks] == list(range(n_tasks))
    assert all(t.planned_s == long_s for t in tasks[:n_long])
    assert all(t.planned_s == short_s for t in tasks[n_long:])


@given(dist=st.sampled_from(["gamma", "exponential", "lognormal", "uniform"]),
       seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300))
def test_random_is_seeded_and_non_negative(dist: str, seed: int, n: int) -> None:
    params = {"gamma": {"gamma_shape": 2.0, "gamma_scale": 1.0}, "exponential": {"mean": 1.0},
              "lognormal": {"mu": 0.0, "sigma": 0.5}, "uniform": {"low": 0.5, "high": 1.5}}
    raw = {"n_tasks": n, "seed": seed, "unit_s": 0.01, "distribution": dist, **params[dist]}
    a, b = _tasks("random", raw), _tasks("random", raw)
    assert a == b and len(a) == n
    assert all(t.planned_s >= 0 and t.body == "sleep" and t.arg == t.planned_s for t in a)
    other = _tasks("random", {**raw, "seed": (seed + 1) % 2**32})
    assert n < 3 or [t.arg for t in other] != [t.arg for t in a]


@given(st.lists(st.floats(0, 100), min_size=1, max_size=100))
def test_explicit_replays_durations(durations: list[float]) -> None:
    tasks = _tasks("explicit", {"durations_s": durations})
    assert [t.planned_s for t in tasks] == durations


@given(n=st.integers(1, 200), d=st.floats(0, 5))
def test_uniform(n: int, d: float) -> None:
    tasks = _tasks("uniform", {"n_tasks": n, "duration_s": d})
    assert len(tasks) == n and {t.planned_s for t in tasks} == {d}


def test_cpu_body_turns_seconds_into_fixed_work() -> None:
    tasks = _tasks("uniform", {"n_tasks": 3, "duration_s": 0.5, "body": "cpu"}, rate=1000.0)
    assert {(t.body, t.arg, t.planned_s) for t in tasks} == {("cpu", 500, 0.5)}
    with pytest.raises(ValueError, match="cpu_rate"):
        _tasks("uniform", {"n_tasks": 1, "duration_s": 0.5, "body": "cpu"})


def test_primes_default_is_the_talks_list() -> None:
    tasks = _tasks("primes", {})
    assert [t.arg for t in tasks] == list(workloads.TALK_PRIMES)
    assert all(t.body == "prime" and math.isnan(t.planned_s) for t in tasks)
    assert [is_prime(n) for n in workloads.TALK_PRIMES[5:6]] == [False]  # 3306091 x 332636609


def test_fault_injection_marks_tasks() -> None:
    tasks = _tasks("uniform", {"n_tasks": 4, "duration_s": 0.1, "fail_ids": [1],
                               "crash_ids": [3]})
    assert [t.body for t in tasks] == ["sleep", "fail", "sleep", "crash"]


@pytest.mark.parametrize(("shape", "raw", "key", "text"), [
    ("nope", {}, "shape", "allowed: uniform"),
    ("uniform", {"n_tasks": 3}, "duration_s", "missing"),
    ("uniform", {"n_tasks": 3, "duration_s": -1.0}, "duration_s", "negative"),
    ("uniform", {"n_tasks": "3", "duration_s": 1.0}, "n_tasks", "integer"),
    ("uniform", {"n_tasks": 0, "duration_s": 1.0}, "n_tasks", ">= 1"),
    ("uniform", {"n_tasks": 3, "duration_s": 1.0, "colour": 1}, "colour", "allowed:"),
    ("uniform", {"n_tasks": 3, "duration_s": 1.0, "body": "gpu"}, "body", "allowed: sleep, cpu"),
    ("random", {"n_tasks": 3, "seed": 1, "unit_s": 1.0, "distribution": "gamma",
                "gamma_shape": 1.0}, "gamma_scale", "needs gamma_shape, gamma_scale"),
    ("random", {"n_tasks": 3, "seed": 1, "unit_s": 1.0, "distribution": "zipf"},
     "distribution", "allowed: gamma"),
    ("explicit", {"durations_s": [1.0, -2.0]}, "durations_s[1]", "negative"),
    ("explicit", {"durations_s": []}, "durations_s", "non-empty"),
    ("uniform", {"n_tasks": 3, "duration_s": 0.1, "body": "noop"}, "duration_s", "no duration"),
    ("worst_case", {"n_tasks": 3, "long_s": 0.0, "short_s": 0.0, "body": "noop"}, "body",
     "needs shape 'uniform'"),
])
def test_bad_parameters_name_the_key(shape: str, raw: dict, key: str, text: str) -> None:
    with pytest.raises(ParamError) as err:
        workloads.validate(shape, raw, 2)
    assert err.value.key == key and text in str(err.value)


def test_noop_body_is_selectable_and_plans_no_time() -> None:
    tasks = _tasks("uniform", {"n_tasks": 4, "duration_s": 0.0, "body": "noop"})
    assert [(t.body, t.planned_s) for t in tasks] == [("noop", 0.0)] * 4


def test_tasks_run_with_minimal_timer_slack() -> None:
    """A worker thread's first task lowers its timer slack to the minimum (Linux), so
    sleep(0) returns in microseconds, not the default 50 us slack."""
    import threading

    from research import tasks as T

    if T.timer_slack_ns() is None:
        pytest.skip("no timer slack setting on this OS")
    seen: dict[str, int | None] = {}

    def worker() -> None:
        seen["before"] = T.timer_slack_ns()
        T.execute(T.Task(0, "noop", 0, 0.0))
        seen["after"] = T.execute(T.Task(1, "slack", 0, 0.0)).result

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    assert seen["after"] == T.TIMER_SLACK_NS
    assert seen["before"] is not None and seen["before"] >= seen["after"]


def test_packed_blocks_carry_every_outcome_field() -> None:
    """A map chunk answered as a PackedBlock (arrays for the plain outcomes, tuples for the
    rest) unpacks to the outcomes the per-task wrapper builds: same fields but the stamps,
    which still bracket each body."""
    import pickle

    from research.tasks import (
        Outcome,
        PackedBlock,
        Task,
        execute_packed,
        execute_packed_block,
        pack,
        unpack_block,
        unpack_blocks,
    )

    tasks = [Task(0, "noop", 0, 0.0), Task(1, "sleep", 0.001, 0.001), Task(2, "fail", 0, 0.0),
             Task(3, "prime", 7, 0.0), Task(4, "noop", 0, 0.0, b"x" * 10, 5),
             Task(5, "cpu", 1000, 0.0), Task(6, "noop", 0, 0.0)]
    block = pack(tasks)
    packed = execute_packed_block(block)
    assert isinstance(packed, PackedBlock)
    # Through a pickle, as a pool sends it, and sent as one pickle too (Ray's Pool).
    got = {o.task_id: o for o in unpack_block(pickle.loads(pickle.dumps(packed)))}
    also = {o.task_id: o for o in unpack_blocks([execute_packed_block(pickle.dumps(block))])}
    want = {o[0]: Outcome(*o) for o in map(execute_packed, block)}
    assert sorted(got) == sorted(also) == sorted(want) == list(range(7))
    for tid, o in got.items():
        assert o.start_ns <= o.end_ns
        assert o[3:] == want[tid][3:] == also[tid][3:], tid
    assert got[1].end_ns - got[1].start_ns >= 1_000_000  # the sleep's own time is inside
    assert got[2].status == "error" and "InjectedFailure" in got[2].error
    assert got[3].result is True and len(got[4].payload) == 5 and got[4].input_bytes == 10
    # Only the plain outcomes (no result, payload or error) travel in the arrays.
    plain = {t for t, o in want.items() if o.status == "ok" and o.result is None
             and o.payload is None}
    assert plain == {0, 1, 6}  # the cpu body returns its last value
    assert len(packed.ids) // 8 == len(plain)
    assert {o[0] for o in packed.others} == set(range(7)) - plain


def test_cpu_rate_is_measured_again_unless_just_measured(tmp_path, monkeypatch) -> None:
    """Each CPU trial's spin rate is fresh: measured before it, or at most CPU_RATE_REUSE_S
    ago (back-to-back short trials share one measurement)."""
    from research import runner

    calls: list[float] = []

    def fake(target_s: float) -> float:
        calls.append(target_s)
        return 1e6 * len(calls)

    monkeypatch.setattr(runner, "calibrate_spin", fake)
    sweep = runner.Sweep(tmp_path, force=False, progress=False, log=lambda _: None)
    assert sweep._cpu_rate() == 1e6 and sweep._cpu_rate() == 1e6  # the second reuses it
    assert len(calls) == 1
    monkeypatch.setattr(runner, "CPU_RATE_REUSE_S", 0.0)
    assert sweep._cpu_rate() == 2e6 and len(calls) == 2
