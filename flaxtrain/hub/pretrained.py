"""`load_pretrained(path)`: a local Hugging Face-format folder -> (config, params, tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain.errors import FlaxtrainError, nearest
from flaxtrain.files import atomic_directory, written_by_main_process
from flaxtrain.hub import encoders, seq2seq
from flaxtrain.hub.local import load_tokenizer, resolve_checkpoint
from flaxtrain.models.encoder import Encoder, unstack_layers
from flaxtrain.models.seq2seq import Seq2Seq, Seq2SeqConfig

FAMILIES = tuple(encoders.LAYER_NAMES)  # model_type values of config.json that load as an Encoder
SEQ2SEQ_FAMILIES = seq2seq.FAMILIES  # ... and as an encoder-decoder Seq2Seq


def read_hf_config(path: Path) -> dict[str, Any]:
    """The checkpoint's config.json as a dict."""
    file = path / "config.json"
    if not file.is_file():
        raise FlaxtrainError(f"{path} has no config.json: not a Hugging Face-format checkpoint folder")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise FlaxtrainError(f"{file} is not valid JSON ({err})") from None


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of model*.safetensors, else of pytorch_model*.bin (only through torch, weights only)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    files = sorted(path.glob("model*.safetensors"))
    if not files:
        return _read_torch_bin(path)
    weights: dict[str, np.ndarray] = {}
    for file in files:
        try:
            weights.update(load_file(str(file)))
        except SafetensorError as err:
            raise FlaxtrainError(f"{file} is not a readable safetensors file ({err})") from None
    return weights


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    files = sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise FlaxtrainError(f"{path} has no model.safetensors (or pytorch_model.bin): not a checkpoint folder")
    try:
        import torch
    except ImportError:
        raise FlaxtrainError(f"{path} holds only pytorch_model.bin: install torch to read it, or convert it to safetensors") from None
    weights: dict[str, np.ndarray] = {}
    for file in files:
        try:
            state = torch.load(str(file), map_location="cpu", weights_only=True)  # no pickled code runs
        except Exception as err:  # torch raises several types for unreadable or unsafe files
            raise FlaxtrainError(f"{file} is not a readable PyTorch weights file ({str(err).splitlines()[0][:200]})") from None
        weights.update({k: v.detach().float().numpy() for k, v in state.items()})
    return weights


def check_shapes(params: Any, expected: Any) -> None:
    """Fails naming the first param whose shape differs from the config's, with both shapes."""
    got = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    want = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    for key, shape in want.items():
        if key not in got:
            raise FlaxtrainError(f"converted weights lack {key} (expected shape {shape})")
        if got[key] != shape:
            raise FlaxtrainError(f"weight {key} has shape {got[key]} but the config needs {shape}: config.json and weights disagree")


def load_pretrained(name_or_path: str | Path, task: str | None = None) -> tuple[Any, Any, Any]:
    """Reads a named ('minilm') or local Hugging Face-format encoder checkpoint.

    Args:
      name_or_path: 'minilm' or a folder with config.json, model.safetensors and tokenizer.json.
      task: None for the encoder alone, or 'sequence' | 'token' | 'span' | 'mlm' to also read that
        task head's weights when the checkpoint was fine-tuned with one.

    Returns:
      (EncoderConfig, params, tokenizers.Tokenizer). Params are float32 jax arrays: the encoder's
      own without a task, else {'encoder': ..., **head} (head omitted when the checkpoint has none).
    """
    path = resolve_checkpoint(name_or_path)
    hf = read_hf_config(path)
    model_type = hf.get("model_type")
    if model_type in SEQ2SEQ_FAMILIES:
        raise FlaxtrainError(f"{path} holds a {model_type} encoder-decoder: load it with flaxtrain.hub.load_seq2seq "
                             "or get_model(..., task='translation' | 'summarization')")
    if model_type not in FAMILIES:
        raise FlaxtrainError(f"model_type {model_type!r} in {path}/config.json is not supported "
                             f"(supported: {', '.join(FAMILIES + SEQ2SEQ_FAMILIES)})")
    if task is not None and task not in encoders.HEAD_NAMES:
        raise FlaxtrainError(f"unknown task head {task!r}{nearest(task, encoders.HEAD_NAMES)}")
    config = encoders.config_from_hf(hf)
    weights = read_weights(path)
    expected = nn.meta.unbox(jax.eval_shape(
        lambda: Encoder(config).init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32), deterministic=True)["params"]
    ))
    params = encoders.params_from_hf(weights, config, model_type, expected)
    check_shapes(params, expected)
    if task is not None:
        params = {"encoder": params, **(encoders.head_params_from_hf(weights, model_type, task) or {})}
    return config, jax.tree.map(jnp.asarray, params), load_tokenizer(path)


