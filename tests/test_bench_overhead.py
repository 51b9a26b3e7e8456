"""The harness overhead benchmark: its verdicts, its task counts, and that every scheduler has
a baseline (behaviour only: no timing thresholds)."""

from __future__ import annotations

import pytest

from research.bench import overhead
from research.schedulers import REGISTRY, get_scheduler
from research.schedulers.base import Scheduler


def test_the_goal_is_five_percent_or_five_microseconds() -> None:
    assert overhead.allowance_us(10.0) == 5.0  # 5% of 10 us is 0.5 us: 5 us applies
    assert overhead.allowance_us(1000.0) == pytest.approx(50.0)
    assert overhead.verdict(4.9, 10.0) == overhead.MEETS
    assert overhead.verdict(5.1, 10.0) == overhead.MISSES
    assert overhead.verdict(49.0, 1000.0) == overhead.MEETS
    assert overhead.verdict(-3.0, 1000.0) == overhead.MEETS  # harness faster: noise
    # Above the allowance: a miss only when even the cheapest pair is above it.
    assert overhead.verdict(80.0, 1000.0, pairs_min_us=60.0) == overhead.MISSES
    assert overhead.verdict(80.0, 1000.0, pairs_min_us=-10.0) == overhead.UNCLEAR
    assert overhead.verdict(40.0, 1000.0, pairs_min_us=-10.0) == overhead.MEETS


def test_slow_schedulers_run_fewer_tasks_but_never_below_the_floor() -> None:
    assert overhead.tasks_for(1e-5, 2000, 2.0) == 2000  # 20 ms a run: all of them
    assert overhead.tasks_for(5e-3, 2000, 2.0) == 400  # 5 ms each: 400 in 2 s
    assert overhead.tasks_for(1.0, 2000, 2.0) == overhead.MIN_TASKS
    assert overhead.tasks_for(1.0, 100, 2.0) == 100  # fewer asked than the floor
    assert overhead.tasks_for(1.0, 2000, None) == 2000
    # Fast ones run more, so that a run lasts min_run_s (never above MAX_TASKS).
    assert overhead.tasks_for(1e-5, 2000, 2.0, 0.25) == 25_000
    assert overhead.tasks_for(1e-8, 2000, 2.0, 0.25) == overhead.MAX_TASKS
    assert overhead.tasks_for(5e-3, 2000, 2.0, 0.25) == 400  # slow: min_run_s does not apply


def test_every_scheduler_has_a_bare_baseline_and_a_row() -> None:
    names = [n for n, _ in overhead.variants(list(REGISTRY))]
    assert set(names) == set(REGISTRY)
    for name in REGISTRY:
        cls = get_scheduler(name)
        assert cls.bare_noop is not Scheduler.bare_noop, name
        assert name in overhead.NOTES, name
    # Costly options are measured beside the default, and are options the adapter has.
    for name, variants in overhead.COSTLY_OPTIONS.items():
        for opts in variants:
            get_scheduler(name).validate_options(opts)


def test_a_row_per_variant_with_its_verdict(no_leaks: None) -> None:
    rows = overhead.run_all(["serial", "threads"], n_workers=2, n_tasks=300, repeats=2,
                            min_run_s=None)
    table = overhead.table(rows)
    assert list(table.scheduler) == ["serial", "threads"]
    assert set(table.verdict) <= {overhead.MEETS, overhead.MISSES, overhead.UNCLEAR}
    assert (table.n_workers == [1, 2]).all()
    # The verdict follows from the row's own numbers.
    for row in table.itertuples():
        assert row.allowed_us == pytest.approx(overhead.allowance_us(row.bare_us_per_task))
        assert (row.verdict == overhead.MEETS) == (row.harness_us_per_task <= row.allowed_us)
        assert (row.verdict == overhead.MISSES) == (row.pairs_us_min > row.allowed_us)
        assert row.pairs_us_min <= row.harness_us_per_task <= row.pairs_us_max
        # Two pairs, and six more only for a row they left unclear.
        assert row.repeats in (2, 2 + overhead.DEFAULT_EXTRA_REPEATS)


def test_the_second_stage_judges_on_every_pair() -> None:
    # 1,000 tasks of 100 us bare: 5 us allowed per task (5 ms per run).
    bare = 0.1
    meets, above = (bare, bare + 0.004), (bare, bare + 0.008)
    assert overhead._verdict_of([meets, above, meets], 1000) == overhead.MEETS
    assert overhead._verdict_of([meets, above, above], 1000) == overhead.UNCLEAR
    assert overhead._verdict_of([above] * 3, 1000) == overhead.MISSES
    # An unclear first stage that more pairs within the allowance settle.
    assert overhead._verdict_of([meets, above, above] + [meets] * 6, 1000) == overhead.MEETS


def test_a_scheduler_that_fails_is_a_row_with_its_error() -> None:
    rows = overhead.run_all(["serial"], n_workers=0, n_tasks=10, repeats=1)
    assert rows[0]["verdict"] == "error" and "n_workers" in rows[0]["note"]
    assert "| serial |" in overhead.markdown(overhead.table(rows))
