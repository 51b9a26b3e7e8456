"""Draw the figures of a results directory, or the timeline of one trial file.

    python analysis/figures.py RESULTS_DIR | TRIAL.parquet --out DIR

The same as ``python -m research figures``: the logic lives in research/analysis/ (tested).
"""

import sys

from research.cli import main

if __name__ == "__main__":
    sys.exit(main(["figures", *sys.argv[1:]]))
