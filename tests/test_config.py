"""The typed, frozen config: YAML, dotted overrides, validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from common.config import from_dict, load_config
from common.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"


def test_config_is_frozen_and_round_trips_through_its_dict():
    cfg = load_config(CONFIGS / "insects.yaml", {"pytorch.epochs": 2, "keras.weights": "none"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    assert from_dict(cfg.to_dict()) == cfg
    assert list(cfg.to_dict()) == [
        "seed",
        "out",
        "only",
        "data",
        "pytorch",
        "keras",
        "explain",
        "assess",
        "deterministic",
    ]
    assert cfg.pytorch is cfg.arm("pytorch") and cfg.pytorch.epochs == 2 and cfg.keras.weights == "none"
    with pytest.raises(AttributeError, match="no attribute or arm section 'jax'"):
        cfg.jax  # noqa: B018


def test_shipped_configs_load_and_flags_override():
    insects = load_config(CONFIGS / "insects.yaml")
    assert insects.data.image_size == 224 and insects.pytorch.epochs == 15 and insects.keras.epochs == 10
    cfg = load_config(CONFIGS / "default.yaml", {"pytorch.epochs": 2, "explain.nsamples": 8, "seed": None})
    assert cfg.pytorch.epochs == 2 and cfg.explain.nsamples == 8 and cfg.seed == 0
    assert load_config(None).to_dict()["explain"]["methods"] == ["deep", "gradient"]
    # the pixel limit: stated in both shipped configs as the default, and a flag overrides it
    default_limit = load_config(None).data.max_image_pixels
    assert insects.data.max_image_pixels == cfg.data.max_image_pixels == default_limit == 8192 * 8192
    assert load_config(CONFIGS / "insects.yaml", {"data.max_image_pixels": 10**6}).data.max_image_pixels == 10**6


@pytest.mark.parametrize(
    "text, message",
    [
        ("pytorch:\n  epochz: 3\n", "unknown key"),
        ("data:\n  val_fraction: 1.5\n", "val_fraction"),
        ("data:\n  max_image_pixels: 0\n", "data.max_image_pixels must be positive, got 0"),
        ("data:\n  max_image_pixels: 100000000.0\n", "data.max_image_pixels must be an integer"),
        ("only: tensorflow\n", "only must be"),
        ("keras:\n  weights: /no/such/file.h5\n", "keras.weights"),
        ("pytorch:\n  device: tpu\n", "pytorch.device must be auto, cpu or cuda"),
        ("keras:\n  epochs: 0\n", "epochs and batch_size must be positive"),
        ("explain:\n  methods: [deep, lime]\n", "explain.methods may hold only deep, gradient, gradinput, got lime"),
        ("- a list\n", "mapping"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_configs_raise_config_error(tmp_path, text, message):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(p)
