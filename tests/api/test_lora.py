"""LoRA adapters: trained through the Learner, written in PEFT's format and proven equal to PEFT on PyTorch."""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import flaxtrain
import flaxtrain.text
from flaxtrain.errors import FlaxtrainError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from encoder_families import FAMILIES, family_checkpoint  # noqa: E402
from make_predictor_folders import tiny_bert  # noqa: E402

import peft  # noqa: E402  (the test extra: a missing reference must fail, not skip)
import torch  # noqa: E402
import transformers  # noqa: E402


@pytest.fixture(scope="module")
def split(sentiment_texts, tmp_path_factory):
    texts, labels = sentiment_texts
    checkpoint = tiny_bert(tmp_path_factory.mktemp("bert"), texts)
    t = flaxtrain.text.Transformer(str(checkpoint), maxlen=24)
    return checkpoint, t, t.preprocess_train(texts[:160], labels[:160], verbose=0), t.preprocess_test(texts[160:], labels[160:])


def _torch_probs(model, t, texts):
    """Softmax of a PyTorch sequence classifier on the token ids flaxtrain's preprocessor gives, one text at a
    time (no padding)."""
    out = []
    with torch.no_grad():
        for ids in t.preproc.encode(texts):
            ids = torch.tensor([list(ids)], dtype=torch.long)
            out.append(torch.softmax(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits, -1)[0].numpy())
    return np.stack(out)


def test_lora_trains_adapters_and_head_only_and_peft_gives_the_same_outputs(split, sentiment_texts, tmp_path):
    checkpoint, t, trn, val = split
    texts, _ = sentiment_texts
    probe = texts[160:172] + ["a", "superb"]
    model = t.get_classifier()
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=16)
    learner.add_lora(rank=8, alpha=16, targets=("query", "value"))
    assert learner.frozen == ("encoder",)
    assert model.lora.targets == tuple(f"encoder/layer_{i}/attention/{p}" for i in (0, 1) for p in ("query", "value"))
    encoder, head = jax.device_get(model.params["encoder"]), jax.device_get(model.params["classifier"])
    untrained = flaxtrain.get_predictor(model, t).predict_proba(probe)
    history = learner.fit(5e-2, 4, verbose=0)  # a random frozen encoder: slow to learn (MiniLM's is measured in benchmarks/)
    assert history[-1]["loss"] < history[0]["loss"], history
    # The encoder is exactly as loaded; the adapters (B starts at zero) and the head moved.
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(encoder), jax.tree.leaves(model.params["encoder"])))
    assert not np.allclose(head["kernel"], model.params["classifier"]["kernel"])
    b = model.params["lora"]["encoder"]["layer_1"]["attention"]["value"]["b"]
    assert b.shape == (8, 2, 8) and np.abs(b).max() > 1e-3
    predictor = flaxtrain.get_predictor(learner.model, t)
    probs = predictor.predict_proba(probe)
    assert np.abs(probs - untrained).max() > 1e-3

    # PEFT's format: PeftModel on the PyTorch model of the same checkpoint reproduces the probabilities.
    adapter = predictor.save_adapter(tmp_path / "adapter", base_model=str(checkpoint))
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    base = transformers.BertForSequenceClassification.from_pretrained(str(checkpoint), num_labels=2)
    reference = peft.PeftModel.from_pretrained(base, str(adapter)).eval()
    assert reference.peft_config["default"].r == 8 and reference.peft_config["default"].lora_alpha == 16
    np.testing.assert_allclose(_torch_probs(reference, t, probe), probs, atol=1e-5)

    # Merged into a plain checkpoint, and back through flaxtrain's own folder (adapters kept) and load_adapter.
    merged = transformers.BertForSequenceClassification.from_pretrained(str(predictor.save_pretrained(tmp_path / "m")))
    np.testing.assert_allclose(_torch_probs(merged.eval(), t, probe), probs, atol=1e-5)
    assert model.lora is not None  # save_pretrained merged a copy
    again = flaxtrain.load_predictor(predictor.save(tmp_path / "p"))
    assert again.model.lora == model.lora
    np.testing.assert_array_equal(again.predict_proba(probe), probs)
    fresh = t.get_classifier()
    fresh.load_adapter(adapter)
    np.testing.assert_allclose(flaxtrain.get_predictor(fresh, t).predict_proba(probe), probs, atol=1e-6)

    # merge_lora folds the adapters in: the same outputs from a plain model, and the whole model trains again.
    learner.merge_lora()
    assert model.lora is None and "lora" not in model.params and learner.frozen == ()
    np.testing.assert_allclose(flaxtrain.get_predictor(model, t).predict_proba(probe), probs, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapters_with_large_random_weights_match_peft_for_every_encoder_family(family, sentiment_texts, tmp_path):
    texts, labels = sentiment_texts
    checkpoint = family_checkpoint(family, tmp_path / "ckpt")
    t = flaxtrain.text.Transformer(str(checkpoint), maxlen=20)
    trn = t.preprocess_train(texts[:30], [["neg", "pos", "meh"][i % 3] for i in range(30)], verbose=0)
    model = flaxtrain.get_model(str(checkpoint), trn, lora={"rank": 3, "alpha": 5, "targets": ("query", "value", "attention/out")})
    rng = np.random.default_rng(1)
    model.params = jax.tree.map(lambda x: rng.normal(0, 0.5, np.shape(x)).astype(np.float32) if np.ndim(x) else x,
                                {k: v for k, v in model.params.items() if k != "encoder"}) | {"encoder": model.params["encoder"]}
    predictor = flaxtrain.get_predictor(model, t)
    probe = texts[:6]
    probs = predictor.predict_proba(probe)
    adapter = predictor.save_adapter(tmp_path / "adapter")
    base = transformers.AutoModelForSequenceClassification.from_pretrained(str(checkpoint), num_labels=3)
    reference = peft.PeftModel.from_pretrained(base, str(adapter)).eval()
    targets = reference.peft_config["default"].target_modules
    assert len(targets) == (3 if family == "albert" else 2 * 3)  # ALBERT's layers share one block
    np.testing.assert_allclose(_torch_probs(reference, t, probe), probs, atol=1e-4)


def test_an_adapter_peft_trained_loads_onto_the_flaxtrain_model(split, tmp_path):
    checkpoint, t, trn, _ = split
    torch.manual_seed(3)
    base = transformers.BertForSequenceClassification.from_pretrained(str(checkpoint), num_labels=2)
    tuned = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=12, target_modules=["query", "key", "dense"],
                                                      task_type="SEQ_CLS"))
    with torch.no_grad():  # as if trained: every adapter and the head away from their start
        for name, p in tuned.named_parameters():
            if "lora_" in name or "classifier" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    tuned.save_pretrained(tmp_path / "adapter")
    model = t.get_classifier()
    config = model.load_adapter(tmp_path / "adapter")
    # 'dense' is PEFT's suffix match: the attention output, the MLP's two kernels and the pooler.
    assert len(config.targets) == 2 * 5 + 1 and config.rank == 4 and config.scale == 3.0
    probe = ["a gorgeous film", "dull and tedious", "the plot"]
    np.testing.assert_allclose(flaxtrain.get_predictor(model, t).predict_proba(probe),
                               _torch_probs(tuned.eval(), t, probe), atol=1e-5)
    # Training goes on from it with the adapters: the learner freezes the encoder.
    assert flaxtrain.get_learner(model, trn, batch_size=16).frozen == ("encoder",)


