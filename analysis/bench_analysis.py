"""Benchmark the analysis on synthetic results (no scheduler runs): one big trial's timeline,
and summary.csv for many trials, against their time goals.

    python analysis/bench_analysis.py [--tasks 100000] [--trials 1000] [--report]

The logic lives in research/bench/analysis_speed.py.
"""

import sys

from research.bench.analysis_speed import main

if __name__ == "__main__":
    sys.exit(main())
