"""Rematerialization by named policy: every policy gives the same gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxtrain import models
from flaxtrain.errors import FlaxtrainError
from flaxtrain.models.encoder import EncoderConfig
from flaxtrain.models.seq2seq import PRESETS, Seq2SeqConfig
from flaxtrain.tasks.masked_lm import masked_lm_loss
from flaxtrain.tasks.span_corruption import span_corruption_loss


def _mlm(remat, width=32, layers=2):
    return models.build_model("masked_lm", models.HeadConfig(EncoderConfig(vocab_size=100, hidden_size=width,
                                                                           num_layers=layers, num_heads=4,
                                                                           mlp_dim=4 * width, remat=remat)))


def _t5(remat):
    config = Seq2SeqConfig(**{**PRESETS["t5"], "vocab_size": 100, "hidden_size": 32, "num_layers": 2,
                              "num_decoder_layers": 2, "num_heads": 4, "head_dim": 8, "mlp_dim": 64, "remat": remat})
    return models.build_model("span_corruption", config)


def _batch(rows=4, length=24, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 100, (rows, length)).astype(np.int32)
    return {"input_ids": ids, "segment_ids": np.where(np.arange(length) < length // 2, 1, 2)[None].repeat(rows, 0),
            "labels": np.where(rng.random((rows, length)) < 0.3, ids, -1).astype(np.int32),
            "decoder_input_ids": ids[:, :8], "decoder_segment_ids": np.ones((rows, 8), np.int32),
            "weight": np.ones(rows, np.float32)}


@pytest.mark.parametrize("build, loss_fn", [(_mlm, masked_lm_loss), (_t5, span_corruption_loss)], ids=["bert", "t5"])
def test_every_policy_gives_the_same_gradients(build, loss_fn):
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    if loss_fn is span_corruption_loss:
        batch["labels"] = jnp.abs(batch["labels"][:, :8])
    params = jax.jit(lambda key: build("none").init(key, batch["input_ids"], deterministic=True))(jax.random.key(0))["params"]
    grads = {}
    policies = ("full", "dots") if build is _mlm else ("full",)  # T5's 'dots' runs scanned in the test below
    for policy in ("none", *policies):
        module = build(policy)

        def loss(p, module=module):
            return loss_fn(module.apply, p, batch, rngs={"dropout": jax.random.key(1)}, deterministic=False)[0]

        grads[policy] = jax.jit(jax.grad(loss))(params)
    for policy in policies:
        for a, b in zip(jax.tree.leaves(grads[policy]), jax.tree.leaves(grads["none"])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_an_unknown_policy_is_a_one_line_error():
    with pytest.raises(FlaxtrainError, match="remat must be 'none', 'full', 'dots', got 'some'"):
        EncoderConfig(vocab_size=10, remat="some")


def test_scanned_layers_compute_as_the_unrolled_stack_and_save_the_same_checkpoint(tmp_path):
    from safetensors.numpy import load_file

    from flaxtrain import hub
    from flaxtrain.models.encoder import stack_layers
    from flaxtrain.train import init_params

    encoder = EncoderConfig(vocab_size=100, hidden_size=32, num_layers=3, num_heads=4, mlp_dim=64)
    unrolled = models.build_model("masked_lm", models.HeadConfig(encoder))
    scanned_config = models.HeadConfig(EncoderConfig(**{**encoder.__dict__, "scan_layers": True, "remat": "dots"}))
    scanned = models.build_model("masked_lm", scanned_config)
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    params = init_params(unrolled, {"input_ids": batch["input_ids"]}, jax.random.key(0))
    params = jax.jit(lambda p: jax.tree.map(lambda x: x + 0.2 * jax.random.normal(jax.random.key(1), x.shape), p))(params)
    stacked = {**params, "encoder": stack_layers(jax.device_get(params["encoder"]), 3)}
    assert jax.tree.structure(stacked) == jax.tree.structure(
        init_params(scanned, {"input_ids": batch["input_ids"]}, jax.random.key(0)))
    logits = [jax.jit(lambda p, m=m: m.apply({"params": p}, batch["input_ids"], segment_ids=batch["segment_ids"],
                                             deterministic=True))(p) for m, p in ((scanned, stacked), (unrolled, params))]
    np.testing.assert_allclose(*logits, atol=1e-5)
    grads = [jax.jit(jax.grad(lambda p, m=m: masked_lm_loss(m.apply, p, batch, rngs={}, deterministic=True)[0]))(p)
             for m, p in ((unrolled, params), (scanned, stacked))]
    restacked = {**grads[0], "encoder": stack_layers(jax.device_get(grads[0]["encoder"]), 3)}
    # against the gradients' own scale: summation order differs between the scan and the unrolled stack (and CPUs)
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads[1]))
    for a, b in zip(jax.tree.leaves(restacked), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)
    tokenizer = hub.load_tokenizer("minilm")
    hub.save_pretrained(tmp_path / "unrolled", encoder, params, tokenizer, task="mlm")
    hub.save_pretrained(tmp_path / "scanned", scanned_config.encoder, stacked, tokenizer, task="mlm")
    ours, theirs = load_file(tmp_path / "scanned" / "model.safetensors"), load_file(tmp_path / "unrolled" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)


def test_scanned_t5_blocks_compute_generate_and_save_as_the_unrolled_stacks(tmp_path):
    from safetensors.numpy import load_file

    from flaxtrain import hub
    from flaxtrain.eval.decode import generate
    from flaxtrain.models.decoder import stack_blocks
    from flaxtrain.train import init_params

    sizes = {**PRESETS["t5"], "vocab_size": 100, "hidden_size": 32, "num_layers": 2, "num_decoder_layers": 3,
             "num_heads": 4, "head_dim": 8, "mlp_dim": 64}
    unrolled_config, scanned_config = Seq2SeqConfig(**sizes), Seq2SeqConfig(**sizes, scan_layers=True, remat="dots")
    unrolled, scanned = (models.build_model("span_corruption", c) for c in (unrolled_config, scanned_config))
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    batch["labels"] = jnp.abs(batch["labels"][:, :8])
    params = init_params(unrolled, {"input_ids": batch["input_ids"]}, jax.random.key(0))
    params = jax.jit(lambda p: jax.tree.map(lambda x: x + 0.2 * jax.random.normal(jax.random.key(1), x.shape), p))(params)
    stacked = jax.tree.map(jnp.asarray, stack_blocks(jax.device_get(params), scanned_config))
    fresh = init_params(scanned, {"input_ids": batch["input_ids"]}, jax.random.key(0))
    assert jax.tree.structure(stacked) == jax.tree.structure(fresh)
    assert fresh["decoder"]["layers"]["layer"]["mlp"]["out"]["kernel"].shape == (3, 64, 32)
    packed = dict(segment_ids=batch["segment_ids"], decoder_segment_ids=batch["decoder_segment_ids"], deterministic=True)
    for extra in ({"deterministic": True}, packed):  # padded rows, and packed documents
        ours, theirs = (jax.jit(lambda p, m=m: m.apply({"params": p}, batch["input_ids"], batch["decoder_input_ids"], **extra))(p)
                        for m, p in ((scanned, stacked), (unrolled, params)))
        np.testing.assert_allclose(ours, theirs, atol=2e-5)
    grads = [jax.jit(jax.grad(lambda p, m=m: span_corruption_loss(m.apply, p, batch, rngs={}, deterministic=True)[0]))(p)
             for m, p in ((unrolled, params), (scanned, stacked))]
    for a, b in zip(jax.tree.leaves(stack_blocks(jax.device_get(grads[0]), scanned_config)), jax.tree.leaves(grads[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    source = batch["input_ids"][:, :12]
    # The scanned key/value cache, reordered as beams change places.
    np.testing.assert_array_equal(generate(scanned, stacked, source, max_new_tokens=6, num_beams=3),
                                  generate(unrolled, params, source, max_new_tokens=6, num_beams=3))
    tokenizer = hub.load_tokenizer("minilm")
    hub.save_seq2seq(tmp_path / "unrolled", unrolled_config, params, tokenizer)
    hub.save_seq2seq(tmp_path / "scanned", scanned_config, stacked, tokenizer)
    ours, theirs = load_file(tmp_path / "scanned" / "model.safetensors"), load_file(tmp_path / "unrolled" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
