"""BERT-family checkpoints (Hugging Face names) -> flaxtrain Encoder params, one table per family.

Families: bert, roberta, xlm-roberta, distilbert, albert. PyTorch `Linear` stores [out, in];
flaxtrain kernels are [in, out], with attention projections split into heads: query/key/value
[m, h, d], out [h, d, m].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from flaxtrain.errors import FlaxtrainError
from flaxtrain.models.encoder import EncoderConfig

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "relu": "relu"}


class LayerNames(NamedTuple):
    """Where one encoder block's tensors live in a family's checkpoint."""

    prefix: str  # with `{i}` for the block index
    query: str
    key: str
    value: str
    out: str
    attention_norm: str
    hidden: str
    mlp_out: str
    mlp_norm: str


_BERT = LayerNames("encoder.layer.{i}.", "attention.self.query", "attention.self.key", "attention.self.value",
                   "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense", "output.dense",
                   "output.LayerNorm")
_DISTILBERT = LayerNames("transformer.layer.{i}.", "attention.q_lin", "attention.k_lin", "attention.v_lin",
                         "attention.out_lin", "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm")
_ALBERT = LayerNames("encoder.albert_layer_groups.0.albert_layers.0.", "attention.query", "attention.key",
                     "attention.value", "attention.dense", "attention.LayerNorm", "ffn", "ffn_output",
                     "full_layer_layer_norm")
LAYER_NAMES = {"bert": _BERT, "roberta": _BERT, "xlm-roberta": _BERT, "distilbert": _DISTILBERT, "albert": _ALBERT}
POOLER = {"bert": "pooler.dense", "roberta": "pooler.dense", "xlm-roberta": "pooler.dense", "albert": "pooler"}
_MODEL_PREFIXES = ("bert.", "roberta.", "distilbert.", "albert.")


def config_from_hf(hf: Mapping[str, Any]) -> EncoderConfig:
    """EncoderConfig of a Hugging Face BERT-family `config.json` dict."""
    family = hf.get("model_type")
    if family == "distilbert":
        if hf.get("sinusoidal_pos_embds"):
            raise FlaxtrainError("DistilBERT with sinusoidal_pos_embds is not supported: use learned positions")
        activation = hf.get("activation", "gelu")
        sizes = dict(hidden_size=hf["dim"], num_layers=hf["n_layers"], num_heads=hf["n_heads"], mlp_dim=hf["hidden_dim"],
                     type_vocab_size=0, layer_norm_eps=1e-12, dropout_rate=hf.get("dropout", 0.1), use_pooler=False)
    else:
        activation = hf.get("hidden_act", "gelu")
        sizes = dict(hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
                     mlp_dim=hf["intermediate_size"], type_vocab_size=hf.get("type_vocab_size", 2),
                     layer_norm_eps=hf.get("layer_norm_eps", 1e-12), dropout_rate=hf.get("hidden_dropout_prob", 0.1))
    if activation not in _ACTIVATIONS:
        raise FlaxtrainError(f"activation {activation!r} is not supported (supported: {', '.join(_ACTIVATIONS)})")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise FlaxtrainError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported: only 'absolute'")
    if family == "albert":
        if hf.get("num_hidden_groups", 1) != 1 or hf.get("inner_group_num", 1) != 1:
            raise FlaxtrainError("ALBERT with several layer groups is not supported: num_hidden_groups and inner_group_num must be 1")
        sizes.update(embedding_dim=hf["embedding_size"], share_layers=True)
    pad_id = hf.get("pad_token_id")
    return EncoderConfig(
        vocab_size=hf["vocab_size"],
        family=family,
        max_positions=hf.get("max_position_embeddings", 512),
        activation=_ACTIVATIONS[activation],
        pad_id=0 if pad_id is None else pad_id,
        roberta_positions=family in ("roberta", "xlm-roberta"),
        **sizes,
    )


def params_from_hf(weights: Mapping[str, np.ndarray], config: EncoderConfig, family: str) -> dict[str, Any]:
    """Encoder params from a family's state dict (numpy arrays named as in its PyTorch base model)."""
    w = {}
    for key, value in weights.items():  # task models prefix the encoder's weights with the family name
        for prefix in _MODEL_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        w[key] = value
    h, d, m = config.num_heads, config.head_dim, config.hidden_size

    def get(key: str) -> np.ndarray:
        if key not in w:
            raise FlaxtrainError(f"checkpoint lacks {key}: it does not match its config.json ({family})")
        return np.asarray(w[key], np.float32)

    def norm(name: str) -> dict[str, np.ndarray]:
        return {"scale": get(f"{name}.weight"), "bias": get(f"{name}.bias")}

    def dense(name: str) -> dict[str, np.ndarray]:
        return {"kernel": get(f"{name}.weight").T, "bias": get(f"{name}.bias")}

    def layer(i: int) -> dict[str, Any]:
        names = LAYER_NAMES[family]
        p = names.prefix.format(i=i)
        attention = {
            part: {"kernel": get(f"{p}{name}.weight").T.reshape(m, h, d), "bias": get(f"{p}{name}.bias").reshape(h, d)}
            for part, name in (("query", names.query), ("key", names.key), ("value", names.value))
        }
        attention["out"] = {"kernel": get(f"{p}{names.out}.weight").T.reshape(h, d, m), "bias": get(f"{p}{names.out}.bias")}
        return {
            "attention": attention,
            "attention_norm": norm(p + names.attention_norm),
            "mlp": {"hidden": dense(p + names.hidden), "out": dense(p + names.mlp_out)},
            "mlp_norm": norm(p + names.mlp_norm),
        }

    params: dict[str, Any] = {
        "word": {"embedding": get("embeddings.word_embeddings.weight")},
        "position": {"embedding": get("embeddings.position_embeddings.weight")},
        "embed_norm": norm("embeddings.LayerNorm"),
    }
    if config.type_vocab_size > 0:
        params["token_type"] = {"embedding": get("embeddings.token_type_embeddings.weight")}
    if config.embedding_dim is not None:
        params["embed_projection"] = dense("encoder.embedding_hidden_mapping_in")
    if config.share_layers:
        params["layer"] = layer(0)
    else:
        params.update({f"layer_{i}": layer(i) for i in range(config.num_layers)})
    if config.use_pooler:
        name = POOLER[family]
        # Checkpoints saved without a pooler (add_pooling_layer=False) get an identity-initialised one.
        params["pooler"] = dense(name) if f"{name}.weight" in w else {
            "kernel": np.eye(m, dtype=np.float32), "bias": np.zeros(m, np.float32)}
    return params


