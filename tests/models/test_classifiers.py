import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxtrain import models
from flaxtrain.errors import FlaxtrainError
from flaxtrain.models.fasttext import hash_ngram_ids

CONFIGS = {
    "textcnn": dict(vocab_size=11, num_classes=3, embed_dim=7, num_filters=5, kernel_sizes=(3, 5)),
    "fasttext": dict(vocab_size=11, num_classes=3, embed_dim=7, num_buckets=13, ngram_range=3),
}


def _ids(batch: int, length: int, seed: int = 0) -> jnp.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 11, size=(batch, length)).astype(np.int32)
    for row in range(batch):  # ragged lengths 1..length, zero-padded
        ids[row, int(rng.integers(1, length + 1)):] = 0
    return jnp.asarray(ids)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_output_and_param_shapes(name):
    module = models.build_model(name, CONFIGS[name])
    ids = _ids(5, 11)
    variables = module.init(jax.random.key(0), ids, deterministic=True)
    assert module.apply(variables, ids, deterministic=True).shape == (5, 3)
    params = jax.tree.map(jnp.shape, jax.tree.leaves(variables))
    assert sum(int(np.prod(p)) for p in params) > 0
    table = variables["params"]["embed"]["embedding"].value
    assert table.shape == (11, 7)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_padding_leaves_outputs_alone(name):
    module = models.build_model(name, CONFIGS[name])
    ids = _ids(3, 7, seed=1)
    variables = module.init(jax.random.key(1), ids, deterministic=True)
    longer = jnp.pad(ids, ((0, 0), (0, 4)))  # four more pad columns
    np.testing.assert_allclose(
        module.apply(variables, ids, deterministic=True), module.apply(variables, longer, deterministic=True), atol=1e-5
    )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_jit_equals_eager_and_dropout_needs_rng(name):
    module = models.build_model(name, {**CONFIGS[name], "dropout_rate": 0.5})
    ids = _ids(3, 7, seed=2)
    variables = module.init(jax.random.key(2), ids, deterministic=True)
    eager = module.apply(variables, ids, deterministic=True)
    jitted = jax.jit(lambda v, x: module.apply(v, x, deterministic=True))(variables, ids)
    np.testing.assert_allclose(eager, jitted, atol=1e-5)
    a = module.apply(variables, ids, deterministic=False, rngs={"dropout": jax.random.key(3)})
    b = module.apply(variables, ids, deterministic=False, rngs={"dropout": jax.random.key(4)})
    assert not np.allclose(a, b)


def test_textcnn_empty_text_gives_finite_logits():
    module = models.build_model("textcnn", CONFIGS["textcnn"])
    ids = jnp.zeros((3, 5), jnp.int32)
    variables = module.init(jax.random.key(0), ids, deterministic=True)
    assert np.isfinite(module.apply(variables, ids, deterministic=True)).all()


def test_hash_ngram_ids_in_range_and_order_sensitive():
    ids = jnp.array([[1, 2, 3, 0], [2, 1, 3, 0]], jnp.int32)
    hashed = hash_ngram_ids(ids, 2, 13)
    assert hashed.shape == (2, 4) and int(hashed.min()) >= 0 and int(hashed.max()) < 13
    assert int(hashed[0, 1]) != int(hashed[1, 1])  # "1 2" and "2 1" are different bigrams


def test_unknown_model_and_config_keys_name_the_nearest():
    with pytest.raises(FlaxtrainError, match="did you mean 'textcnn'"):
        models.get_entry("textcnm")
    with pytest.raises(FlaxtrainError, match="did you mean 'num_filters'"):
        models.make_config("textcnn", vocab_size=5, num_classes=2, num_filter=3)
    config = models.make_config("textcnn", vocab_size=5, num_classes=2, dropout=0.25)  # ktrain's spelling
    assert config.dropout_rate == 0.25