def test_lora_mistakes_get_one_line_errors(split, tmp_path):
    _, t, trn, _ = split
    model = t.get_classifier()
    with pytest.raises(FlaxtrainError, match="match no kernel .* its kernels end in"):
        model.add_lora(targets=("qurey",))
    with pytest.raises(FlaxtrainError, match="lora dropout 0.1 is not available"):
        model.add_lora(dropout=0.1)
    with pytest.raises(FlaxtrainError, match="rank must be a positive number"):
        model.add_lora(rank=0)
    with pytest.raises(FlaxtrainError, match="lora has no setting 'rnak'"):
        flaxtrain.get_model(str(split[0]), trn, lora={"rnak": 4})
    with pytest.raises(FlaxtrainError, match="no LoRA adapters: add them"):
        flaxtrain.get_predictor(model, t).save_adapter(tmp_path / "a")
    with pytest.raises(FlaxtrainError, match="has no adapter_config.json"):
        model.load_adapter(tmp_path)
    model.add_lora(targets="encoder/layer_1/attention/(query|key)")  # a regular expression over whole paths
    assert model.lora.targets == ("encoder/layer_1/attention/key", "encoder/layer_1/attention/query")
    with pytest.raises(FlaxtrainError, match="already has LoRA adapters"):
        model.add_lora()
    textcnn = flaxtrain.get_model("textcnn", *flaxtrain.text.texts_from_array(
        ["good film", "bad film"] * 8, ["pos", "neg"] * 8, maxlen=8, verbose=0)[:2])
    textcnn.add_lora(rank=2, targets=("conv3", "head"))  # any network's kernels take adapters ...
    assert textcnn.lora.input_axes == (2, 1)  # a [width, in, out] convolution, a dense [in, out]
    with pytest.raises(FlaxtrainError, match="PEFT adapters are written for pretrained-encoder models"):
        flaxtrain.get_predictor(textcnn).save_adapter(tmp_path / "b")  # ... PEFT's format needs a Hugging Face layout
