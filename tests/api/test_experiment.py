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
    check_config(_load(name).get_config(variant))


def test_pretrained_models_take_no_size_keys():
    config = _load("minilm_rotten_tomatoes").get_config()
    with config.unlocked():
        config.model.hidden_size = 128
    with pytest.raises(FlaxtrainError, match="drop model.hidden_size"):
        check_config(config)
