"""GraySort side by side with peers, each a fresh process. See smallpond/bench/graysort.py.

Run: python benchmarks/graysort.py --gb 1 --rounds 3   (same options as `smallpond bench graysort`)
"""

import sys

from smallpond.cli import main

if __name__ == "__main__":
    main(["bench", "graysort", *sys.argv[1:]])