# Task heads: flaxtrain param name -> (Hugging Face name, kind) per task and family.
_BERT_MLM = {"transform": ("cls.predictions.transform.dense", "dense"),
             "transform_norm": ("cls.predictions.transform.LayerNorm", "norm"), "output_bias": ("cls.predictions.bias", "vector")}
HEAD_NAMES: dict[str, dict[str, dict[str, tuple[str, str]]]] = {
    "sequence": {
        "bert": {"classifier": ("classifier", "dense")},
        "albert": {"classifier": ("classifier", "dense")},
        "roberta": {"dense": ("classifier.dense", "dense"), "out": ("classifier.out_proj", "dense")},
        "xlm-roberta": {"dense": ("classifier.dense", "dense"), "out": ("classifier.out_proj", "dense")},
        "distilbert": {"pre_classifier": ("pre_classifier", "dense"), "classifier": ("classifier", "dense")},
    },
    "token": {family: {"classifier": ("classifier", "dense")} for family in LAYER_NAMES},
    "span": {family: {"qa_outputs": ("qa_outputs", "dense")} for family in LAYER_NAMES},
    "mlm": {
        "bert": _BERT_MLM,
        "roberta": {"transform": ("lm_head.dense", "dense"), "transform_norm": ("lm_head.layer_norm", "norm"),
                    "output_bias": ("lm_head.bias", "vector")},
        "distilbert": {"transform": ("vocab_transform", "dense"), "transform_norm": ("vocab_layer_norm", "norm"),
                       "output_bias": ("vocab_projector.bias", "vector")},
        "albert": {"transform": ("predictions.dense", "dense"), "transform_norm": ("predictions.LayerNorm", "norm"),
                   "output_bias": ("predictions.bias", "vector")},
    },
}
HEAD_NAMES["mlm"]["xlm-roberta"] = HEAD_NAMES["mlm"]["roberta"]


def head_params_from_hf(weights: Mapping[str, np.ndarray], family: str, task: str) -> dict[str, Any] | None:
    """A task head's params from a fine-tuned checkpoint, or None when it holds no such head."""
    names = HEAD_NAMES[task][family]
    if not all(any(k.startswith(hf) for k in weights) for hf, _ in names.values()):
        return None
    out: dict[str, Any] = {}
    for ours, (hf, kind) in names.items():
        if kind == "dense":
            out[ours] = {"kernel": np.asarray(weights[f"{hf}.weight"], np.float32).T,
                         "bias": np.asarray(weights[f"{hf}.bias"], np.float32)}
        elif kind == "norm":
            out[ours] = {"scale": np.asarray(weights[f"{hf}.weight"], np.float32),
                         "bias": np.asarray(weights[f"{hf}.bias"], np.float32)}
        else:
            out[ours] = np.asarray(weights[hf], np.float32)
    return out
