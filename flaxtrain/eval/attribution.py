"""Integrated gradients (Sundararajan et al. 2017) of a network's output toward its token embeddings.

The path runs from a baseline of zero token embeddings to the text's own: every embedding lookup by
token id (modules named in TOKEN_EMBEDDINGS: a word table, a TextCNN or fastText table, fastText's hashed
n-grams) is scaled by alpha on its way out, through `nn.intercept_methods`, so position and segment
embeddings, masks and everything else stay as they are. The gradient at each alpha comes from a zero
perturbation added to the same outputs; the alphas are Gauss-Legendre nodes on [0, 1] (as Captum's
default), vmapped into one batch and jitted, so an explanation is one compiled call on the device.

Attribution of position p = sum over the embedding width of emb[p] x the weighted mean gradient at p;
a hashed n-gram's share goes in equal parts to the n tokens it spans. Completeness (section 3, axiom
"completeness"): the attributions sum to f(text) - f(baseline), up to the quadrature error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain._xla_flags import compiler_options
from flaxtrain.errors import FlaxtrainError
from flaxtrain.layers import Embed

# Module names of embeddings looked up by token ids (encoder 'word', TextCNN/fastText/tagger 'embed',
# fastText 'ngrams'), and how many tokens one looked-up row spans (n-grams: set by the call order).
TOKEN_EMBEDDINGS = ("word", "embed", "ngrams")


def _is_token_lookup(context: Any, args: Any, input_ids: Any) -> bool:
    """flaxtrain's token tables by name; any other `nn.Embed` (a custom module's) when it looks up the input ids."""
    if context.method_name != "__call__":
        return False
    if isinstance(context.module, Embed):
        return context.module.name in TOKEN_EMBEDDINGS
    return isinstance(context.module, nn.Embed) and bool(args) and args[0] is input_ids


Score = Callable[[Any, jax.Array], jax.Array]  # (network outputs, target) -> the scalar explained


def _forward(apply_fn: Callable[..., Any], params: Any, inputs: dict[str, jax.Array], score: Score, target: jax.Array,
             alpha: jax.Array, deltas: list[jax.Array] | None) -> tuple[jax.Array, list[jax.Array], list[str]]:
    """(score, the token-embedding outputs at alpha 1, their module names) with every token-embedding output
    scaled by alpha and `deltas[i]` added to the i-th."""
    outputs: list[jax.Array] = []
    names: list[str] = []

    def interceptor(next_fun: Callable[..., Any], args: Any, kwargs: Any, context: Any) -> Any:
        out = next_fun(*args, **kwargs)
        if not _is_token_lookup(context, args, inputs.get("input_ids")):
            return out
        i = len(outputs)
        outputs.append(out)
        names.append(context.module.name)
        scaled = alpha.astype(out.dtype) * out
        return scaled if deltas is None else scaled + deltas[i].astype(out.dtype)

    with nn.intercept_methods(interceptor):
        value = score(apply_fn({"params": params}, **inputs, deterministic=True), target)
    return value, outputs, names


def lookup_names(apply_fn: Callable[..., Any], params: Any, inputs: dict[str, jax.Array], score: Score) -> list[str]:
    """The module names of the token-embedding lookups one forward pass makes, in call order."""
    names: list[str] = []

    def run(params: Any) -> list[jax.Array]:
        _, outputs, found = _forward(apply_fn, params, inputs, score, jnp.zeros((), jnp.int32), jnp.ones((), jnp.float32),
                                     None)
        names.extend(found)
        return outputs

    jax.eval_shape(run, params)
    return names


def make_explainer(apply_fn: Callable[..., Any], score: Score, steps: int) -> Callable[..., Any]:
    """A jitted `(params, inputs, target) -> (per-lookup attributions [[t] ...], f(x), f(baseline))` for
    inputs of one row; `score(network outputs, target) -> scalar` is what is explained (a class's
    probability, a value); `target` is an int32 scalar (a class index), traced, so one compile serves all."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = jnp.asarray((nodes + 1) / 2, jnp.float32)  # Gauss-Legendre on [0, 1]
    weights = jnp.asarray(weights / 2, jnp.float32)

    def explain(params: Any, inputs: dict[str, jax.Array], target: jax.Array) -> tuple[list[jax.Array], jax.Array, jax.Array]:
        full, embedded, _ = _forward(apply_fn, params, inputs, score, target, jnp.ones((), jnp.float32), None)
        if not embedded:
            raise FlaxtrainError("this network makes no token-embedding lookup that explain can scale (a flaxtrain Embed "
                                 "or an nn.Embed applied to input_ids): integrated gradients need one")
        baseline, _, _ = _forward(apply_fn, params, inputs, score, target, jnp.zeros((), jnp.float32), None)
        zeros = [jnp.zeros_like(e) for e in embedded]

        def gradient(alpha: jax.Array) -> list[jax.Array]:
            return jax.grad(lambda d: _forward(apply_fn, params, inputs, score, target, alpha, d)[0])(zeros)

        grads = jax.vmap(gradient)(alphas)  # per lookup: [steps, 1, t, m]
        attributions = [jnp.sum(e[0] * jnp.tensordot(weights, g, axes=1)[0], axis=-1) for e, g in zip(embedded, grads)]
        return attributions, full, baseline

    return jax.jit(explain, compiler_options=compiler_options())


def token_attributions(per_lookup: list[np.ndarray], names: list[str]) -> np.ndarray:
    """Attribution per token position: word lookups as they are, the k-th n-gram lookup (n = k + 2,
    fastText's order) split equally over the n tokens ending at each position."""
    total = np.zeros_like(np.asarray(per_lookup[0], np.float64))
    ngram = 0
    for values, name in zip(per_lookup, names):
        values = np.asarray(values, np.float64)
        if name != "ngrams":
            total += values
            continue
        n = ngram + 2
        ngram += 1
        for shift in range(n):  # the n-gram ending at p covers p - n + 1 .. p
            total[: len(total) - shift] += values[shift:] / n
    return total
