"""Check the talk's claims against a results directory: writes claims.csv and prints it.

    python analysis/claims.py RESULTS_DIR [--out REPORT_DIR]

The same as ``python -m research claims``: the logic lives in research/analysis/ (tested).
"""

import sys

from research.cli import main

if __name__ == "__main__":
    sys.exit(main(["claims", *sys.argv[1:]]))
