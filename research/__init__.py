"""research: measure how task schedulers balance load.

Kept import-light on purpose: worker processes import :mod:`research.tasks` through this package.
"""

__version__ = "0.1.0"