def save_pretrained(
    directory: str | Path, config: Any, params: Any, tokenizer: Any, *, task: str | None = None,
    class_names: list[Any] | None = None, problem_type: str | None = None,
) -> Path:
    """Writes config.json, model.safetensors and tokenizer.json that PyTorch `transformers` loads.

    Args:
      directory: target folder (replaced atomically when it exists).
      config: the EncoderConfig.
      params: encoder params, or {'encoder': ..., **head params} with `task`.
      tokenizer: the `tokenizers.Tokenizer` the model was trained with.
      task: None, 'sequence', 'token', 'span' or 'mlm' (selects the Hugging Face class).
      class_names: label names of a sequence or token head (id2label).
      problem_type: 'regression' for a one-output sequence head (Hugging Face's problem_type).
    """
    from safetensors.numpy import save_file

    family = config.family
    name, prefix = encoders.CLASS_PREFIX[family]
    encoder = jax.device_get(params if task is None else params["encoder"])
    if getattr(config, "scan_layers", False) and not config.share_layers:  # checkpoints name each block
        encoder = unstack_layers(encoder, config.num_layers)
    weights = encoders.params_to_hf(encoder, config, family, prefix="" if task is None else prefix)
    hf = {**encoders.config_to_hf(config), "architectures": [name + encoders.TASK_CLASSES[task]]}
    if task is not None:
        weights.update(encoders.head_params_to_hf(jax.device_get(params), family, task))
    if task in ("sequence", "token") and class_names is not None:
        hf["id2label"] = {str(i): str(c) for i, c in enumerate(class_names)}
        hf["label2id"] = {str(c): i for i, c in enumerate(class_names)}
    if problem_type == "regression":
        hf.update(id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}, problem_type="regression")
    def write() -> None:
        with atomic_directory(directory) as staging:
            save_file(weights, str(staging / "model.safetensors"), metadata={"format": "pt"})
            (staging / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True))
            _save_tokenizer(tokenizer, staging)

    return written_by_main_process(directory, write)


def load_seq2seq(name_or_path: str | Path, *, tokenizer: bool = True) -> tuple[Seq2SeqConfig, Any, Any, dict[str, Any]]:
    """Reads a local T5, BART or Marian checkpoint (Hugging Face format).

    Args:
      name_or_path: a folder with config.json and model.safetensors (or pytorch_model.bin), and a
        tokenizer: tokenizer.json, or the sentencepiece model (spiece.model, source.spm).
      tokenizer: False to read the weights alone (the returned tokenizer is then None).

    Returns:
      (Seq2SeqConfig, float32 params, `tokenizers.Tokenizer` or None, generation settings from
      generation_config.json and config.json, in transformers' names).
    """
    path = resolve_checkpoint(name_or_path)
    hf = read_hf_config(path)
    if hf.get("model_type") not in SEQ2SEQ_FAMILIES:
        raise FlaxtrainError(f"model_type {hf.get('model_type')!r} in {path}/config.json is not an encoder-decoder "
                             f"(supported: {', '.join(SEQ2SEQ_FAMILIES)})")
    weights = read_weights(path)
    config = seq2seq.config_from_hf(hf, weights)
    expected = nn.meta.unbox(jax.eval_shape(lambda: Seq2Seq(config).init(
        jax.random.key(0), jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2), jnp.int32), deterministic=True)["params"]))
    params = seq2seq.params_from_hf(weights, config, expected)
    check_shapes(params, expected)
    generation = seq2seq.read_generation(path, hf)
    return config, jax.tree.map(jnp.asarray, params), load_seq2seq_tokenizer(path) if tokenizer else None, generation


def load_seq2seq_tokenizer(path: Path) -> Any:
    """tokenizer.json when the folder has one, else its sentencepiece model converted (hub/sentencepiece.py)."""
    if (path / "tokenizer.json").is_file():
        return load_tokenizer(path)
    from flaxtrain.hub.sentencepiece import tokenizer_from_sentencepiece

    return tokenizer_from_sentencepiece(path)


def save_seq2seq(directory: str | Path, config: Seq2SeqConfig, params: Any, tokenizer: Any = None, *,
                 generation: dict[str, Any] | None = None) -> Path:
    """Writes config.json, generation_config.json, model.safetensors (and tokenizer.json) that PyTorch
    `transformers` loads as T5ForConditionalGeneration, BartForConditionalGeneration or MarianMTModel."""
    from safetensors.numpy import save_file

    weights = seq2seq.params_to_hf(jax.device_get(params), config)
    hf = seq2seq.config_to_hf(config)
    generation = {"decoder_start_token_id": config.decoder_start_id, "eos_token_id": config.eos_id,
                  "pad_token_id": config.pad_id, **(generation or {})}
    if config.forced_eos_id is not None:
        generation.setdefault("forced_eos_token_id", config.forced_eos_id)
    def write() -> None:
        with atomic_directory(directory) as staging:
            save_file(weights, str(staging / "model.safetensors"), metadata={"format": "pt"})
            (staging / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True))
            (staging / "generation_config.json").write_text(json.dumps(generation, indent=2, sort_keys=True))
            if tokenizer is not None:
                _save_tokenizer(tokenizer, staging)

    return written_by_main_process(directory, write)


def _save_tokenizer(tokenizer: Any, staging: Path) -> None:
    from tokenizers import Tokenizer

    plain = Tokenizer.from_str(tokenizer.to_str())  # without the truncation flaxtrain set for training
    plain.no_truncation()
    plain.no_padding()
    plain.save(str(staging / "tokenizer.json"))
