"""Harness overhead benchmark (not a test): no-op tasks per second through the harness and
through a bare loop of the same library calls, per scheduler, plus the task wrapper's own cost.

    .venv/bin/python experiments/bench_overhead.py [--tasks 2000] [--workers 2] [--repeats 3]
    make bench        (python -m research bench)

The logic lives in research/bench/overhead.py.
"""

import sys

from research.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
