"""BERT-layout checkpoints (Hugging Face `BertModel` names) -> flaxtrain Encoder params."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from flaxtrain.errors import FlaxtrainError
from flaxtrain.models.encoder import EncoderConfig

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "relu": "relu"}


def config_from_hf(hf: Mapping[str, Any]) -> EncoderConfig:
    """EncoderConfig of a Hugging Face BERT `config.json` dict."""
    activation = hf.get("hidden_act", "gelu")
    if activation not in _ACTIVATIONS:
        raise FlaxtrainError(f"hidden_act {activation!r} is not supported (supported: {', '.join(_ACTIVATIONS)})")
    return EncoderConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        mlp_dim=hf["intermediate_size"],
        max_positions=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        dropout_rate=hf.get("hidden_dropout_prob", 0.1),
        activation=_ACTIVATIONS[activation],
        pad_id=hf.get("pad_token_id", 0) or 0,
    )


def _strip_prefix(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drops the `bert.` prefix task models put on the encoder's weights; keeps encoder weights only."""
    out = {}
    for key, value in weights.items():
        key = key[len("bert."):] if key.startswith("bert.") else key
        if key.startswith(("embeddings.", "encoder.", "pooler.")):
            out[key] = value
    return out


def params_from_hf(weights: Mapping[str, np.ndarray], config: EncoderConfig) -> dict[str, Any]:
    """Encoder params from a BERT state dict (numpy arrays named as in `BertModel.state_dict()`).

    PyTorch `Linear` stores [out, in]; flaxtrain kernels are [in, out], with attention projections
    split into heads: query/key/value [m, h, d], out [h, d, m].
    """
    w = _strip_prefix(weights)
    h, d, m = config.num_heads, config.head_dim, config.hidden_size

    def get(key: str) -> np.ndarray:
        if key not in w:
            raise FlaxtrainError(f"checkpoint lacks {key}: it does not match a BERT encoder config")
        return np.asarray(w[key], np.float32)

    def norm(prefix: str) -> dict[str, np.ndarray]:
        return {"scale": get(f"{prefix}.weight"), "bias": get(f"{prefix}.bias")}

    def dense(prefix: str) -> dict[str, np.ndarray]:
        return {"kernel": get(f"{prefix}.weight").T, "bias": get(f"{prefix}.bias")}

    params: dict[str, Any] = {
        "word": {"embedding": get("embeddings.word_embeddings.weight")},
        "position": {"embedding": get("embeddings.position_embeddings.weight")},
        "embed_norm": norm("embeddings.LayerNorm"),
    }
    if config.type_vocab_size > 0:
        params["token_type"] = {"embedding": get("embeddings.token_type_embeddings.weight")}
    for i in range(config.num_layers):
        p = f"encoder.layer.{i}"
        attention = {
            name: {
                "kernel": get(f"{p}.attention.self.{name}.weight").T.reshape(m, h, d),
                "bias": get(f"{p}.attention.self.{name}.bias").reshape(h, d),
            }
            for name in ("query", "key", "value")
        }
        attention["out"] = {
            "kernel": get(f"{p}.attention.output.dense.weight").T.reshape(h, d, m),
            "bias": get(f"{p}.attention.output.dense.bias"),
        }
        params[f"layer_{i}"] = {
            "attention": attention,
            "attention_norm": norm(f"{p}.attention.output.LayerNorm"),
            "mlp": {"hidden": dense(f"{p}.intermediate.dense"), "out": dense(f"{p}.output.dense")},
            "mlp_norm": norm(f"{p}.output.LayerNorm"),
        }
    params["pooler"] = dense("pooler.dense") if "pooler.dense.weight" in w else {
        "kernel": np.eye(m, dtype=np.float32), "bias": np.zeros(m, np.float32)}  # checkpoints saved without one
    return params
