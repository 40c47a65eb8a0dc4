"""The typed, frozen config: YAML, dotted overrides, validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from common.config import StudyConfig, load_config
from common.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"


def test_defaults_are_the_published_settings():
    cfg = StudyConfig()
    assert (cfg.pytorch.lr, cfg.pytorch.momentum, cfg.pytorch.weight_decay) == (0.01, 0.9, 1e-3)
    assert (cfg.pytorch.batch_size, cfg.pytorch.epochs) == (64, 15)
    assert (cfg.keras.lr, cfg.keras.batch_size, cfg.keras.epochs, cfg.keras.weights) == (1e-4, 32, 10, "imagenet")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


def test_shipped_configs_load_and_flags_override():
    insects = load_config(CONFIGS / "insects.yaml")
    assert insects.data.image_size == 224 and insects.pytorch.epochs == 15 and insects.keras.epochs == 10
    cfg = load_config(CONFIGS / "default.yaml", {"pytorch.epochs": 2, "explain.nsamples": 8, "seed": None})
    assert cfg.pytorch.epochs == 2 and cfg.explain.nsamples == 8 and cfg.seed == 0
    assert load_config(None).to_dict()["explain"]["methods"] == ["deep", "gradient"]


@pytest.mark.parametrize("text, message", [
    ("pytorch:\n  epochz: 3\n", "unknown key"),
    ("data:\n  val_fraction: 1.5\n", "val_fraction"),
    ("only: tensorflow\n", "only must be"),
    ("keras:\n  weights: /no/such/file.h5\n", "keras.weights"),
    ("- a list\n", "mapping"),
    ("a: [unclosed\n", "not valid YAML"),
])
def test_invalid_configs_raise_config_error(tmp_path, text, message):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(p)
