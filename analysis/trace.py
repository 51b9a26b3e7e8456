"""Export trials as Chrome trace-event JSON (open in ui.perfetto.dev).

    python analysis/trace.py TRIAL.parquet | RESULTS_DIR [--out FILE] [--absolute]

The same as ``python -m research trace``: the logic lives in research/analysis/ (tested).
"""

import sys

from research.cli import main

if __name__ == "__main__":
    sys.exit(main(["trace", *sys.argv[1:]]))
