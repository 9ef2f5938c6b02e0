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
from flaxtrain.hub.layout import check_tensor
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
    if sizes["hidden_size"] % sizes["num_heads"]:
        width, heads = ("dim", "n_heads") if family == "distilbert" else ("hidden_size", "num_attention_heads")
        raise FlaxtrainError(f"{width} {sizes['hidden_size']} does not divide into {heads} {sizes['num_heads']} "
                             "in config.json: fix the config")
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


def _encoder_entries(config: EncoderConfig, family: str) -> list[tuple[str, tuple[str, ...], str]]:
    """(Hugging Face name, flaxtrain param path, kind) for every encoder tensor; kinds name the layout change."""
    entries = [
        ("embeddings.word_embeddings.weight", ("word", "embedding"), "copy"),
        ("embeddings.position_embeddings.weight", ("position", "embedding"), "copy"),
        ("embeddings.LayerNorm.weight", ("embed_norm", "scale"), "copy"),
        ("embeddings.LayerNorm.bias", ("embed_norm", "bias"), "copy"),
    ]
    if config.type_vocab_size > 0:
        entries.append(("embeddings.token_type_embeddings.weight", ("token_type", "embedding"), "copy"))
    if config.embedding_dim is not None:
        entries += [("encoder.embedding_hidden_mapping_in.weight", ("embed_projection", "kernel"), "linear"),
                    ("encoder.embedding_hidden_mapping_in.bias", ("embed_projection", "bias"), "copy")]
    names = LAYER_NAMES[family]
    layers = [("layer", 0)] if config.share_layers else [(f"layer_{i}", i) for i in range(config.num_layers)]
    for ours, i in layers:
        p = names.prefix.format(i=i)
        for part, hf in (("query", names.query), ("key", names.key), ("value", names.value)):
            entries += [(f"{p}{hf}.weight", (ours, "attention", part, "kernel"), "heads_in"),
                        (f"{p}{hf}.bias", (ours, "attention", part, "bias"), "heads_bias")]
        entries += [(f"{p}{names.out}.weight", (ours, "attention", "out", "kernel"), "heads_out"),
                    (f"{p}{names.out}.bias", (ours, "attention", "out", "bias"), "copy")]
        for module, hf in (("attention_norm", names.attention_norm), ("mlp_norm", names.mlp_norm)):
            entries += [(f"{p}{hf}.weight", (ours, module, "scale"), "copy"), (f"{p}{hf}.bias", (ours, module, "bias"), "copy")]
        for part, hf in (("hidden", names.hidden), ("out", names.mlp_out)):
            entries += [(f"{p}{hf}.weight", (ours, "mlp", part, "kernel"), "linear"),
                        (f"{p}{hf}.bias", (ours, "mlp", part, "bias"), "copy")]
    if config.use_pooler:
        entries += [(f"{POOLER[family]}.weight", ("pooler", "kernel"), "linear"), (f"{POOLER[family]}.bias", ("pooler", "bias"), "copy")]
    return entries


def _to_ours(array: np.ndarray, kind: str, config: EncoderConfig) -> np.ndarray:
    h, d, m = config.num_heads, config.head_dim, config.hidden_size
    array = np.asarray(array, np.float32)
    return {"copy": lambda a: a, "linear": lambda a: a.T, "heads_in": lambda a: a.T.reshape(m, h, d),
            "heads_bias": lambda a: a.reshape(h, d), "heads_out": lambda a: a.T.reshape(h, d, m)}[kind](array)


