import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxtrain import ops
from flaxtrain.layers import MultiHeadAttention

B, T, S, M, H, D = 3, 5, 7, 11, 2, 3


def _layer(**kwargs):
    return MultiHeadAttention(num_heads=H, head_dim=D, **kwargs)


def test_param_and_output_shapes_for_self_and_cross_attention():
    x = jax.random.normal(jax.random.key(0), (B, T, M))
    memory = jax.random.normal(jax.random.key(1), (B, S, M))
    layer = _layer()
    variables = layer.init(jax.random.key(2), x, memory)
    params = jax.tree.map(jnp.shape, variables["params"])
    assert params["query"]["kernel"].value == (M, H, D)
    assert params["out"]["kernel"].value == (H, D, M)
    assert layer.apply(variables, x, memory).shape == (B, T, M)
    assert layer.apply(variables, x).shape == (B, T, M)


@pytest.mark.parametrize("implementation", ["einsum", "xla"])
def test_padding_leaves_unpadded_outputs_alone(implementation):
    x = jax.random.normal(jax.random.key(0), (B, T, M))
    layer = _layer(implementation=implementation)
    variables = layer.init(jax.random.key(1), x)
    valid = jnp.arange(T)[None, :] < jnp.array([5, 3, 1])[:, None]
    out = layer.apply(variables, x, mask=ops.make_key_padding_mask(valid, T))
    garbage = jnp.where(valid[:, :, None], x, 100.0)
    again = layer.apply(variables, garbage, mask=ops.make_key_padding_mask(valid, T))
    np.testing.assert_allclose(jnp.where(valid[:, :, None], out, 0), jnp.where(valid[:, :, None], again, 0), atol=1e-5)


def test_cached_decoding_equals_the_full_causal_forward():
    x = jax.random.normal(jax.random.key(0), (B, T, M))
    layer = _layer()
    params = layer.init(jax.random.key(1), x)["params"]
    full = layer.apply({"params": params}, x, mask=ops.make_causal_mask(T))
    cache = layer.init(jax.random.key(1), x, decode=True)["cache"]
    steps = []
    for position in range(T):
        out, updated = layer.apply({"params": params, "cache": cache}, x[:, position:position + 1], decode=True,
                                   mutable=["cache"])
        cache = updated["cache"]
        steps.append(out)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)
    assert int(cache["index"]) == T


def test_jit_equals_eager():
    x = jax.random.normal(jax.random.key(0), (B, T, M))
    layer = _layer(scale=1.0, use_bias=False)
    variables = layer.init(jax.random.key(1), x)
    assert "bias" not in variables["params"]["query"]
    np.testing.assert_allclose(jax.jit(layer.apply)(variables, x), layer.apply(variables, x), atol=1e-6)
