"""Harness overhead benchmark (not a test): no-op tasks per second through the harness and
through a bare loop of the same library calls, per scheduler, plus the task wrapper's own cost.

    .venv/bin/python experiments/bench_overhead.py [--tasks 2000] [--workers 2] [--repeats 3]
    make bench

Goal: the harness costs at most 5% of each system's own throughput, under 5 us per task in the
task wrapper. Prints a markdown table (the README shows one from a real run).
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from research.overhead import run_all, wrapper_cost_us
from research.schedulers import REGISTRY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--schedulers", nargs="*", default=list(REGISTRY))
    args = parser.parse_args(argv)
    w = wrapper_cost_us()
    print(f"task wrapper: {w['wrapper_us']:.2f} us per task "
          f"(execute {w['wrapped_us']:.2f} us, bare call {w['bare_us']:.2f} us)\n")
    rows = run_all(args.schedulers, args.workers, args.tasks, args.repeats)
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=",.1f") if _has_tabulate()
          else table.to_string(index=False, float_format=lambda x: f"{x:,.1f}"))
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
