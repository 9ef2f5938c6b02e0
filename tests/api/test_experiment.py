"""Config files: every variant passes the key checks; bad keys are named."""

import importlib.util
from pathlib import Path

import pytest

from flaxtrain.api.experiment import check_config
from flaxtrain.errors import FlaxtrainError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, variant", [("textcnn_rotten_tomatoes", v) for v in ("default", "rand", "tiny")]
                         + [("minilm_rotten_tomatoes", v) for v in ("default", "tiny")])
def test_every_config_variant_is_valid(name, variant):
    config = _load(name).get_config(variant)
    check_config(config)  # raises on an unknown section or key
    assert config.is_locked and config.model.name and config.train.epochs >= 1
    with pytest.raises(AttributeError):  # locked: a misspelt key cannot be added silently
        config.train.epoch = 3
    with config.unlocked():
        config.data.max_example = 10  # a typo check_config must catch in every variant
    with pytest.raises(FlaxtrainError, match=r"unknown config key data.max_example \(did you mean 'max_examples'\?\)"):
        check_config(config)
    if variant == "tiny":
        assert config.train.epochs <= 3 and 0 < config.data.max_examples <= 400


def test_pretrained_models_take_no_size_keys():
    config = _load("minilm_rotten_tomatoes").get_config()
    with config.unlocked():
        config.model.hidden_size = 128
    with pytest.raises(FlaxtrainError, match="drop model.hidden_size"):
        check_config(config)
