"""Hand-written gradients of ops.gelu and ops.layer_norm equal autodiff of the textbook formulas."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxtrain import ops
from flaxtrain.layers.norm import LayerNorm


def test_gelu_values_and_gradient_match_jax_exact_gelu():
    x = jnp.linspace(-6.0, 6.0, 241)
    reference = lambda v: jax.nn.gelu(v, approximate=False)
    np.testing.assert_allclose(ops.gelu(x), reference(x), rtol=1e-6, atol=1e-7)
    grad = jax.vmap(jax.grad(ops.gelu))(x)
    np.testing.assert_allclose(grad, jax.vmap(jax.grad(reference))(x), rtol=1e-5, atol=1e-6)


def _reference_layer_norm(x, scale, bias, epsilon):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + epsilon) * scale[None, None] + bias[None, None]


@pytest.mark.parametrize("epsilon", [1e-12, 1e-5])
def test_layer_norm_values_and_gradients_match_autodiff(epsilon):
    kx, ks, kb, kg = jax.random.split(jax.random.key(0), 4)
    x = 3 * jax.random.normal(kx, (2, 5, 7)) + 1
    scale, bias = jax.random.normal(ks, (7,)), jax.random.normal(kb, (7,))
    cotangent = jax.random.normal(kg, (2, 5, 7))
    np.testing.assert_allclose(ops.layer_norm(x, scale, bias, epsilon), _reference_layer_norm(x, scale, bias, epsilon),
                               rtol=1e-5, atol=1e-5)
    ours = jax.vjp(lambda *a: ops.layer_norm(*a, epsilon), x, scale, bias)[1](cotangent)
    ref = jax.vjp(lambda *a: _reference_layer_norm(*a, epsilon), x, scale, bias)[1](cotangent)
    for got, want in zip(ours, ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_layer_norm_module_equals_flax_layer_norm():
    x = jax.random.normal(jax.random.key(1), (3, 4, 6))
    ours = LayerNorm(1e-6)
    params = nn.meta.unbox(ours.init(jax.random.key(0), x))
    theirs = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False)
    assert jax.tree.structure(params) == jax.tree.structure(theirs.init(jax.random.key(0), x))
    np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5, atol=1e-5)


def test_layer_norm_keeps_bfloat16_inputs_in_bfloat16():
    x = jax.random.normal(jax.random.key(2), (2, 8)).astype(jnp.bfloat16)
    y = ops.layer_norm(x, jnp.ones(8), jnp.zeros(8), 1e-6)
    assert y.dtype == jnp.bfloat16
    assert jax.grad(lambda v: ops.layer_norm(v, jnp.ones(8), jnp.zeros(8), 1e-6).astype(jnp.float32).sum())(x).dtype == jnp.bfloat16


def test_materialised_returns_its_input_bit_for_bit():
    rng = np.random.default_rng(0)
    # normal numbers (XLA on CPU flushes subnormals in any arithmetic)
    values = np.concatenate([rng.standard_normal(60) * 10.0 ** rng.integers(-30, 30, 60), [0.0, 1.0, 2e-38, 3e38]])
    for dtype in (jnp.float32, jnp.bfloat16):
        x = jnp.asarray(values.reshape(4, 16), dtype)
        out = jax.jit(ops.normalization.materialised)(x)
        assert out.dtype == x.dtype and out.shape == x.shape
        np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(x, np.float32))
    odd = jnp.arange(15.0).reshape(3, 5)
    assert ops.normalization.materialised(odd) is odd


def _post_ln_stack_grad():
    """The gradient of a stack of post-LN residual blocks (dense + LayerNorm), as BERT's encoder chains them."""
    def loss(ws, x):
        for w in ws:
            x = ops.layer_norm(x + jnp.tanh(x @ w), jnp.ones(8), jnp.zeros(8), 1e-12)
        return jnp.sum(x * x)

    return jax.jit(jax.grad(loss))


def test_each_layer_norm_gradient_is_computed_once_on_cpu(monkeypatch):
    """The residual gradient leaves every LayerNorm backward through its own dot (see `materialised`), so XLA
    cannot copy the chain of the layers above into each consumer; and the gradient is what it is without it."""
    ws = [jax.random.normal(jax.random.key(i), (8, 8)) / 3 for i in range(4)]
    x = jax.random.normal(jax.random.key(9), (6, 8))
    grad = _post_ln_stack_grad()
    hlo = grad.lower(ws, x).compile().as_text()
    assert hlo.count("f32[24,2]{1,0} dot(") == 4, "each LayerNorm's dx should pass through one [n, 2] x [2, 2] dot"
    with_cut = grad(ws, x)
    monkeypatch.setattr(ops.normalization, "materialised", lambda v: v)
    without = _post_ln_stack_grad()(ws, x)
    for got, want in zip(with_cut, without):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
