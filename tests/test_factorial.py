"""The factorial design: each architecture in both frameworks (``design: factorial``).

Which arms a design runs, and that the published study is the one it always was.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from common import registry
from common.config import load_config, selected_arms
from common.errors import ConfigError
from experiments import keys
from tests.fake_arm import SPEC as FAKE

PUBLISHED = ["pytorch", "keras"]


def test_an_arm_of_the_factorial_design_runs_in_that_design_only(monkeypatch):
    spec = dataclasses.replace(FAKE, design="factorial")
    monkeypatch.setitem(registry.ARMS, spec.key, spec)
    assert [s.key for s in selected_arms(load_config())] == PUBLISHED  # the default: the published study
    assert [s.key for s in selected_arms(load_config(overrides={"design": "factorial"}))][-1] == "fake"
    assert [s.key for s in selected_arms(load_config(overrides={"only": "fake"}))] == ["fake"]  # only: any arm
    # a published study's config holds the sections it always held; design is written when not the default
    published = load_config().to_dict()
    assert "design" not in published and "fake" not in published
    factorial = load_config(overrides={"design": "factorial", "fake.epochs": 2}).to_dict()
    assert factorial["design"] == "factorial" and factorial["fake"]["epochs"] == 2
    assert load_config(overrides=factorial) == load_config(overrides={"design": "factorial", "fake.epochs": 2})
    with pytest.raises(ConfigError, match="design must be one of published, factorial"):
        load_config(overrides={"design": "full"})


def test_the_published_arms_stage_keys_do_not_depend_on_the_design():
    selection = SimpleNamespace(key="selection")
    published, factorial = load_config(), load_config(overrides={"design": "factorial"})
    for key in PUBLISHED:  # a factorial study reuses a published study's stages of its arms
        spec = registry.arm_spec(key)
        assert keys.arm_keys(published, "data", selection, spec) == keys.arm_keys(factorial, "data", selection, spec)
