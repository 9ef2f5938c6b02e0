"""The Encoder equals Hugging Face's PyTorch models for BERT, RoBERTa, XLM-R, DistilBERT and ALBERT."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxtrain import hub
from flaxtrain.errors import FlaxtrainError
from flaxtrain.models.encoder import Encoder

import torch  # noqa: E402  (the test extra: a missing reference must fail, not skip)
import transformers  # noqa: E402


SIZES = dict(vocab_size=53, num_hidden_layers=2, num_attention_heads=3, hidden_size=15, intermediate_size=37)
FAMILIES = {
    "bert": lambda: transformers.BertModel(transformers.BertConfig(**SIZES, max_position_embeddings=13)),
    "roberta": lambda: transformers.RobertaModel(transformers.RobertaConfig(
        **SIZES, max_position_embeddings=15, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)),
    "xlm-roberta": lambda: transformers.XLMRobertaModel(transformers.XLMRobertaConfig(
        **SIZES, max_position_embeddings=15, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)),
    "distilbert": lambda: transformers.DistilBertModel(transformers.DistilBertConfig(
        vocab_size=53, n_layers=2, n_heads=3, dim=15, hidden_dim=37, max_position_embeddings=13)),
    "albert": lambda: transformers.AlbertModel(transformers.AlbertConfig(
        **SIZES, embedding_size=7, max_position_embeddings=13, hidden_act="gelu_new")),
}


def _inputs(vocab: int, pad_id: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(3, 11)).astype(np.int64)
    mask = (np.arange(11)[None, :] < np.array([11, 7, 3])[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, pad_id)  # padding after each text
    types = (np.arange(11)[None, :] >= 5).astype(np.int64) * mask
    return ids, mask, types


def _reference(model, ids, mask, types):
    model.eval()
    kwargs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if model.config.model_type not in ("distilbert",) and getattr(model.config, "type_vocab_size", 1) > 1:
        kwargs["token_type_ids"] = torch.from_numpy(types)
    with torch.no_grad():
        out = model(**kwargs)
    return out.last_hidden_state.numpy(), getattr(out, "pooler_output", None)


def _ours(path, ids, mask, types):
    config, params, _ = hub.load_pretrained(path)
    hidden, pooled = Encoder(config).apply(
        {"params": params}, jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask, jnp.int32),
        token_type_ids=jnp.asarray(types, jnp.int32) if config.type_vocab_size > 1 else None, deterministic=True,
    )
    return np.asarray(hidden), np.asarray(pooled)


def _save(model, path):
    model.save_pretrained(path, safe_serialization=True)
    hub.load_tokenizer("minilm").save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random-initialised BERT with odd sizes, saved as safetensors with a tokenizer.json."""
    torch.manual_seed(0)
    model = FAMILIES["bert"]()
    return model, _save(model, tmp_path_factory.mktemp("tiny_bert"))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_random_tiny_model_matches_reference_with_padding(family, tmp_path):
    torch.manual_seed(0)
    model = FAMILIES[family]()
    path = _save(model, tmp_path)
    ids, mask, types = _inputs(53, pad_id=model.config.pad_token_id)
    want_hidden, want_pooled = _reference(model, ids, mask, types)
    got_hidden, got_pooled = _ours(path, ids, mask, types)
    valid = mask.astype(bool)
    np.testing.assert_allclose(got_hidden[valid], want_hidden[valid], atol=1e-4, rtol=1e-4)
    if want_pooled is not None:
        np.testing.assert_allclose(got_pooled, want_pooled.numpy(), atol=1e-4, rtol=1e-4)


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
    np.testing.assert_allclose(got_hidden[valid], want_hidden[valid], atol=5e-6, rtol=0)  # measured 2.3e-6


