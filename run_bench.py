#!/usr/bin/env python
"""Entry point: ``python run_bench.py --alg fixmatch --smooth sts --labels 40`` (see ``--help``)."""

import sys

from ssl_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
