"""Scheduler registry: name -> adapter class, imported only when used.

Adding a scheduler: write a module with a :class:`~research.schedulers.base.Scheduler`
subclass and add one line here.
"""

from __future__ import annotations

import importlib

from ..errors import ParamError
from .base import RunOutput, Scheduler

#: name -> "module:Class" (relative to this package). Order is the display order.
REGISTRY: dict[str, str] = {
    "serial": "serial:Serial",
    "threads": "threads:Threads",
    "mp-map": "mp:MpMap",
    "mp-dynamic": "mp:MpDynamic",
    "futures": "futures:Futures",
    "ipp-direct": "ipp:IppDirect",
    "ipp-lb": "ipp:IppLoadBalanced",
    "dask": "dask:Dask",
    "ray": "ray:Ray",
    "joblib": "joblib:Joblib",
    "ray-pool": "ray_pool:RayPool",
    "dask-local": "dask_local:DaskLocal",
    "parsl": "parsl_:Parsl",
    "celery": "celery:Celery",
}


def get_scheduler(name: str) -> type[Scheduler]:
    """The adapter class registered as ``name``; imports its module now (adapters import
    their scheduler library only when they start)."""
    if name not in REGISTRY:
        allowed = ", ".join(REGISTRY)
        raise ParamError("schedulers", f"unknown scheduler {name!r}; allowed: {allowed}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(f".{module}", __name__), cls)


__all__ = ["REGISTRY", "RunOutput", "Scheduler", "get_scheduler"]
