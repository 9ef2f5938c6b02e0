"""T5, BART and Marian against PyTorch `transformers` on random tiny checkpoints: encoder states,
teacher-forced logits, and greedy / beam-search token ids of `generate` on the same inputs."""

import numpy as np
import pytest

import torch  # noqa: E402  (the test extra: a missing reference must fail, not skip)
import transformers  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from flaxtrain import hub  # noqa: E402
from flaxtrain.eval import decode  # noqa: E402
from flaxtrain.models import Seq2Seq  # noqa: E402

V = 99
MAX_NEW = 12
SIZES = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
             encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=64, dropout=0.0)


def _reference(family: str):
    torch.manual_seed(0)
    if family.startswith("t5"):
        config = transformers.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                                       relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                       dropout_rate=0.0, decoder_start_token_id=0,
                                       feed_forward_proj="gated-gelu" if family == "t5-gated" else "relu")
        model = transformers.T5ForConditionalGeneration(config)
        eos_row = model.shared.weight[config.eos_token_id]
    elif family == "bart":
        model = transformers.BartForConditionalGeneration(transformers.BartConfig(vocab_size=V, **SIZES))
    else:
        model = transformers.MarianMTModel(transformers.MarianConfig(
            vocab_size=V, decoder_vocab_size=V, pad_token_id=V - 1, decoder_start_token_id=V - 1, scale_embedding=True,
            activation_function="swish", **SIZES))
    model.eval()
    with torch.no_grad():  # sequences end at varied lengths, so the end-of-sequence paths of decoding run
        if family.startswith("t5"):
            eos_row.mul_(4.0)
        else:
            model.final_logits_bias.normal_(0.0, 0.5)
            model.final_logits_bias[0, model.config.eos_token_id] = 2.5
    return model


_CONVERTED: dict = {}


def _convert(family: str, tmp_path_factory):
    if family in _CONVERTED:
        return _CONVERTED[family]
    reference = _reference(family)
    path = tmp_path_factory.mktemp(family)
    reference.save_pretrained(path)
    config, params, _, generation = hub.load_seq2seq(path, tokenizer=False)
    rng = np.random.default_rng(0)
    src = rng.integers(3, V - 2, (3, 11))
    src[1, 7:], src[2, 9:] = config.pad_id, config.pad_id
    mask = (src != config.pad_id).astype(np.int64)
    _CONVERTED[family] = (family, reference, Seq2Seq(config), params, generation, src, mask)
    return _CONVERTED[family]


