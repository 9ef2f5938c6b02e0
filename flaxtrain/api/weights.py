"""Weights of new models: fresh initialisation, a pretrained encoder, and a checkpoint's fine-tuned head."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import hub
from flaxtrain._xla_flags import compiler_options
from flaxtrain.errors import FlaxtrainError
from flaxtrain.train import init_params

_PAD_TOKENS = ("[PAD]", "<pad>")


def load_encoder(name_or_path: str, *, task: str | None, maxlen: int) -> tuple[Any, Any, Any, int]:
    """(EncoderConfig, params, tokenizer, pad id) of a pretrained encoder, checking that `maxlen`
    fits its positions (RoBERTa-style positions start after the pad id)."""
    config, params, tokenizer = hub.load_pretrained(name_or_path, task=task)
    limit = config.max_positions - (config.pad_id + 1 if config.roberta_positions else 0)
    if maxlen > limit:
        raise FlaxtrainError(f"maxlen {maxlen} exceeds the {limit} positions {name_or_path!r} was trained with: lower maxlen")
    pad_id = next((tokenizer.token_to_id(t) for t in _PAD_TOKENS if tokenizer.token_to_id(t) is not None), config.pad_id)
    if pad_id != config.pad_id:  # rows are padded with the tokenizer's id: the model masks that one
        config = dataclasses.replace(config, mask_pad_id=pad_id)
    return config, params, tokenizer, pad_id


def with_encoder(fresh: Any, pretrained: Any) -> dict[str, Any]:
    """Freshly initialised head-model params with the pretrained encoder's weights in 'encoder'."""
    params = dict(fresh)
    params["encoder"] = jax.tree.map(lambda new, old: new.astype(old.dtype), pretrained, params["encoder"])
    return params


def with_pretrained_head(fresh: Any, pretrained: dict[str, Any], *, checkpoint: str, head: str, verbose: bool = True) -> dict[str, Any]:
    """`fresh` params with the checkpoint's encoder and, when it has one that fits, its fine-tuned task head.

    A checkpoint saved from a *ForSequenceClassification (or token / QA) model keeps its trained head,
    as `from_pretrained(..., num_labels=n)` does in transformers; otherwise the new head stays and one
    line says why (no such head in the checkpoint, or one with other output sizes).

    Args:
      fresh: initialised params of the whole model ({'encoder': ..., head params}).
      pretrained: `hub.load_pretrained(..., task=...)` params: {'encoder': ..., head params if saved}.
      checkpoint: the checkpoint's name or path (for the message).
      head: what the head is, e.g. 'sequence-classification' (for the message).
    """
    params = with_encoder(fresh, pretrained["encoder"])
    saved = {name: value for name, value in pretrained.items() if name != "encoder"}
    reason = None
    if not saved:
        reason = "it holds none"
    else:
        shapes = lambda tree: {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}  # noqa: E731
        wanted, got = shapes({name: fresh[name] for name in saved}), shapes(saved)
        wrong = [key for key in wanted if got.get(key) != wanted[key]]
        if wrong or got.keys() != wanted.keys():
            key = wrong[0] if wrong else next(iter(got.keys() - wanted.keys()))
            there, here = got.get(key), wanted.get(key)
            reason = (f"its head has {there[-1]} outputs, this model needs {here[-1]}"
                      if there and here and there[:-1] == here[:-1] else
                      f"its head does not fit this model ({key}: {there} there, {here} here)")
    if reason is None:
        params.update(jax.tree.map(lambda new, old: jnp.asarray(new, old.dtype), saved, {n: fresh[n] for n in saved}))
    elif verbose:
        print(f"new {head} head on {checkpoint}: {reason} (the head trains from scratch)")
    return params


def init_model_params(module: Any, seed: int, *, skip: tuple[str, ...] = ()) -> Any:
    """Params of a token-id model initialised from `seed`.

    The top-level parts named in `skip` (say 'encoder', about to be replaced by a checkpoint's) come back as
    `jax.ShapeDtypeStruct`s and are never computed: XLA drops their random draws from the compiled init,
    which then compiles and runs in a fraction of the whole model's time. The other parts are the same
    values as in a full initialisation (each param draws from its own path's key).
    """
    init = _initializer(module)
    rng = jax.random.key(seed)
    shapes = jax.eval_shape(init, rng)
    skipped = {name: shapes[name] for name in skip if name in shapes}
    if not skipped:
        return jax.jit(init, compiler_options=compiler_options())(rng)
    rest = jax.jit(lambda key: {name: value for name, value in init(key).items() if name not in skipped},
                   compiler_options=compiler_options())(rng)
    return {name: skipped[name] if name in skipped else rest[name] for name in shapes}


def param_shapes(module: Any) -> Any:
    """The `jax.ShapeDtypeStruct`s of `init_model_params(module, seed)`, computing nothing."""
    return jax.eval_shape(_initializer(module), jax.random.key(0))


def _initializer(module: Any) -> Any:
    sample = {"input_ids": jnp.zeros((1, 16), jnp.int32)}
    return lambda rng: init_params(module, sample, rng)
