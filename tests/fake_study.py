"""The study's command line with the fake arm registered (NumPy only, fast): what the tests
run in a process of their own when they kill it, hold it or run two at once.

    python -m tests.fake_study --data DIR --out OUT [run_all flags ...]
"""

import sys

from common import registry
from experiments.run_all import main
from tests.fake_arm import SPEC

if __name__ == "__main__":
    registry.register_arm(SPEC)
    sys.exit(main(sys.argv[1:]))
