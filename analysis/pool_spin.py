"""The standard library's Pool with and without its worker handler's wake-ups on results: wall
time, parent CPU and each pool thread's CPU per run of no-ops (README, "A finding behind the
standard library's misses").

    python analysis/pool_spin.py [--tasks 400] [--runs 12] [--workers 2]

The logic lives in research/bench/pool_spin.py.
"""

import sys

from research.bench.pool_spin import main

if __name__ == "__main__":
    sys.exit(main())
