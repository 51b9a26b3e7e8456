"""``python -m research``: see :mod:`research.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
