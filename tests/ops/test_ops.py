import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import ops


def test_softmax_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 1, 0], np.int32)
    expected = -np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))[np.arange(5), labels]
    got = ops.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got.dtype == jnp.float32


def test_softmax_cross_entropy_is_float32_for_bf16_logits():
    logits = jnp.ones((3, 7), jnp.bfloat16)
    assert ops.softmax_cross_entropy(logits, jnp.zeros(3, jnp.int32)).dtype == jnp.float32


def test_classification_sums_ignore_zero_weight_rows():
    logits = jnp.array([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]])
    labels = jnp.array([0, 0, 1], jnp.int32)
    full = ops.classification_sums(logits[:2], labels[:2], jnp.ones(2))
    padded = ops.classification_sums(logits, labels, jnp.array([1.0, 1.0, 0.0]))
    for key in full:
        np.testing.assert_allclose(full[key], padded[key], rtol=1e-6)
    assert float(padded["count"]) == 2.0 and float(padded["correct"]) == 1.0


def test_masked_pooling_ignores_masked_positions():
    x = jax.random.normal(jax.random.key(0), (3, 7, 5))
    mask = jnp.array([[1, 1, 1, 0, 0, 0, 0], [1] * 7, [0] * 7], bool)
    mx = ops.masked_max_over_time(x, mask)
    mean = ops.masked_mean_over_time(x, mask)
    np.testing.assert_allclose(mx[0], x[0, :3].max(0), rtol=1e-6)
    np.testing.assert_allclose(mean[0], x[0, :3].mean(0), rtol=1e-6)
    np.testing.assert_allclose(mx[1], x[1].max(0), rtol=1e-6)
    np.testing.assert_array_equal(mx[2], 0.0)
    np.testing.assert_array_equal(mean[2], 0.0)
