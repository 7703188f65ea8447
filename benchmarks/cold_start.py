"""Fresh process to first result. See smallpond/bench/cold_start.py.

Run: python benchmarks/cold_start.py --rounds 5
"""

import sys

from smallpond.cli import main

if __name__ == "__main__":
    main(["bench", "cold-start", *sys.argv[1:]])
