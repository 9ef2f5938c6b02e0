"""The BERT-layout Encoder equals Hugging Face's PyTorch BertModel, number for number."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxtrain import hub
from flaxtrain.errors import FlaxtrainError
from flaxtrain.models.encoder import Encoder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _inputs(vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(3, 11)).astype(np.int64)
    mask = (np.arange(11)[None, :] < np.array([11, 7, 3])[:, None]).astype(np.int64)
    ids = ids * mask  # pad id 0 after each text
    types = (np.arange(11)[None, :] >= 5).astype(np.int64) * mask
    return ids, mask, types


def _reference(model, ids, mask, types):
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    token_type_ids=torch.from_numpy(types))
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def _ours(path, ids, mask, types):
    config, params, _ = hub.load_pretrained(path)
    hidden, pooled = Encoder(config).apply(
        {"params": params}, jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask, jnp.int32),
        token_type_ids=jnp.asarray(types, jnp.int32), deterministic=True,
    )
    return np.asarray(hidden), np.asarray(pooled)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random-initialised BERT with odd sizes, saved as safetensors with a tokenizer.json."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=53, hidden_size=15, num_hidden_layers=2, num_attention_heads=3,
                                     intermediate_size=37, max_position_embeddings=13, type_vocab_size=2)
    model = transformers.BertModel(config)
    path = tmp_path_factory.mktemp("tiny_bert")
    model.save_pretrained(path, safe_serialization=True)
    hub.load_tokenizer("minilm").save(str(path / "tokenizer.json"))
    return model, path


def test_random_tiny_bert_matches_reference_with_padding(tiny_bert):
    model, path = tiny_bert
    ids, mask, types = _inputs(53)
    want_hidden, want_pooled = _reference(model, ids, mask, types)
    got_hidden, got_pooled = _ours(path, ids, mask, types)
    valid = mask.astype(bool)
    np.testing.assert_allclose(got_hidden[valid], want_hidden[valid], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got_pooled, want_pooled, atol=1e-4, rtol=1e-4)


def test_real_minilm_checkpoint_matches_reference():
    path = hub.resolve_checkpoint("minilm")
    model = transformers.BertModel.from_pretrained(str(path))
    tokenizer = hub.load_tokenizer("minilm")
    texts = ["A gripping, beautifully acted film.", "Dull.", "The plot never quite comes together, sadly."]
    encodings = tokenizer.encode_batch(texts)
    length = max(len(e.ids) for e in encodings)
    ids = np.array([e.ids + [0] * (length - len(e.ids)) for e in encodings], np.int64)
    mask = (ids != 0).astype(np.int64)
    types = np.zeros_like(ids)
    want_hidden, _ = _reference(model, ids, mask, types)
    got_hidden, _ = _ours("minilm", ids, mask, types)
    valid = mask.astype(bool)
    np.testing.assert_allclose(got_hidden[valid], want_hidden[valid], atol=1e-4, rtol=1e-4)


def test_mismatched_weights_name_the_key_and_both_shapes(tiny_bert, tmp_path):
    _, path = tiny_bert
    for name in ("model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    hf = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**hf, "intermediate_size": 41}))
    with pytest.raises(FlaxtrainError, match=r"weight \['layer_0'\]\['mlp'\]\['hidden'\]\['bias'\] has shape \(37,\) but the config needs \(41,\)"):
        hub.load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**hf, "model_type": "gpt2"}))
    with pytest.raises(FlaxtrainError, match="model_type 'gpt2'"):
        hub.load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**hf, "num_hidden_layers": 3}))
    with pytest.raises(FlaxtrainError, match="checkpoint lacks encoder.layer.2"):
        hub.load_pretrained(tmp_path)


def test_jit_equals_eager_on_the_encoder(tiny_bert):
    _, path = tiny_bert
    config, params, _ = hub.load_pretrained(path)
    ids = jnp.asarray(_inputs(53)[0], jnp.int32)
    run = lambda p, x: Encoder(config).apply({"params": p}, x, deterministic=True)[0]  # noqa: E731
    np.testing.assert_allclose(jax.jit(run)(params, ids), run(params, ids), atol=1e-5)