@pytest.fixture(scope="module", params=["t5", "t5-gated", "bart", "marian"])
def converted(request, tmp_path_factory):
    return _convert(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def bart(tmp_path_factory):
    return _convert("bart", tmp_path_factory)


def test_encoder_states_and_teacher_forced_logits_match(converted):
    _, reference, module, params, _, src, mask = converted
    tgt = np.random.default_rng(1).integers(3, V - 2, (3, 6))
    tgt[:, 0] = module.config.decoder_start_id
    with torch.no_grad():
        out = reference(input_ids=torch.tensor(src), attention_mask=torch.tensor(mask), decoder_input_ids=torch.tensor(tgt))
    hidden = module.apply({"params": params}, jnp.asarray(src), jnp.asarray(mask), method="encode")
    np.testing.assert_allclose(np.asarray(hidden) * mask[..., None], out.encoder_last_hidden_state.numpy() * mask[..., None],
                               atol=1e-4)
    logits = module.apply({"params": params}, jnp.asarray(src), jnp.asarray(tgt), attention_mask=jnp.asarray(mask),
                          deterministic=True)
    np.testing.assert_allclose(np.asarray(logits), out.logits.numpy(), atol=1e-4)


CASES = {"greedy": dict(num_beams=1), "beam": dict(num_beams=4),
         "beam_options": dict(num_beams=4, length_penalty=2.0, early_stopping=True, num_return_sequences=2),
         "greedy_no_repeat": dict(num_beams=1, no_repeat_ngram_size=2, min_new_tokens=3),
         "beam_no_repeat": dict(num_beams=4, no_repeat_ngram_size=2)}
EXTRA = {"t5": ["beam_options", "greedy_no_repeat"], "bart": ["beam_options"], "marian": ["beam_no_repeat"]}


def test_generate_gives_the_reference_token_ids(converted):
    family, reference, module, params, generation, src, mask = converted
    cases = ["greedy", "beam", *EXTRA.get(family, [])]
    for case in cases:
        settings = dict(CASES[case], max_new_tokens=MAX_NEW)
        with torch.no_grad():
            want = reference.generate(input_ids=torch.tensor(src), attention_mask=torch.tensor(mask), do_sample=False,
                                      **settings).numpy()
        g = decode.generation_config(generation, **settings)
        got = decode.generate(module, params, src, mask, config=g)
        want = decode.finish(want[:, 1:], g)
        want = np.pad(want, ((0, 0), (0, MAX_NEW - want.shape[1])), constant_values=g.pad_id)
        np.testing.assert_array_equal(got, want, err_msg=f"{family} {case}")
        if family in ("bart", "marian"):  # their biased end-of-sequence logit ends some sequences early
            assert (got == g.eos_id).any(), f"{case}: no sequence ended, so end-of-sequence handling went untested"


def test_weights_written_by_flaxtrain_load_in_transformers(converted, tmp_path):
    _, reference, module, params, generation, src, mask = converted
    hub.save_seq2seq(tmp_path / "out", module.config, params, generation=generation)
    back = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out").eval()
    tgt = np.full((3, 1), module.config.decoder_start_id)
    with torch.no_grad():
        want = reference(input_ids=torch.tensor(src), attention_mask=torch.tensor(mask), decoder_input_ids=torch.tensor(tgt))
        got = back(input_ids=torch.tensor(src), attention_mask=torch.tensor(mask), decoder_input_ids=torch.tensor(tgt))
    np.testing.assert_allclose(got.logits.numpy(), want.logits.numpy(), atol=1e-5)


def test_incremental_decoding_equals_the_full_forward(converted):
    _, _, module, params, _, src, mask = converted
    tgt = np.random.default_rng(2).integers(3, V - 2, (3, 7))
    tgt[:, 0] = module.config.decoder_start_id
    full = module.apply({"params": params}, jnp.asarray(src), jnp.asarray(tgt), attention_mask=jnp.asarray(mask),
                        deterministic=True)
    hidden = module.apply({"params": params}, jnp.asarray(src), jnp.asarray(mask), method="encode")
    valid = jnp.asarray(mask, bool)
    cache = decode._empty_cache(module, params, 3, 10, hidden, valid)
    steps = []
    for t in range(tgt.shape[1]):  # first call stores the encoder's keys/values, later ones read them
        logits, variables = module.apply({"params": params, "cache": cache}, jnp.asarray(tgt[:, t:t + 1]),
                                         hidden if t == 0 else None, valid, incremental=True, method="decode",
                                         mutable=["cache"])
        cache = variables["cache"]
        steps.append(np.asarray(logits[:, 0]))
    np.testing.assert_allclose(np.stack(steps, axis=1), np.asarray(full), atol=1e-5)


def test_decoding_compiles_once_per_shape(bart):
    _, _, module, params, generation, src, mask = bart
    g = decode.generation_config(generation, num_beams=4, max_new_tokens=MAX_NEW)
    compiled = decode.compiled_generate(module, g)
    decode.generate(module, params, src, mask, config=g)
    before = compiled._cache_size()
    for shift in range(1, 3):  # new values, same shapes: no compile
        decode.generate(module, params, np.roll(src, shift, axis=1), np.roll(mask, shift, axis=1), config=g)
    assert compiled._cache_size() == before
    decode.generate(module, params, src[:2], mask[:2], config=g)  # another batch size: one more
    assert compiled._cache_size() == before + 1


def test_sampling_is_seeded_and_top_k_1_is_greedy(bart):
    _, _, module, params, generation, src, mask = bart
    hot = decode.generation_config(generation, do_sample=True, temperature=2.0, num_return_sequences=3, max_new_tokens=MAX_NEW)
    first = decode.generate(module, params, src, mask, config=hot, rng=jax.random.key(0))
    assert first.shape == (9, MAX_NEW)
    np.testing.assert_array_equal(first, decode.generate(module, params, src, mask, config=hot, rng=jax.random.key(0)))
    assert not np.array_equal(first, decode.generate(module, params, src, mask, config=hot, rng=jax.random.key(1)))
    greedy = decode.generate(module, params, src, mask, config=decode.generation_config(generation, max_new_tokens=MAX_NEW))
    top1 = decode.generation_config(generation, do_sample=True, top_k=1, max_new_tokens=MAX_NEW)
    np.testing.assert_array_equal(decode.generate(module, params, src, mask, config=top1, rng=jax.random.key(3)), greedy)
    with pytest.raises(Exception, match="explicit key"):
        decode.generate(module, params, src, mask, config=top1)


def test_top_k_and_top_p_keep_the_expected_tokens():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda **kw: np.isfinite(np.asarray(decode._warp(logits, decode.GenerationConfig(do_sample=True, **kw))))[0]  # noqa: E731
    np.testing.assert_array_equal(kept(top_k=2), [True, True, False, False])
    np.testing.assert_array_equal(kept(top_p=0.7), [True, True, False, False])  # 0.5 < 0.7 <= 0.8
    np.testing.assert_array_equal(kept(top_p=0.85), [True, True, True, False])
    np.testing.assert_array_equal(kept(top_p=0.4), [True, False, False, False])


def test_t5_head_tying_and_output_scaling_follow_the_checkpoint(tmp_path):
    """A T5 v1.1-era folder (tie_word_embeddings false, its own lm_head.weight, no scaling) loads as
    transformers loads it, and flaxtrain writes it back so that transformers reads the same model."""
    import json

    from safetensors.numpy import load_file, save_file

    reference = _reference("t5-gated")
    reference.save_pretrained(tmp_path / "new")
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    config.pop("scale_decoder_outputs", None)
    config["tie_word_embeddings"] = False
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "config.json").write_text(json.dumps(config))
    weights = load_file(str(tmp_path / "new" / "model.safetensors"))
    weights["lm_head.weight"] = np.random.default_rng(0).normal(0, 0.5, weights["shared.weight"].shape).astype(np.float32)
    save_file(weights, str(tmp_path / "legacy" / "model.safetensors"), metadata={"format": "pt"})
    legacy = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "legacy").eval()
    loaded, params, _, generation = hub.load_seq2seq(tmp_path / "legacy", tokenizer=False)
    assert not loaded.tie_embeddings and not loaded.scale_logits
    src, tgt = np.array([[5, 9, 14, 3, 1]]), np.array([[0, 7, 8, 2]])
    with torch.no_grad():
        want = legacy(input_ids=torch.tensor(src), decoder_input_ids=torch.tensor(tgt)).logits.numpy()
    got = Seq2Seq(loaded).apply({"params": params}, jnp.asarray(src), jnp.asarray(tgt), deterministic=True)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)
    hub.save_seq2seq(tmp_path / "out", loaded, params, generation=generation)
    back = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        np.testing.assert_allclose(back(input_ids=torch.tensor(src), decoder_input_ids=torch.tensor(tgt)).logits.numpy(),
                                   want, atol=1e-5)
