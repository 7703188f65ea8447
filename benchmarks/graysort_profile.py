"""Where a cold GraySort's time goes. See smallpond/bench/graysort_profile.py.

Run: python benchmarks/graysort_profile.py --gb 1   (same options as `smallpond bench
graysort-profile`)
"""

import sys

from smallpond.cli import main

if __name__ == "__main__":
    main(["bench", "graysort-profile", *sys.argv[1:]])
