import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxtrain.ops.attention import choose_implementation, dot_product_attention
from flaxtrain.ops.masks import (
    combine_masks,
    make_causal_mask,
    make_key_padding_mask,
    make_padding_mask,
)

B, T, S, H, D = 3, 5, 7, 2, 11


def _naive(q, k, v, mask=None, bias=None):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    scores = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + np.asarray(bias, np.float64)
    if mask is not None:
        scores = np.where(np.asarray(mask), scores, -1e30)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", weights, v)


def _inputs(seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(keys[0], (B, T, H, D))
    k = jax.random.normal(keys[1], (B, S, H, D))
    v = jax.random.normal(keys[2], (B, S, H, D))
    bias = jax.random.normal(keys[3], (1, H, T, S))
    return q, k, v, bias


@pytest.mark.parametrize("implementation", ["einsum", "xla", "auto"])
def test_matches_naive_with_mask_and_bias(implementation):
    q, k, v, bias = _inputs()
    key_valid = jnp.arange(S)[None, :] < jnp.array([7, 4, 1])[:, None]
    mask = make_key_padding_mask(key_valid, T)
    got = dot_product_attention(q, k, v, mask=mask, bias=bias, implementation=implementation)
    np.testing.assert_allclose(got, _naive(q, k, v, mask, bias), atol=1e-5)
    assert got.shape == (B, T, H, D)


def test_masked_keys_do_not_influence_outputs():
    q, k, v, _ = _inputs(1)
    key_valid = jnp.arange(S)[None, :] < 4
    mask = make_key_padding_mask(jnp.broadcast_to(key_valid, (B, S)), T)
    out = dot_product_attention(q, k, v, mask=mask)
    changed = dot_product_attention(q, k.at[:, 4:].set(9.0), v.at[:, 4:].set(-9.0), mask=mask)
    np.testing.assert_allclose(out, changed, atol=1e-6)


def test_causal_receptive_field_by_gradients():
    q, k, v, _ = _inputs(2)
    k, v = k[:, :T], v[:, :T]
    mask = make_causal_mask(T)

    def output_at(position, values):
        return dot_product_attention(q, k, values, mask=mask)[:, position].sum()

    for position in range(T):
        grad = jax.grad(output_at, argnums=1)(position, v)
        touched = np.abs(np.asarray(grad)).sum(axis=(0, 2, 3)) > 0
        np.testing.assert_array_equal(touched, np.arange(T) <= position)


def test_mask_helpers():
    assert make_causal_mask(3, offset=2, key_length=5)[0, 0].tolist() == [
        [True, True, True, False, False],
        [True, True, True, True, False],
        [True, True, True, True, True],
    ]
    valid = jnp.array([[True, False]])
    np.testing.assert_array_equal(make_padding_mask(valid, valid)[0, 0], [[True, False], [False, False]])
    assert combine_masks(None, None) is None
    np.testing.assert_array_equal(combine_masks(make_causal_mask(2), make_padding_mask(valid, valid))[0, 0],
                                  [[True, False], [False, False]])


def test_bfloat16_inputs_keep_their_dtype():
    q, k, v, _ = _inputs(3)
    out = dot_product_attention(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), _naive(q, k, v), atol=5e-2)


def _choice(backend="gpu", dtype=jnp.bfloat16, head_dim=64, query_length=128, key_length=128, requested="auto"):
    return choose_implementation(requested, backend=backend, dtype=dtype, head_dim=head_dim, query_length=query_length,
                                 key_length=key_length)


def test_auto_takes_cudnn_flash_attention_only_where_its_constraints_hold():
    assert _choice() == ("cudnn", "bfloat16 on a GPU, head width 64")
    assert _choice(dtype=jnp.float16, head_dim=128)[0] == "cudnn"
    assert _choice(backend="cpu") == ("xla", "the backend is cpu")
    assert _choice(backend="tpu")[0] == "xla"
    assert _choice(dtype=jnp.float32) == ("xla", "float32 inputs (cuDNN fuses bf16 and fp16)")
    assert _choice(head_dim=160)[1] == "head width 160 (cuDNN: a multiple of 8 up to 128)"
    assert _choice(head_dim=36)[0] == "xla"
    assert _choice(query_length=1, key_length=40)[1] == "1 queries over 40 keys (cross-attention or cached decoding)"
    assert _choice(backend="cpu", requested="einsum") == ("einsum", "requested")  # forced: taken as given
    assert _choice(backend="cpu", requested="cudnn") == ("cudnn", "requested")
    with pytest.raises(ValueError, match="unknown attention implementation 'flash': use one of auto, einsum, xla, cudnn"):
        _choice(requested="flash")


def test_the_choice_is_logged_once(caplog):
    from flaxtrain.ops import attention

    attention._logged.clear()
    q, k, v, _ = _inputs()
    with caplog.at_level("INFO", logger="flaxtrain"):
        for _ in range(3):
            jax.jit(lambda q, k, v: dot_product_attention(q, k, v, implementation="auto"))(q, k, v)
            dot_product_attention(q[:1], k[:1], v[:1], implementation="auto")
    assert [r.getMessage() for r in caplog.records] == [
        "attention 'auto': xla (the backend is cpu; float32 inputs (cuDNN fuses bf16 and fp16); head width 11 (cuDNN: a "
        "multiple of 8 up to 128); 5 queries over 7 keys (cross-attention or cached decoding))"]
