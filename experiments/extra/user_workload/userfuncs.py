"""A user's own task function, outside the ``research`` package (see ../user_workload.toml).

Workers import it by name (``userfuncs:simulate``) because the config lists this directory in
``[experiment] pythonpath``.
"""

from __future__ import annotations

import time


def simulate(n: int, pause_s: float, label: str = "run") -> dict[str, object]:
    """Wait ``pause_s`` seconds (an I/O-bound step), then sum ``n`` squares; returns both."""
    time.sleep(pause_s)
    return {"label": label, "n": n, "total": sum(i * i for i in range(n))}


def checked(x: int) -> int:
    """Raise for a negative ``x`` (a task that fails is recorded per task, not fatal)."""
    if x < 0:
        raise ValueError(f"x must be >= 0, got {x}")
    return 2 * x