def test_mismatched_weights_name_the_key_and_both_shapes(tiny_bert, tmp_path):
    _, path = tiny_bert
    for name in ("model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    hf = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**hf, "intermediate_size": 41}))
    with pytest.raises(FlaxtrainError, match=r"encoder.layer.0.intermediate.dense.weight has shape \(37, 15\) in the "
                                             r"checkpoint but config.json needs \(41, 15\)"):
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


_CLASS_PREFIX = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "distilbert": "DistilBert",
                 "albert": "Albert"}
_TASKS = {"sequence": "ForSequenceClassification", "token": "ForTokenClassification", "span": "ForQuestionAnswering",
          "mlm": "ForMaskedLM"}


@pytest.mark.parametrize("task", sorted(_TASKS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_task_heads_match_reference(family, task, tmp_path):
    from flaxtrain.models import heads

    torch.manual_seed(1)
    config = FAMILIES[family]().config
    config.num_labels = 2 if task == "span" else 5  # a QA head has start and end outputs
    model = getattr(transformers, _CLASS_PREFIX[family] + _TASKS[task])(config).eval()
    path = _save(model, tmp_path)
    ids, mask, types = _inputs(53, pad_id=config.pad_token_id, seed=2)
    kwargs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    with torch.no_grad():
        reference = model(**kwargs)
    ours_config, params, _ = hub.load_pretrained(path, task=task)
    head_config = heads.HeadConfig(ours_config, num_classes=5)
    module = {"sequence": heads.SequenceClassifier, "token": heads.TokenClassifier, "span": heads.SpanClassifier,
              "mlm": heads.MaskedLM}[task](head_config)
    got = module.apply({"params": params}, jnp.asarray(ids, jnp.int32), attention_mask=jnp.asarray(mask, jnp.int32),
                       deterministic=True)
    valid = mask.astype(bool)
    if task == "span":
        np.testing.assert_allclose(np.asarray(got[0])[valid], reference.start_logits.numpy()[valid], atol=1e-4)
        np.testing.assert_allclose(np.asarray(got[1])[valid], reference.end_logits.numpy()[valid], atol=1e-4)
    elif task == "sequence":
        np.testing.assert_allclose(np.asarray(got), reference.logits.numpy(), atol=1e-4)
    else:
        np.testing.assert_allclose(np.asarray(got)[valid], reference.logits.numpy()[valid], atol=1e-4)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_save_pretrained_round_trips_through_pytorch(family, tmp_path):
    torch.manual_seed(3)
    config = FAMILIES[family]().config
    config.num_labels = 3
    cls = getattr(transformers, _CLASS_PREFIX[family] + "ForSequenceClassification")
    model = cls(config).eval()
    source = _save(model, tmp_path / "source")
    ours_config, params, tokenizer = hub.load_pretrained(source, task="sequence")
    target = hub.save_pretrained(tmp_path / "target", ours_config, params, tokenizer, task="sequence",
                                 class_names=["a", "b", "c"])
    reloaded = cls.from_pretrained(str(target)).eval()
    ids, mask, _ = _inputs(53, pad_id=config.pad_token_id, seed=4)
    kwargs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(**kwargs).logits.numpy(), model(**kwargs).logits.numpy(), atol=1e-5)
    assert reloaded.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_pytorch_bin_checkpoint_loads_through_torch(tmp_path):
    torch.manual_seed(5)
    model = FAMILIES["bert"]().eval()
    _save(model, tmp_path)
    (tmp_path / "model.safetensors").unlink()  # keep only the older PyTorch format
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    assert (tmp_path / "pytorch_model.bin").exists() and not (tmp_path / "model.safetensors").exists()
    ids, mask, types = _inputs(53)
    want, _ = _reference(model, ids, mask, types)
    got, _ = _ours(tmp_path, ids, mask, types)
    np.testing.assert_allclose(got[mask.astype(bool)], want[mask.astype(bool)], atol=1e-4)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a zip")
    with pytest.raises(FlaxtrainError, match="not a readable PyTorch weights file"):
        hub.load_pretrained(tmp_path)
