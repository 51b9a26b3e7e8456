"""research: measure how task schedulers balance load.

Kept import-light on purpose: worker processes import :mod:`research.tasks` through this package.
The notebook API (:func:`run`, :func:`load`, :func:`summary`, :func:`timeline`, from
:mod:`research.api`) is imported on first use, so ``import research`` loads neither pandas nor
matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import load, run, summary, timeline

__version__ = "0.1.0"

#: The names :mod:`research.api` provides here, imported when first asked for.
_API = ("load", "run", "summary", "timeline")


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'research' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = ["__version__", "load", "run", "summary", "timeline"]
