"""The worst case's ``order``: blocked, strided, shuffled, and refusals before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from research import config, workloads
from research.errors import ConfigError, ParamError


def _planned(raw: dict, n_workers: int) -> list[float]:
    params = workloads.validate("worst_case", raw, n_workers)
    return [t.planned_s for t in workloads.build_tasks("worst_case", params, n_workers)]


def _round_robin_load(planned: list[float], n_workers: int) -> list[float]:
    return [sum(planned[w::n_workers]) for w in range(n_workers)]


def _block_load(planned: list[float], n_workers: int) -> list[float]:
    """Contiguous blocks, the first ``n % q`` one longer (ipyparallel's DirectView.map)."""
    q, r = divmod(len(planned), n_workers)
    out, i = [], 0
    for w in range(n_workers):
        size = q + (w < r)
        out.append(sum(planned[i:i + size]))
        i += size
    return out


@given(n_workers=st.integers(1, 16), per_worker=st.integers(1, 12),
       order=st.sampled_from(workloads.ORDERS), seed=st.integers(0, 2**32 - 1))
def test_every_order_is_a_permutation_of_the_blocked_list(n_workers: int, per_worker: int,
                                                          order: str, seed: int) -> None:
    raw = {"n_tasks": n_workers * per_worker, "long_s": 1.0, "short_s": 0.1}
    blocked = _planned(raw, n_workers)
    extra = {"seed": seed} if order == "shuffled" else {}
    other = _planned({**raw, "order": order, **extra}, n_workers)
    assert sorted(other) == sorted(blocked)
    assert blocked.count(1.0) == per_worker  # the default n_long: n_tasks // n_workers


@given(n_workers=st.integers(2, 16), per_worker=st.integers(2, 12))
def test_each_static_policy_meets_its_own_worst_case(n_workers: int, per_worker: int) -> None:
    raw = {"n_tasks": n_workers * per_worker, "long_s": 1.0, "short_s": 0.1}
    blocked = _planned(raw, n_workers)
    strided = _planned({**raw, "order": "strided"}, n_workers)
    worst = per_worker * 1.0  # every long task on one worker
    # Blocked: contiguous blocks put all long tasks on the first worker; round robin spreads them.
    assert _block_load(blocked, n_workers)[0] == pytest.approx(worst)
    assert max(_round_robin_load(blocked, n_workers)) < worst
    # Strided: the opposite.
    assert _round_robin_load(strided, n_workers)[0] == pytest.approx(worst)
    assert max(_block_load(strided, n_workers)) < worst
    assert [i for i, d in enumerate(strided) if d == 1.0] == list(range(0, len(strided),
                                                                        n_workers))


def test_strided_wraps_to_the_next_offset_when_long_tasks_overflow() -> None:
    planned = _planned({"n_tasks": 8, "long_s": 1.0, "short_s": 0.1, "n_long": 3,
                        "order": "strided"}, 4)
    assert [i for i, d in enumerate(planned) if d == 1.0] == [0, 1, 4]  # 0, 4, then 1


def test_shuffled_is_seeded() -> None:
    raw = {"n_tasks": 40, "long_s": 1.0, "short_s": 0.1, "order": "shuffled"}
    a, b = _planned({**raw, "seed": 3}, 4), _planned({**raw, "seed": 3}, 4)
    default = _planned(raw, 4)
    assert a == b
    assert default == _planned({**raw, "seed": 0}, 4)  # seed defaults to 0
    assert a != default and a != _planned({**raw, "order": "blocked"}, 4)


def test_unknown_order_is_refused_naming_the_allowed_values() -> None:
    with pytest.raises(ParamError) as err:
        workloads.validate("worst_case", {"n_tasks": 8, "long_s": 1, "short_s": 0.1,
                                          "order": "zigzag"}, 4)
    assert err.value.key == "order"
    assert all(o in str(err.value) for o in workloads.ORDERS)


def test_seed_without_shuffle_is_refused() -> None:
    with pytest.raises(ParamError) as err:
        workloads.validate("worst_case", {"n_tasks": 8, "long_s": 1, "short_s": 0.1,
                                          "order": "strided", "seed": 1}, 4)
    assert err.value.key == "seed" and "shuffled" in str(err.value)


def test_blocked_params_and_trial_keys_are_unchanged() -> None:
    # Trial keys hash the params: the talk's case keeps the key it had before `order` existed.
    params = workloads.validate("worst_case", {"n_tasks": 146, "long_s": 1.0, "short_s": 0.2},
                                12)
    assert "order" not in params and "seed" not in params
    explicit = workloads.validate("worst_case", {"n_tasks": 146, "long_s": 1.0, "short_s": 0.2,
                                                 "order": "blocked"}, 12)
    assert explicit == params


def test_config_with_an_unknown_order_fails_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[experiment]\nname = "x"\nn_workers = 2\nschedulers = ["serial"]\n'
                    '[workloads.w]\nshape = "worst_case"\nn_tasks = 4\nlong_s = 0.1\n'
                    'short_s = 0.01\norder = "zigzag"\n')
    with pytest.raises(ConfigError) as err:
        config.load(path)
    text = str(err.value)
    assert "bad.toml" in text and "order" in text and "strided" in text


def test_orders_study_is_small(repo: Path) -> None:
    for quick in (False, True):
        exp = config.load(repo / "experiments" / "orders.toml", quick=quick)
        orders = {t.params.get("order", "blocked") for t in exp.trials}
        assert orders == set(workloads.ORDERS)
        work = sum(sum(workloads.worst_case(t.params["n_tasks"], t.params["long_s"],
                                            t.params["short_s"], t.params["n_long"]))
                   for t in exp.trials)
        # Planned task-seconds per trial over 4 workers, summed: well under the time budget.
        assert work / 4 < (20 if quick else 60)
