"""Workload shapes: pure, seeded functions from parameters to a list of planned durations.

Each shape is registered in :data:`SHAPES` with its parameter spec, so configs are validated
before anything runs. :func:`build_tasks` turns a validated parameter dict into :class:`Task`s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ParamError
from .params import REQUIRED, Param, check_param
from .tasks import SELECTABLE_BODIES, Task

#: The talk's 15 numbers for the prime validation benchmark (see the seed digest).
TALK_PRIMES: tuple[int, ...] = (
    112272535095293, 112582705942171, 112272535095293, 115280095190773, 115797848077099,
    1099726899285419, 2669120158555979, 4199178838367599, 1922629667035087, 6822879205760977,
    4283424651555827, 4442577269950067, 3410579000484763, 5489761944588443, 4303055515665917,
)

#: Bodies a workload's ``body`` key may select (the table is :data:`research.tasks.BODIES`).
TASK_BODIES = SELECTABLE_BODIES


# Keys every workload table accepts besides its shape's own.
COMMON: dict[str, Param] = {
    "body": Param("str", "sleep", TASK_BODIES, "what each task does"),
    # Fault injection, for testing how a scheduler copes.
    "fail_ids": Param("ints", [], help="task ids that raise instead of running"),
    "crash_ids": Param("ints", [], help="task ids that kill their worker process"),
}


def uniform(n_tasks: int, duration_s: float) -> list[float]:
    """``n_tasks`` tasks of ``duration_s`` each: static blocks are optimal here."""
    return [float(duration_s)] * n_tasks


#: Where :func:`worst_case` puts its long tasks; each is the worst case of one static policy.
ORDERS = ("blocked", "strided", "shuffled")


def worst_case(n_tasks: int, long_s: float, short_s: float, n_long: int,
               order: str = "blocked", n_workers: int = 1, seed: int = 0) -> list[float]:
    """``n_long`` long tasks among short ones, placed by ``order``.

    ``blocked`` (the talk's): the long tasks first; contiguous blocks put every long task on the
    first worker (146 tasks, 12 x 1.0 s then 134 x 0.2 s on 12 engines).
    ``strided``: long tasks at positions 0, n_workers, 2 x n_workers, ...; round robin of single
    items (Ray's Pool with chunksize 1) puts every long task on the first worker, while
    contiguous blocks spread them evenly. When the stride runs past the end, the next long tasks
    go to positions 1, 1 + n_workers, ... (the second worker under round robin), and so on.
    ``shuffled``: the blocked list permuted by ``numpy.random.RandomState(seed)``.
    """
    n_long = min(n_long, n_tasks)
    durations = [float(long_s)] * n_long + [float(short_s)] * (n_tasks - n_long)
    if order == "blocked":
        return durations
    if order == "strided":
        stride = max(1, n_workers)
        positions = [i for offset in range(stride) for i in range(offset, n_tasks, stride)]
        out = [float(short_s)] * n_tasks
        for i in positions[:n_long]:
            out[i] = float(long_s)
        return out
    if order == "shuffled":
        perm = np.random.RandomState(seed).permutation(n_tasks)
        return [durations[i] for i in perm]
    # validated before, kept for direct callers
    raise ParamError("order", f"unknown {order!r}; allowed: {', '.join(ORDERS)}")


def random_durations(
    n_tasks: int, seed: int, unit_s: float, distribution: str, **dist: float
) -> list[float]:
    """Draws from ``numpy.random.RandomState(seed)`` times ``unit_s``.

    With gamma 7.5/0.5, seed 9527, 180 tasks and unit 0.1 s this is the talk's list (sum 66.71 s).
    """
    rs = np.random.RandomState(seed)
    if distribution == "gamma":
        draws = rs.gamma(shape=dist["gamma_shape"], scale=dist["gamma_scale"], size=n_tasks)
    elif distribution == "exponential":
        draws = rs.exponential(scale=dist["mean"], size=n_tasks)
    elif distribution == "lognormal":
        draws = rs.lognormal(mean=dist["mu"], sigma=dist["sigma"], size=n_tasks)
    elif distribution == "uniform":
        draws = rs.uniform(low=dist["low"], high=dist["high"], size=n_tasks)
    else:  # validated before, kept for direct callers
        raise ParamError("distribution", f"unknown {distribution!r}")
    return [float(d) * unit_s for d in draws]


def explicit(durations_s: list[float]) -> list[float]:
    """Replay a trace: the given durations, in order."""
    return [float(d) for d in durations_s]


@dataclass(frozen=True)
class Shape:
    """A registered workload shape."""

    name: str
    params: dict[str, Param]
    doc: str
    # Called with the validated params (and n_workers); returns (body, args, planned) per task.
    make: Callable[[dict[str, Any], int], list[tuple[str, float | int, float]]] = field(repr=False)


RANDOM_DISTS: dict[str, tuple[str, ...]] = {
    "gamma": ("gamma_shape", "gamma_scale"),
    "exponential": ("mean",),
    "lognormal": ("mu", "sigma"),
    "uniform": ("low", "high"),
}


def _timed(durations: list[float], body: str) -> list[tuple[str, float | int, float]]:
    # A noop body does no work whatever the duration says (validate() insists on zero).
    return [(body, d, 0.0 if body == "noop" else d) for d in durations]


SHAPES: dict[str, Shape] = {
    "uniform": Shape(
        "uniform",
        {"n_tasks": Param("int>0"), "duration_s": Param("float>=0")},
        "equal tasks (control case)",
        lambda p, n: _timed(uniform(p["n_tasks"], p["duration_s"]), p["body"]),
    ),
    "worst_case": Shape(
        "worst_case",
        {
            "n_tasks": Param("int>0"),
            "long_s": Param("float>=0"),
            "short_s": Param("float>=0"),
            "n_long": Param("int>=0", None, help="default n_tasks // n_workers"),
            "order": Param("str", "blocked", ORDERS,
                           help="where the long tasks go: first (worst for contiguous blocks), "
                           "every n_workers-th (worst for round robin), or shuffled by seed"),
            "seed": Param("int>=0", 0, help="permutation seed for order = 'shuffled'"),
        },
        "long tasks first (or strided, shuffled): each static policy's worst case",
        lambda p, n: _timed(
            worst_case(p["n_tasks"], p["long_s"], p["short_s"], p["n_long"],
                       p.get("order", "blocked"), n, p.get("seed", 0)),
            p["body"],
        ),
    ),
    "random": Shape(
        "random",
        {
            "n_tasks": Param("int>0"),
            "seed": Param("int>=0"),
            "unit_s": Param("float>=0"),
            "distribution": Param("str", REQUIRED, tuple(RANDOM_DISTS)),
            "gamma_shape": Param("float>0", None),
            "gamma_scale": Param("float>0", None),
            "mean": Param("float>0", None),
            "mu": Param("float", None),
            "sigma": Param("float>=0", None),
            "low": Param("float>=0", None),
            "high": Param("float>=0", None),
        },
        "seeded random durations (gamma, exponential, lognormal, uniform)",
        lambda p, n: _timed(
            random_durations(
                p["n_tasks"], p["seed"], p["unit_s"], p["distribution"],
                **{k: p[k] for k in RANDOM_DISTS[p["distribution"]]},
            ),
            p["body"],
        ),
    ),
    "explicit": Shape(
        "explicit",
        {"durations_s": Param("floats>=0")},
        "replay a list of durations",
        lambda p, n: _timed(explicit(p["durations_s"]), p["body"]),
    ),
    "primes": Shape(
        "primes",
        {"numbers": Param("ints", list(TALK_PRIMES), help="default: the talk's 15 numbers")},
        "trial division of each number (real CPU work; planned time unknown)",
        lambda p, n: [("prime", int(x), math.nan) for x in p["numbers"]],
    ),
}


def validate(shape_name: str, raw: Mapping[str, Any], n_workers: int) -> dict[str, Any]:
    """Check a workload table against its shape; returns params with defaults filled in.

    Raises :class:`ParamError` naming the key and what is allowed.
    """
    if shape_name not in SHAPES:
        raise ParamError("shape", f"unknown shape {shape_name!r}; allowed: {', '.join(SHAPES)}")
    shape = SHAPES[shape_name]
    specs = {**shape.params, **COMMON}
    unknown = sorted(set(raw) - set(specs))
    if unknown:
        raise ParamError(
            unknown[0], f"not a parameter of shape {shape_name!r}; allowed: {', '.join(specs)}"
        )
    out: dict[str, Any] = {}
    for key, spec in specs.items():
        if key in raw:
            out[key] = check_param(key, spec, raw[key])
        elif spec.default is REQUIRED:
            raise ParamError(key, f"missing; shape {shape_name!r} needs {_required(shape)}")
        else:
            out[key] = spec.default
    if shape_name == "random":
        for key in RANDOM_DISTS[out["distribution"]]:
            if out[key] is None:
                raise ParamError(key, f"missing; distribution {out['distribution']!r} needs "
                                      f"{', '.join(RANDOM_DISTS[out['distribution']])}")
        if out["distribution"] == "uniform" and out["high"] < out["low"]:
            raise ParamError("high", f"must be >= low ({out['low']}), got {out['high']}")
    if shape_name == "worst_case":
        if out["n_long"] is None:
            out["n_long"] = out["n_tasks"] // n_workers
        _worst_case_order(raw, out)
    if out["body"] == "noop":
        _check_noop(shape_name, out)
    if shape_name == "primes" and not out["numbers"]:
        raise ParamError("numbers", "expected a non-empty list of integers")
    if shape_name == "primes" and out["body"] == "cpu":
        raise ParamError("body", "primes always runs trial division; omit 'body'")
    return out


def _check_noop(shape_name: str, out: Mapping[str, Any]) -> None:
    """A noop task has no duration: only zero-length task lists may select it, so a planned
    time never claims work that did not run."""
    if shape_name not in ("uniform", "explicit"):
        raise ParamError("body", f"'noop' needs shape 'uniform' or 'explicit' with zero "
                                 f"durations, not {shape_name!r}")
    durations = [out["duration_s"]] if shape_name == "uniform" else out["durations_s"]
    if any(d != 0 for d in durations):
        key = "duration_s" if shape_name == "uniform" else "durations_s"
        raise ParamError(key, "a 'noop' body has no duration: set it to 0 (or body = 'sleep')")


def _worst_case_order(raw: Mapping[str, Any], out: dict[str, Any]) -> None:
    """Keep ``order``/``seed`` in the params only where they change the list.

    Trial keys hash the params, so the talk's blocked case keeps the key it had before these
    keys existed (stored results stay resumable); a seed is refused where nothing is shuffled.
    """
    if out["order"] != "shuffled":
        if "seed" in raw:
            raise ParamError("seed", f"only used with order = 'shuffled', not {out['order']!r}")
        del out["seed"]
    if out["order"] == "blocked":
        del out["order"]


def _required(shape: Shape) -> str:
    return ", ".join(k for k, p in shape.params.items() if p.default is REQUIRED)


def build_tasks(
    shape_name: str, params: Mapping[str, Any], n_workers: int, cpu_rate: float | None = None
) -> list[Task]:
    """The task list for validated ``params``.

    ``cpu_rate`` (spin iterations per second, measured once per run) turns planned seconds into
    a fixed amount of CPU work for the ``cpu`` body.
    """
    items = SHAPES[shape_name].make(dict(params), n_workers)
    fail, crash = set(params.get("fail_ids", ())), set(params.get("crash_ids", ()))
    tasks = []
    for i, (body, arg, planned) in enumerate(items):
        if body == "cpu":
            if cpu_rate is None:
                raise ValueError("cpu body needs a calibrated cpu_rate")
            arg = max(1, round(float(arg) * cpu_rate))
        if i in fail:
            body = "fail"
        elif i in crash:
            body = "crash"
        tasks.append(Task(i, body, arg, planned))
    return tasks
