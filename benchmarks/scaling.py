"""Scaling curve with 1..16 workers (GraySort 4 GB, hash shuffle). See smallpond/bench/scaling.py.

Run on a 16-core machine: python benchmarks/scaling.py --workers 1,2,4,8,16 --graysort-gb 4
"""

import sys

from smallpond.cli import main

if __name__ == "__main__":
    main(["bench", "scaling", *sys.argv[1:]])