def _to_hf(array: np.ndarray, kind: str, config: EncoderConfig) -> np.ndarray:
    h, d, m = config.num_heads, config.head_dim, config.hidden_size
    array = np.asarray(array, np.float32)
    out = {"copy": lambda a: a, "linear": lambda a: a.T, "heads_in": lambda a: a.reshape(m, h * d).T,
           "heads_bias": lambda a: a.reshape(h * d), "heads_out": lambda a: a.reshape(h * d, m).T}[kind](array)
    return np.ascontiguousarray(out)


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def params_from_hf(weights: Mapping[str, np.ndarray], config: EncoderConfig, family: str,
                   expected: Any = None) -> dict[str, Any]:
    """Encoder params from a family's state dict (numpy arrays named as in its PyTorch base model);
    with `expected` (the params' abstract shapes) each tensor's shape is checked before conversion."""
    w = {}
    for key, value in weights.items():  # task models prefix the encoder's weights with the family name
        for prefix in _MODEL_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        w[key] = value
    params: dict[str, Any] = {}
    for hf, path, kind in _encoder_entries(config, family):
        if hf not in w:
            if path[0] == "pooler":  # saved without a pooler (add_pooling_layer=False): identity start
                m = config.hidden_size
                _set(params, path, np.eye(m, dtype=np.float32) if path[1] == "kernel" else np.zeros(m, np.float32))
                continue
            raise FlaxtrainError(f"checkpoint lacks {hf}: it does not match its config.json ({family})")
        if expected is not None:
            check_tensor(hf, w[hf], kind, _get(expected, path).shape)
        _set(params, path, _to_ours(w[hf], kind, config))
    return params


def params_to_hf(params: Mapping[str, Any], config: EncoderConfig, family: str, prefix: str = "") -> dict[str, np.ndarray]:
    """The family's state dict of encoder params; `prefix` (e.g. 'bert.') as task models name them."""
    return {prefix + hf: _to_hf(np.asarray(_get(params, path)), kind, config)
            for hf, path, kind in _encoder_entries(config, family)}


def config_to_hf(config: EncoderConfig) -> dict[str, Any]:
    """A Hugging Face `config.json` dict for an EncoderConfig (inverse of config_from_hf)."""
    activation = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu"}[config.activation]
    if config.family == "distilbert":
        return {"model_type": "distilbert", "vocab_size": config.vocab_size, "dim": config.hidden_size,
                "n_layers": config.num_layers, "n_heads": config.num_heads, "hidden_dim": config.mlp_dim,
                "max_position_embeddings": config.max_positions, "activation": activation,
                "dropout": config.dropout_rate, "pad_token_id": config.pad_id, "sinusoidal_pos_embds": False}
    hf = {"model_type": config.family, "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
          "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
          "intermediate_size": config.mlp_dim, "max_position_embeddings": config.max_positions,
          "type_vocab_size": config.type_vocab_size, "layer_norm_eps": config.layer_norm_eps, "hidden_act": activation,
          "hidden_dropout_prob": config.dropout_rate, "attention_probs_dropout_prob": config.dropout_rate,
          "pad_token_id": config.pad_id}
    if config.family == "albert":
        hf.update(embedding_size=config.embedding_dim, num_hidden_groups=1, inner_group_num=1)
    return hf


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


# Task model class names and the prefix their encoder weights carry, per family.
CLASS_PREFIX = {"bert": ("Bert", "bert."), "roberta": ("Roberta", "roberta."), "xlm-roberta": ("XLMRoberta", "roberta."),
                "distilbert": ("DistilBert", "distilbert."), "albert": ("Albert", "albert.")}
TASK_CLASSES = {None: "Model", "sequence": "ForSequenceClassification", "token": "ForTokenClassification",
                "span": "ForQuestionAnswering", "mlm": "ForMaskedLM"}


def head_params_to_hf(head: Mapping[str, Any], family: str, task: str) -> dict[str, np.ndarray]:
    """A task head's tensors under its family's Hugging Face names (inverse of head_params_from_hf)."""
    out: dict[str, np.ndarray] = {}
    for ours, (hf, kind) in HEAD_NAMES[task][family].items():
        if kind == "dense":
            out[f"{hf}.weight"] = np.ascontiguousarray(np.asarray(head[ours]["kernel"], np.float32).T)
            out[f"{hf}.bias"] = np.asarray(head[ours]["bias"], np.float32)
        elif kind == "norm":
            out[f"{hf}.weight"] = np.asarray(head[ours]["scale"], np.float32)
            out[f"{hf}.bias"] = np.asarray(head[ours]["bias"], np.float32)
        else:
            out[hf] = np.asarray(head[ours], np.float32)
    return out
