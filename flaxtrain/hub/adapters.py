"""LoRA adapters of encoder models <-> PEFT's format (adapter_model.safetensors + adapter_config.json).

PEFT names an adapter `base_model.model.<module>.lora_A.weight` [r, in] and `...lora_B.weight` [out, r],
<module> the PyTorch module of the task model (`bert.encoder.layer.0.attention.self.query`); the head
that trains beside it (modules_to_save) goes in under its own names (`base_model.model.classifier.weight`).
flaxtrain's A is the kernel's input axes + [r] and B [r] + its output axes (models/lora.py): flattened
in the kernel's order, they are the transposes of PEFT's, as kernels are of PyTorch's Linear weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flaxtrain.errors import FlaxtrainError
from flaxtrain.files import atomic_directory, written_by_main_process
from flaxtrain.hub import encoders
from flaxtrain.models.encoder import EncoderConfig
from flaxtrain.models.lora import LORA, LoraConfig

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
_PREFIX = "base_model.model."
# flaxtrain's head names -> PEFT's task_type (which PeftModel class loads the adapter).
TASK_TYPES = {"sequence": "SEQ_CLS", "token": "TOKEN_CLS", "span": "QUESTION_ANS", "mlm": None}


def encoder_modules(config: EncoderConfig) -> dict[str, str]:
    """{flaxtrain module path of a kernel ('encoder/layer_0/attention/query'): the PyTorch module's name
    in the task model ('bert.encoder.layer.0.attention.self.query')}."""
    _, prefix = encoders.CLASS_PREFIX[config.family]
    return {"/".join(("encoder", *path[:-1])): prefix + hf[: -len(".weight")]
            for hf, path, _ in encoders._encoder_entries(config, config.family) if path[-1] == "kernel"}


def _head_modules(head: Mapping[str, Any], family: str, task: str) -> list[str]:
    """PEFT's modules_to_save for the head params `head`: the top-level PyTorch modules they sit in."""
    names = encoders.head_params_to_hf(head, family, task)
    return sorted({name.split(".")[0] for name in names})


def save_adapter(directory: str | Path, config: EncoderConfig, params: Mapping[str, Any], lora: LoraConfig, *,
                 task: str, head: tuple[str, ...], base_model: str | None = None) -> Path:
    """Writes `params['lora']` (and the trained head `head`) as a PEFT LoRA adapter of the Hugging Face
    task model `task` ('sequence', 'token', 'span', 'mlm') that `save_pretrained` would write.

    Args:
      directory: target folder (replaced atomically when it exists).
      config: the model's EncoderConfig.
      params: the model's params, adapters under 'lora'.
      lora: the adapters' config.
      task: the head's Hugging Face kind.
      head: top-level params trained beside the adapters (PEFT's modules_to_save).
      base_model: the checkpoint the adapters were trained on (adapter_config's base_model_name_or_path).
    """
    from safetensors.numpy import save_file

    modules = encoder_modules(config)
    params = jax.device_get(params)
    weights: dict[str, np.ndarray] = {}
    for target, n_in in zip(lora.targets, lora.input_axes):
        if target not in modules:
            raise FlaxtrainError(f"the adapter on {target} has no PEFT name: PEFT adapters cover the encoder's kernels; "
                                 "save this model with predictor.save() instead")
        pair = params[LORA]
        for key in target.split("/"):
            pair = pair[key]
        a, b = np.asarray(pair["a"], np.float32), np.asarray(pair["b"], np.float32)
        weights[f"{_PREFIX}{modules[target]}.lora_A.weight"] = np.ascontiguousarray(a.reshape(math.prod(a.shape[:n_in]), lora.rank).T)
        weights[f"{_PREFIX}{modules[target]}.lora_B.weight"] = np.ascontiguousarray(b.reshape(lora.rank, -1).T)
    head_params = {name: params[name] for name in head}
    saved = []
    if head_params:
        unknown = sorted(set(head_params) - set(encoders.HEAD_NAMES[task][config.family]))
        if unknown:
            raise FlaxtrainError(f"the trained params {unknown[0]!r} have no PEFT name in a {config.family} {task} model: "
                                 "save this model with predictor.save() instead")
        weights.update({_PREFIX + k: v for k, v in encoders.head_params_to_hf(head_params, config.family, task).items()})
        saved = _head_modules(head_params, config.family, task)
    peft_config = {
        "peft_type": "LORA", "task_type": TASK_TYPES[task], "r": lora.rank, "lora_alpha": lora.alpha,
        "lora_dropout": 0.0, "target_modules": sorted(modules[t] for t in lora.targets), "modules_to_save": saved or None,
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "use_rslora": False,
        "use_dora": False, "base_model_name_or_path": base_model,
    }

    def write() -> None:
        with atomic_directory(directory) as staging:
            save_file(weights, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
            (staging / CONFIG_FILE).write_text(json.dumps(peft_config, indent=2, sort_keys=True))

    return written_by_main_process(directory, write)


def read_adapter(directory: str | Path, config: EncoderConfig, *, task: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(adapter_config.json, {module path: (A [r, in], B [out, r])} in PEFT's layout, head params) of a PEFT
    LoRA adapter for an encoder model, with one-line errors for what does not fit."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise FlaxtrainError(f"{path} has no {name}: not a PEFT adapter folder (predictor.save_adapter writes one)")
    try:
        peft_config = json.loads((path / CONFIG_FILE).read_text())
        weights = load_file(str(path / WEIGHTS_FILE))
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as err:
        raise FlaxtrainError(f"the adapter in {path} is unreadable ({str(err).splitlines()[0][:200]}): save it again") from None
    if peft_config.get("peft_type") != "LORA":
        raise FlaxtrainError(f"{path / CONFIG_FILE} holds a {peft_config.get('peft_type')} adapter: flaxtrain reads LoRA ones")
    for key, wanted in (("use_dora", False), ("use_rslora", False), ("fan_in_fan_out", False), ("bias", "none")):
        if peft_config.get(key, wanted) != wanted:
            raise FlaxtrainError(f"the adapter in {path} has {key}={peft_config[key]!r}: flaxtrain reads plain LoRA ({key}={wanted!r})")
    if peft_config.get("rank_pattern") or peft_config.get("alpha_pattern"):
        raise FlaxtrainError(f"the adapter in {path} sets ranks per module (rank_pattern/alpha_pattern): flaxtrain reads one rank")
    by_module = {hf: ours for ours, hf in encoder_modules(config).items()}
    pairs: dict[str, dict[str, np.ndarray]] = {}
    head_weights: dict[str, np.ndarray] = {}
    for name, value in weights.items():
        key = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key:
                module = key.split(marker)[0]
                if module not in by_module:
                    raise FlaxtrainError(f"the adapter in {path} adapts {module}, which this {config.family} model lacks: "
                                         "load it onto the checkpoint it was trained on")
                pairs.setdefault(by_module[module], {})[part] = np.asarray(value, np.float32)
                break
        else:
            head_weights[key.replace(".modules_to_save.default.", ".")] = np.asarray(value, np.float32)
    if not pairs:
        raise FlaxtrainError(f"the adapter in {path} holds no LoRA weights: save it again")
    head = encoders.head_params_from_hf(head_weights, config.family, task) if head_weights else None
    return peft_config, {k: (v["lora_A"], v["lora_B"]) for k, v in pairs.items()}, head or {}
