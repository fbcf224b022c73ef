"""Entry point: ``python main.py --help``."""

import sys

from fedcoin.application.cli import main

if __name__ == "__main__":
    sys.exit(main())
