"""One small study, made once per test session (``conftest.small_study``) and shared by the tests of
the Python API, the example notebook and the report in a browser.

Two fake arms (``tests/fake_arm``: the fake one and a second one, NumPy only) stand in for the
real ones, so the study has every section a report can hold: a paired comparison, agreement
between models, a seed sweep (seeds 0 and 1) and the attribution-quality section, on the small
test image set, in about half a minute. It runs through :func:`experiments.run_study`, as a user
in a notebook runs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common import registry
from tests.fake_arm import SECOND_SPEC, SPEC

# The shipped configs have sections for the real arms; the fakes' config names none of them.
CONFIG = "seed: 0\n"
SETTINGS = dict(
    seeds=[0, 1], image_size=32, n_explain=6, n_background=4, nsamples=8, assess_steps=4, threads=1, quiet=True
)
# IPython runs this in a notebook's kernel before the notebook: the same two fake arms there.
KERNEL_STARTUP = """\
from common import registry
from tests.fake_arm import SECOND_SPEC, SPEC

registry.ARMS.clear()
registry.register_arm(SPEC)
registry.register_arm(SECOND_SPEC)
"""


@dataclass(frozen=True)
class SmallStudy:
    data: Path  # the data folder
    config: Path  # the fakes' config file
    out: Path  # the study's output folder


@contextlib.contextmanager
def fakes_registered() -> Iterator[None]:
    """The two fake arms as the registry's only arms (one dict, which modules share by name), then
    the arms before, in their order (the order the report lists models and pairs in)."""
    before = dict(registry.ARMS)
    registry.ARMS.clear()
    registry.ARMS.update({spec.key: spec for spec in (SPEC, SECOND_SPEC)})
    try:
        yield
    finally:
        registry.ARMS.clear()
        registry.ARMS.update(before)


def make_small_study(root: Path, split_folders) -> SmallStudy:
    """Write the test images and the fakes' config under ``root`` and run the study there."""
    from experiments import run_study

    data = split_folders(root / "ds", n_train=8, n_test=3)
    config = root / "fakes.yaml"
    config.write_text(CONFIG)
    out = root / "out"
    with fakes_registered():
        run_study(data, config, out, **SETTINGS)
    return SmallStudy(data, config, out)
