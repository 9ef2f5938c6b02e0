"""T5, BART and Marian checkpoints (Hugging Face names) <-> flaxtrain Seq2Seq params, both directions.

PyTorch `Linear` stores [out, in]; flaxtrain kernels are [in, out], attention projections split into
heads: query/key/value [m, h, d], out [h, d, m].
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flaxtrain.errors import FlaxtrainError
from flaxtrain.hub.encoders import _get, _set
from flaxtrain.hub.layout import check_tensor
from flaxtrain.models.decoder import Seq2SeqConfig, stack_blocks, unstack_blocks
from flaxtrain.ops.positions import sinusoidal_table

FAMILIES = ("t5", "bart", "marian")
# Hugging Face activation names -> layers.mlp.ACTIVATIONS
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new", "relu": "relu",
                "swish": "silu", "silu": "silu"}
# The Hugging Face class of each family's conditional-generation model.
CLASSES = {"t5": "T5ForConditionalGeneration", "bart": "BartForConditionalGeneration", "marian": "MarianMTModel"}


def _activation(name: str) -> str:
    if name not in _ACTIVATIONS:
        raise FlaxtrainError(f"activation {name!r} is not supported (supported: {', '.join(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) else value


def config_from_hf(hf: Mapping[str, Any], weights: Mapping[str, np.ndarray] | None = None) -> Seq2SeqConfig:
    """Seq2SeqConfig of a T5, BART or Marian `config.json` dict (and, for T5, of its weights' names).

    T5 decides two things apart, as `transformers` does: the LM head is tied to the shared
    embeddings unless the weights hold an `lm_head.weight` of their own, and the decoder output is
    scaled by d_model ** -0.5 when `scale_decoder_outputs` says so (older configs: unless
    `tie_word_embeddings` is false, the T5 v1.1 convention).
    """
    family = hf.get("model_type")
    if family == "t5":
        proj = hf.get("feed_forward_proj", "relu")
        parts = proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise FlaxtrainError(f"feed_forward_proj {proj!r} is not supported: use 'relu', 'gated-gelu' or 'gated-<act>'")
        activation = "gelu_new" if proj == "gated-gelu" else _activation(parts[-1])
        scale = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
        if weights is None:
            tied = hf.get("tie_word_embeddings", True) is not False
        else:
            head = weights.get("lm_head.weight")
            tied = head is None or np.array_equal(head, weights.get("shared.weight"))
        pad = hf.get("pad_token_id", 0)
        return Seq2SeqConfig(
            vocab_size=hf["vocab_size"], family="t5", hidden_size=hf["d_model"], num_layers=hf["num_layers"],
            num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"], num_heads=hf["num_heads"],
            head_dim=hf["d_kv"], mlp_dim=hf["d_ff"], activation=activation, gated_mlp=len(parts) == 2, pre_norm=True,
            use_bias=False, positions="relative", relative_buckets=hf.get("relative_attention_num_buckets", 32),
            relative_max_distance=hf.get("relative_attention_max_distance", 128), attention_scale=1.0,
            tie_embeddings=bool(tied), scale_logits=bool(scale), layer_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
            dropout_rate=hf.get("dropout_rate", 0.1), init_std=hf.get("initializer_factor", 1.0) * 0.05, pad_id=pad,
            eos_id=_first(hf.get("eos_token_id", 1)), decoder_start_id=hf.get("decoder_start_token_id", pad),
        )
    if family not in ("bart", "marian"):
        raise FlaxtrainError(f"model_type {family!r} is not an encoder-decoder flaxtrain reads (supported: {', '.join(FAMILIES)})")
    if hf.get("normalize_before") or hf.get("add_final_layer_norm"):
        raise FlaxtrainError("pre-LN BART variants (mBART: normalize_before) are not supported")
    for enc, dec in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if hf.get(enc) != hf.get(dec, hf.get(enc)):
            raise FlaxtrainError(f"{enc} ({hf.get(enc)}) differs from {dec} ({hf.get(dec)}): not supported")
    if family == "marian":
        if not hf.get("share_encoder_decoder_embeddings", True) or hf.get("decoder_vocab_size", hf["vocab_size"]) != hf["vocab_size"]:
            raise FlaxtrainError("Marian with separate source and target vocabularies is not supported: "
                                 "share_encoder_decoder_embeddings must be true")
    m, heads = hf["d_model"], hf["encoder_attention_heads"]
    pad = hf.get("pad_token_id", 1)
    return Seq2SeqConfig(
        vocab_size=hf["vocab_size"], family=family, hidden_size=m, num_layers=hf["encoder_layers"],
        num_decoder_layers=hf["decoder_layers"], num_heads=heads, head_dim=m // heads, mlp_dim=hf["encoder_ffn_dim"],
        activation=_activation(hf.get("activation_function", "gelu")), pre_norm=False, use_bias=True,
        positions="learned" if family == "bart" else "sinusoidal", max_positions=hf.get("max_position_embeddings", 1024),
        position_offset=2 if family == "bart" else 0, embed_norm=family == "bart",
        scale_embedding=bool(hf.get("scale_embedding", False)), tie_embeddings=True, final_logits_bias=True,
        layer_norm_eps=1e-5, dropout_rate=hf.get("dropout", 0.1), init_std=hf.get("init_std", 0.02), pad_id=pad,
        eos_id=_first(hf.get("eos_token_id", 2)), decoder_start_id=hf.get("decoder_start_token_id", pad),
        forced_bos_id=hf.get("forced_bos_token_id"), forced_eos_id=_first(hf.get("forced_eos_token_id")),
    )


def config_to_hf(config: Seq2SeqConfig) -> dict[str, Any]:
    """A Hugging Face `config.json` dict for a T5, BART or Marian Seq2SeqConfig (inverse of config_from_hf)."""
    c = config
    if c.family == "t5":
        act = {"gelu_new": "gelu", "relu": "relu", "silu": "silu", "gelu": "gelu"}[c.activation]
        if c.gated_mlp and c.activation == "gelu":
            raise FlaxtrainError("T5 checkpoints have no gated exact-GELU: use activation 'gelu_new'")
        return {"model_type": "t5", "architectures": [CLASSES["t5"]], "vocab_size": c.vocab_size, "d_model": c.hidden_size,
                "d_kv": c.head_dim, "d_ff": c.mlp_dim, "num_layers": c.num_layers, "num_decoder_layers": c.num_decoder_layers,
                "num_heads": c.num_heads, "relative_attention_num_buckets": c.relative_buckets,
                "relative_attention_max_distance": c.relative_max_distance, "dropout_rate": c.dropout_rate,
                "layer_norm_epsilon": c.layer_norm_eps, "feed_forward_proj": ("gated-" if c.gated_mlp else "") + act,
                "tie_word_embeddings": c.tie_embeddings, "scale_decoder_outputs": c.scale_logits, "pad_token_id": c.pad_id, "eos_token_id": c.eos_id,
                "decoder_start_token_id": c.decoder_start_id, "is_encoder_decoder": True}
    if c.family not in ("bart", "marian"):
        raise FlaxtrainError(f"a {c.family} model has no Hugging Face checkpoint layout: save it with predictor.save")
    act = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu", "silu": "swish"}[c.activation]
    hf = {"model_type": c.family, "architectures": [CLASSES[c.family]], "vocab_size": c.vocab_size, "d_model": c.hidden_size,
          "encoder_layers": c.num_layers, "decoder_layers": c.num_decoder_layers, "encoder_attention_heads": c.num_heads,
          "decoder_attention_heads": c.num_heads, "encoder_ffn_dim": c.mlp_dim, "decoder_ffn_dim": c.mlp_dim,
          "activation_function": act, "max_position_embeddings": c.max_positions, "scale_embedding": c.scale_embedding,
          "dropout": c.dropout_rate, "attention_dropout": 0.0, "activation_dropout": 0.0, "init_std": c.init_std,
          "pad_token_id": c.pad_id, "eos_token_id": c.eos_id, "decoder_start_token_id": c.decoder_start_id,
          "forced_bos_token_id": c.forced_bos_id, "forced_eos_token_id": c.forced_eos_id, "is_encoder_decoder": True,
          "tie_word_embeddings": True}
    if c.family == "marian":
        hf.update(decoder_vocab_size=c.vocab_size, share_encoder_decoder_embeddings=True)
    return hf


def _entries(c: Seq2SeqConfig) -> list[tuple[str, tuple[str, ...], str]]:
    """(Hugging Face name, flaxtrain param path, kind) of every tensor; kinds name the layout change."""
    out: list[tuple[str, tuple[str, ...], str]] = []

    def attention(hf: str, ours: tuple[str, ...], names: tuple[str, str, str, str], bias: bool) -> None:
        for part, name in zip(("query", "key", "value", "out"), names):
            out.append((f"{hf}.{name}.weight", (*ours, part, "kernel"), "heads_out" if part == "out" else "heads_in"))
            if bias:
                out.append((f"{hf}.{name}.bias", (*ours, part, "bias"), "copy" if part == "out" else "heads_bias"))

    if c.family == "t5":
        out.append(("shared.weight", ("shared",), "copy"))
        for stack, layers in (("encoder", c.num_layers), ("decoder", c.num_decoder_layers)):
            out.append((f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                        (stack, "relative_bias", "embedding"), "copy"))
            for i in range(layers):
                p, ours = f"{stack}.block.{i}.layer", (stack, f"layer_{i}")
                attention(f"{p}.0.SelfAttention", (*ours, "self_attention"), ("q", "k", "v", "o"), False)
                out.append((f"{p}.0.layer_norm.weight", (*ours, "self_attention_norm", "scale"), "copy"))
                ff = 1
                if stack == "decoder":
                    attention(f"{p}.1.EncDecAttention", (*ours, "cross_attention"), ("q", "k", "v", "o"), False)
                    out.append((f"{p}.1.layer_norm.weight", (*ours, "cross_attention_norm", "scale"), "copy"))
                    ff = 2
                wi = (("wi_0", "hidden"), ("wi_1", "linear")) if c.gated_mlp else (("wi", "hidden"),)
                for hf, ours_name in (*wi, ("wo", "out")):
                    out.append((f"{p}.{ff}.DenseReluDense.{hf}.weight", (*ours, "mlp", ours_name, "kernel"), "linear"))
                out.append((f"{p}.{ff}.layer_norm.weight", (*ours, "mlp_norm", "scale"), "copy"))
            out.append((f"{stack}.final_layer_norm.weight", (stack, "final_norm", "scale"), "copy"))
        if not c.tie_embeddings:
            out.append(("lm_head.weight", ("lm_head", "kernel"), "linear"))
        return out
    out.append(("model.shared.weight", ("shared",), "copy"))
    for stack, layers in (("encoder", c.num_layers), ("decoder", c.num_decoder_layers)):
        p0 = f"model.{stack}"
        if c.family == "bart":
            out.append((f"{p0}.embed_positions.weight", (stack, "position", "embedding"), "copy"))
            out += [(f"{p0}.layernorm_embedding.weight", (stack, "embed_norm", "scale"), "copy"),
                    (f"{p0}.layernorm_embedding.bias", (stack, "embed_norm", "bias"), "copy")]
        for i in range(layers):
            p, ours = f"{p0}.layers.{i}", (stack, f"layer_{i}")
            blocks = [("self_attn", "self_attention"), ("encoder_attn", "cross_attention")][: 2 if stack == "decoder" else 1]
            for hf, name in blocks:
                attention(f"{p}.{hf}", (*ours, name), ("q_proj", "k_proj", "v_proj", "out_proj"), True)
                out += [(f"{p}.{hf}_layer_norm.weight", (*ours, f"{name}_norm", "scale"), "copy"),
                        (f"{p}.{hf}_layer_norm.bias", (*ours, f"{name}_norm", "bias"), "copy")]
            for hf, name in (("fc1", "hidden"), ("fc2", "out")):
                out += [(f"{p}.{hf}.weight", (*ours, "mlp", name, "kernel"), "linear"),
                        (f"{p}.{hf}.bias", (*ours, "mlp", name, "bias"), "copy")]
            out += [(f"{p}.final_layer_norm.weight", (*ours, "mlp_norm", "scale"), "copy"),
                    (f"{p}.final_layer_norm.bias", (*ours, "mlp_norm", "bias"), "copy")]
    out.append(("final_logits_bias", ("final_logits_bias",), "row"))
    return out


def _to_ours(array: np.ndarray, kind: str, c: Seq2SeqConfig) -> np.ndarray:
    h, d, m = c.num_heads, c.head_dim, c.hidden_size
    a = np.asarray(array, np.float32)
    return {"copy": lambda: a, "linear": lambda: a.T, "heads_in": lambda: a.T.reshape(m, h, d),
            "heads_bias": lambda: a.reshape(h, d), "heads_out": lambda: a.T.reshape(h, d, m),
            "row": lambda: a.reshape(-1)}[kind]()


def _to_hf(array: np.ndarray, kind: str, c: Seq2SeqConfig) -> np.ndarray:
    h, d, m = c.num_heads, c.head_dim, c.hidden_size
    a = np.asarray(array, np.float32)
    out = {"copy": lambda: a, "linear": lambda: a.T, "heads_in": lambda: a.reshape(m, h * d).T,
           "heads_bias": lambda: a.reshape(h * d), "heads_out": lambda: a.reshape(h * d, m).T,
           "row": lambda: a.reshape(1, -1)}[kind]()
    return np.ascontiguousarray(out)


def params_from_hf(weights: Mapping[str, np.ndarray], config: Seq2SeqConfig, expected: Any = None) -> dict[str, Any]:
    """Seq2Seq params from a T5 / BART / Marian state dict; with `expected` (the params' abstract
    shapes) each tensor's shape is checked before conversion. Under `scan_layers` the blocks come back stacked."""
    if config.scan_layers and expected is not None:
        expected = unstack_blocks(expected, config)
    params: dict[str, Any] = {}
    for hf, path, kind in _entries(config):
        if hf not in weights:
            if kind == "row":  # saved without the (zero-initialised) final logits bias
                _set(params, path, np.zeros(config.vocab_size, np.float32))
                continue
            raise FlaxtrainError(f"checkpoint lacks {hf}: it does not match its config.json ({config.family})")
        if expected is not None:
            check_tensor(hf, weights[hf], kind, _get(expected, path).shape)
        _set(params, path, _to_ours(weights[hf], kind, config))
    return stack_blocks(params, config) if config.scan_layers else params


def params_to_hf(params: Mapping[str, Any], config: Seq2SeqConfig) -> dict[str, np.ndarray]:
    """The family's state dict (as its conditional-generation class names it) of Seq2Seq params."""
    if config.scan_layers:  # checkpoints name each block
        params = unstack_blocks(jax.device_get(dict(params)), config)
    out = {hf: _to_hf(np.asarray(_get(params, path)), kind, config) for hf, path, kind in _entries(config)}
    shared = out["shared.weight" if config.family == "t5" else "model.shared.weight"]
    for stack in ("encoder", "decoder"):  # the tied copies transformers also writes
        out[f"{stack}.embed_tokens.weight" if config.family == "t5" else f"model.{stack}.embed_tokens.weight"] = shared
    if config.family == "marian":  # the fixed sinusoids, as MarianSinusoidalPositionalEmbedding holds them
        table = sinusoidal_table(config.max_positions, config.hidden_size)
        out["model.encoder.embed_positions.weight"] = out["model.decoder.embed_positions.weight"] = table
    if config.tie_embeddings:
        out["lm_head.weight"] = shared
    return out


GENERATION_KEYS = ("decoder_start_token_id", "eos_token_id", "pad_token_id", "bos_token_id", "forced_bos_token_id",
                   "forced_eos_token_id", "num_beams", "max_length", "max_new_tokens", "min_length", "length_penalty",
                   "early_stopping", "no_repeat_ngram_size", "bad_words_ids", "num_return_sequences")


def generation_from_hf(hf_config: Mapping[str, Any], generation: Mapping[str, Any] | None) -> dict[str, Any]:
    """The decoding settings a checkpoint asks for: generation_config.json over config.json's own keys."""
    merged = {k: hf_config[k] for k in GENERATION_KEYS if hf_config.get(k) is not None}
    merged.update({k: v for k, v in (generation or {}).items() if k in GENERATION_KEYS and v is not None})
    return merged


def read_generation(path: Any, hf: Mapping[str, Any]) -> dict[str, Any]:
    """The decoding settings of a checkpoint folder: its generation_config.json over config.json's keys."""
    generation_file = Path(path) / "generation_config.json"
    generation = None
    if generation_file.is_file():
        try:
            generation = json.loads(generation_file.read_text())
        except json.JSONDecodeError as err:
            raise FlaxtrainError(f"{generation_file} is not valid JSON ({err})") from None
    return generation_from_hf(hf, generation)


def bert2bert_config(encoder: Any, *, pad_id: int, eos_id: int, decoder_start_id: int,
                     num_decoder_layers: int | None = None) -> Seq2SeqConfig:
    """A BERT-layout encoder-decoder sized as a pretrained BERT-family EncoderConfig (Rothe et al.
    2020): post-LN blocks, learned positions, embedding LayerNorm and BERT's LM head on the decoder."""
    if encoder.embedding_dim is not None or encoder.share_layers or encoder.roberta_positions:
        raise FlaxtrainError(f"bert2bert warm-starts from BERT-layout encoders (bert, distilbert, MiniLM), not {encoder.family}")
    return Seq2SeqConfig(
        vocab_size=encoder.vocab_size, family="bert2bert", hidden_size=encoder.hidden_size, num_layers=encoder.num_layers,
        num_decoder_layers=num_decoder_layers or encoder.num_layers, num_heads=encoder.num_heads, head_dim=encoder.head_dim,
        mlp_dim=encoder.mlp_dim, activation=encoder.activation, pre_norm=False, use_bias=True, positions="learned",
        max_positions=encoder.max_positions, embed_norm=True, tie_embeddings=True, final_logits_bias=True,
        lm_transform=True, layer_norm_eps=encoder.layer_norm_eps, dropout_rate=encoder.dropout_rate, pad_id=pad_id,
        eos_id=eos_id, decoder_start_id=decoder_start_id, attention="einsum",
    )


def bert2bert_params(fresh: Mapping[str, Any], encoder: Mapping[str, Any], config: Seq2SeqConfig,
                     mlm_head: Mapping[str, Any] | None = None, *, cross_from_self: bool = False) -> dict[str, Any]:
    """Freshly initialised bert2bert params with the pretrained encoder's weights in both stacks.

    The encoder stack is the pretrained encoder; each decoder block i starts from encoder block i
    (self-attention, feed-forward, norms), its cross-attention stays new; token type 0's embedding is
    folded into the position table. A masked-LM head, when the checkpoint has one, starts the output
    transform and bias. `cross_from_self=True` starts each cross-attention from its block's
    self-attention too (queries and keys already compare like tokens), instead of at random.
    """
    params = jax.tree.map(np.asarray, dict(fresh))
    positions = np.asarray(encoder["position"]["embedding"], np.float32)
    if "token_type" in encoder:
        positions = positions + np.asarray(encoder["token_type"]["embedding"], np.float32)[0]
    params["shared"] = np.asarray(encoder["word"]["embedding"], np.float32)
    for stack, layers in (("encoder", config.num_layers), ("decoder", config.num_decoder_layers)):
        params[stack] = dict(params[stack])
        params[stack]["position"] = {"embedding": positions}
        params[stack]["embed_norm"] = jax.tree.map(np.asarray, encoder["embed_norm"])
        for i in range(layers):
            source = encoder[f"layer_{min(i, config.num_layers - 1)}"]
            block = dict(params[stack][f"layer_{i}"])
            block["self_attention"] = jax.tree.map(np.asarray, source["attention"])
            block["self_attention_norm"] = jax.tree.map(np.asarray, source["attention_norm"])
            block["mlp"] = jax.tree.map(np.asarray, source["mlp"])
            block["mlp_norm"] = jax.tree.map(np.asarray, source["mlp_norm"])
            if stack == "decoder" and cross_from_self:
                block["cross_attention"] = jax.tree.map(np.asarray, source["attention"])
                block["cross_attention_norm"] = jax.tree.map(np.asarray, source["attention_norm"])
            params[stack][f"layer_{i}"] = block
    if mlm_head is not None:
        params["transform"] = jax.tree.map(np.asarray, mlm_head["transform"])
        params["transform_norm"] = jax.tree.map(np.asarray, mlm_head["transform_norm"])
        params["final_logits_bias"] = np.asarray(mlm_head["output_bias"], np.float32)
    return params
