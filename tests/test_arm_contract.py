"""Every arm keeps the contract of ``common/arm.py``: each check of ``tests/arm_checks.py``
over each trained arm of ``tests/arm_cases.py``, each its own test (ids such as
``pytorch-check_save_then_load_predicts_identically``). Each arm is trained once per session."""

from __future__ import annotations

import pytest

from common.seeding import seed_everything
from tests.arm_cases import CASE_SPECS
from tests.arm_checks import checks_for

PARAMS = [
    pytest.param(spec.name, check, id=f"{spec.name}-{check.__name__}", marks=spec.marks)
    for spec in CASE_SPECS
    for check in checks_for(spec.outputs)
]


@pytest.fixture(autouse=True)
def _seed():
    """Seed as ``tests/conftest.py`` does, but not TensorFlow: resetting its seed clears its
    kernel cache, so each check's first call of every traced explainer graph would build its
    kernels again (``common.seeding.seed_everything``). No check runs a TensorFlow random op;
    the arms were trained, seeded, when they were built."""
    seed_everything(0, tensorflow=False)


@pytest.fixture
def arm_case(request):
    """The session's trained arm named by the parameter (``tests/conftest.py``)."""
    return request.getfixturevalue(f"{request.param}_case")


@pytest.mark.parametrize(("arm_case", "check"), PARAMS, indirect=["arm_case"])
def test_arm_keeps_the_contract(arm_case, check):
    check(arm_case)
