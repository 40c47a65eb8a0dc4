"""The study's command line with the fake arm registered (NumPy only, fast): what the tests
run in a process of their own when they kill it, hold it or run two at once.

    python -m tests.fake_study --data DIR --out OUT [run_all flags ...]

With ``STUDY_TEST_TWO_FAKES=1`` the study's arms are the fake one and a second fake one
(key ``fake2``, the same model) instead of the real ones, for the tests where one arm fails
and the other must finish.
"""

import os
import sys

from common import registry
from experiments.run_all import main
from tests.fake_arm import SECOND_SPEC, SPEC

if __name__ == "__main__":
    if os.environ.get("STUDY_TEST_TWO_FAKES"):
        registry.ARMS.clear()
        registry.register_arm(SPEC)
        registry.register_arm(SECOND_SPEC)
    else:
        registry.register_arm(SPEC)
    sys.exit(main(sys.argv[1:]))
