"""Write the report of a results directory: index.html, report.md, summary.csv, claims.csv.

    python analysis/report.py RESULTS_DIR --out REPORT_DIR

The same as ``python -m research report``: the logic lives in research/analysis/ (tested).
"""

import sys

from research.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
