"""A third arm for the tests, NumPy only: a linear softmax classifier on raw pixels.

It has the files every arm package has (``config.py``, ``model.py``, ``train.py``,
``explain.py``, ``arm.py``) and joins the study through one registry entry, :data:`SPEC`,
which ``tests/test_registry.py`` registers to run the whole pipeline through it.
"""

from common.registry import ArmSpec

SPEC = ArmSpec(
    key="fake",
    name="fake_linear",
    title="Fake linear model",
    framework="NumPy",
    package="tests.fake_arm",
    arm_class="FakeArm",
    config_class="FakeConfig",
    model_filename="model.npz",
    versions=(("numpy", ("numpy",)),),
)

# The same model under a second entry, for the tests where one arm fails and another runs on.
SECOND_SPEC = ArmSpec(
    key="fake2",
    name="fake_linear2",
    title="Second fake model",
    framework="NumPy",
    package="tests.fake_arm",
    arm_class="SecondFakeArm",
    config_class="FakeConfig",
    model_filename="model.npz",
    versions=(("numpy", ("numpy",)),),
)
