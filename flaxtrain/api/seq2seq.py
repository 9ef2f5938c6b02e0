"""Translation and summarization: encoder-decoder models for `get_model(..., task=)` and their predictor."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxtrain import hub, models
from flaxtrain.api.model import Model, init_model_params, load_encoder
from flaxtrain.api.predictor import Predictor
from flaxtrain.data.seq2seq import TASKS, Seq2SeqDataset, Seq2SeqPreprocessor
from flaxtrain.errors import FlaxtrainError, nearest
from flaxtrain.eval import decode, generation_metrics
from flaxtrain.hub import seq2seq as hub_seq2seq
from flaxtrain.train import create_train_state, loop

_BASE = dict(hidden_size=256, num_layers=3, num_decoder_layers=3, num_heads=4, head_dim=64, mlp_dim=1024)
# Layouts trained from scratch (sizes overridable through `params`); a local folder loads a checkpoint.
PRESETS: dict[str, dict[str, Any]] = {
    "t5": dict(_BASE, family="t5", activation="gelu_new", gated_mlp=True, pre_norm=True, use_bias=False,
               positions="relative", attention_scale=1.0, scale_logits=True, layer_norm_eps=1e-6, init_std=0.05),
    "bart": dict(_BASE, family="bart", activation="gelu", pre_norm=False, use_bias=True, positions="learned",
                 position_offset=2, embed_norm=True, final_logits_bias=True, layer_norm_eps=1e-5),
    "marian": dict(_BASE, family="marian", activation="silu", pre_norm=False, use_bias=True, positions="sinusoidal",
                   scale_embedding=True, final_logits_bias=True, layer_norm_eps=1e-5),
}
NAMES = (*PRESETS, "bert2bert")


def seq2seq_model(name: str, train_data: Seq2SeqDataset | None = None, val_data: Seq2SeqDataset | None = None, *,
                  task: str | None = None, preproc: Seq2SeqPreprocessor | None = None, params: dict[str, Any] | None = None,
                  label_smoothing: float = 0.0, seed: int = 0) -> Model:
    """An encoder-decoder Model for translation or summarization.

    Args:
      name: 't5', 'bart' or 'marian' (that layout, trained from scratch on the data's vocabulary),
        'bert2bert' (warm-started from a pretrained encoder: params={'encoder': 'minilm' | folder}), or
        a local T5 / BART / Marian checkpoint folder (Hugging Face format; its tokenizer comes along).
      train_data, val_data: from `translation_from_pairs` / `summarization_from_df` (re-encoded with a
        pretrained model's tokenizer when it has its own).
      task: 'translation' or 'summarization' (default: the data's).
      preproc: the data's preprocessor (default: train_data's).
      params: config overrides (sizes, dropout_rate, ...); for bert2bert also 'encoder' (default
        'minilm'), 'num_decoder_layers' and 'cross_attention_init' ('random', or 'self': each
        cross-attention starts as a copy of its block's self-attention).
      label_smoothing: target smoothing of the training loss (e.g. 0.1).
    """
    preproc = preproc or getattr(train_data, "preproc", None)
    task = task or (preproc.task if preproc is not None else None)
    if task not in TASKS:
        raise FlaxtrainError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if not 0 <= label_smoothing < 1:
        raise FlaxtrainError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    overrides = dict(params or {})
    generation: dict[str, Any] = {}
    if name in PRESETS:
        if preproc is None:
            raise FlaxtrainError(f"a {name} trained from scratch takes its vocabulary from the data: pass train_data")
        fields = {f.name for f in dataclasses.fields(models.Seq2SeqConfig)}
        bad = next((k for k in overrides if k not in fields), None)
        if bad is not None:
            raise FlaxtrainError(f"unknown {name} config key {bad!r}{nearest(bad, fields)}")
        longest = max(preproc.maxlen, preproc.max_target_length)
        config = models.Seq2SeqConfig(**{**PRESETS[name], "vocab_size": preproc.vocab_size, "pad_id": preproc.pad_id,
                                         "eos_id": preproc.eos_id, "decoder_start_id": preproc.decoder_start_id,
                                         "max_positions": max(512, longest), **overrides})
        weights = init_model_params(models.Seq2Seq(config), seed)
    elif name == "bert2bert":
        config, weights, preproc = _bert2bert(overrides, preproc, task, seed)
    elif Path(name).is_dir():
        config, weights, tokenizer, generation = hub.load_seq2seq(name)
        config = dataclasses.replace(config, **overrides) if overrides else config
        preproc = Seq2SeqPreprocessor(tokenizer, maxlen=preproc.maxlen if preproc else 512,
                                      max_target_length=preproc.max_target_length if preproc else 128, task=task,
                                      pad_id=config.pad_id, eos_id=config.eos_id, decoder_start_id=config.decoder_start_id)
    else:
        raise FlaxtrainError(f"unknown encoder-decoder {name!r}{nearest(name, NAMES)}; a local T5/BART/Marian folder works too")
    for data in (train_data, val_data):
        if data is not None:
            if not isinstance(data, Seq2SeqDataset):
                raise FlaxtrainError(f"task {task!r} needs text pairs from translation_from_pairs or summarization_from_df, "
                                     f"not {type(data).__name__}")
            data.preproc = preproc  # re-encoded with the model's tokenizer on next use
    model = Model("seq2seq", config, weights, preproc, train_data=train_data, val_data=val_data)
    model.label_smoothing = label_smoothing
    model.generation = generation
    return model


def _bert2bert(overrides: dict[str, Any], data_preproc: Seq2SeqPreprocessor | None, task: str, seed: int):
    checkpoint = overrides.pop("encoder", "minilm")
    decoder_layers = overrides.pop("num_decoder_layers", None)
    cross_init = overrides.pop("cross_attention_init", "random")
    if cross_init not in ("random", "self"):
        raise FlaxtrainError(f"cross_attention_init must be 'random' or 'self', got {cross_init!r}")
    maxlen = data_preproc.maxlen if data_preproc else 128
    enc_config, enc_params, tokenizer, pad_id = load_encoder(checkpoint, task=None, maxlen=maxlen)
    ids = {name: tokenizer.token_to_id(token) for name, token in (("start", "[CLS]"), ("eos", "[SEP]"))}
    if None in ids.values():
        raise FlaxtrainError(f"bert2bert needs a tokenizer with [CLS] and [SEP]; {checkpoint!r} has none")
    config = hub_seq2seq.bert2bert_config(enc_config, pad_id=pad_id, eos_id=ids["eos"], decoder_start_id=ids["start"],
                                          num_decoder_layers=decoder_layers)
    if overrides:
        config = dataclasses.replace(config, **overrides)
    fresh = init_model_params(models.Seq2Seq(config), seed)
    head = None
    try:
        _, with_head, _ = hub.load_pretrained(checkpoint, task="mlm")
        head = {k: v for k, v in with_head.items() if k != "encoder"} or None
    except FlaxtrainError:
        head = None
    weights = hub_seq2seq.bert2bert_params(jax.device_get(fresh), jax.device_get(enc_params), config, head,
                                           cross_from_self=cross_init == "self")
    weights = jax.tree.map(lambda w, f: jnp.asarray(w, f.dtype), weights, fresh)
    preproc = Seq2SeqPreprocessor(tokenizer, maxlen=maxlen,
                                  max_target_length=data_preproc.max_target_length if data_preproc else 64, task=task,
                                  pad_id=pad_id, eos_id=ids["eos"], decoder_start_id=ids["start"])
    return config, weights, preproc


class Seq2SeqPredictor(Predictor):
    """Translates or summarises raw texts with jitted greedy / beam-search decoding.

    Decoding settings default to the checkpoint's generation config (when the model came from one),
    then to greedy decoding of up to max_target_length tokens; every `predict` argument overrides them.
    Batches are padded to a power of two up to the predictor's batch size and to the source buckets,
    so decoding compiles once per (rows, bucket, settings) and one text does not pay for a full batch.
    """

    def generation_config(self, **settings: Any) -> decode.GenerationConfig:
        cfg = self.model.config
        defaults = {"decoder_start_token_id": cfg.decoder_start_id, "eos_token_id": cfg.eos_id, "pad_token_id": cfg.pad_id,
                    "forced_bos_token_id": cfg.forced_bos_id, "forced_eos_token_id": cfg.forced_eos_id,
                    "max_new_tokens": self.preproc.max_target_length, **getattr(self.model, "generation", {})}
        return decode.generation_config(defaults, **{k: v for k, v in settings.items() if v is not None})

    def generate_ids(self, source_ids: Sequence[np.ndarray], g: decode.GenerationConfig,
                     rng: jax.Array | None = None) -> np.ndarray:
        """[n * num_return_sequences, max_new_tokens] generated ids of encoded sources, in their order."""
        p = self.preproc
        buckets = np.asarray(p.buckets)
        out = np.full((len(source_ids) * g.num_return_sequences, g.max_new_tokens), g.pad_id, np.int32)
        lengths = np.asarray([len(x) for x in source_ids])
        which = np.searchsorted(buckets, np.minimum(lengths, buckets[-1]))
        compiled = decode.compiled_generate(self.model.module, g)
        if g.do_sample and rng is None:
            raise FlaxtrainError("sampling needs an explicit key: pass rng=jax.random.key(seed)")
        for b in np.unique(which):
            rows = np.flatnonzero(which == b)
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start:start + self.batch_size]
                width = min(self.batch_size, 1 << (len(chunk) - 1).bit_length())  # batch rows: a power of two
                ids = np.full((width, buckets[b]), p.pad_id, np.int32)
                for r, i in enumerate(chunk):
                    ids[r, : len(source_ids[i])] = source_ids[i][: buckets[b]]
                key = jax.random.fold_in(rng, int(b) * 1_000_003 + start) if rng is not None else jax.random.key(0)
                seqs, _ = compiled(self.model.params, jnp.asarray(ids), jnp.asarray(ids != p.pad_id, jnp.int32), key)
                seqs = decode.finish(np.asarray(seqs)[:, 1:], g).reshape(width, g.num_return_sequences, -1)
                for r, i in enumerate(chunk):
                    out[i * g.num_return_sequences:(i + 1) * g.num_return_sequences] = seqs[r]
        return out

    def predict(self, texts: str | Sequence[str], num_beams: int | None = None, max_new_tokens: int | None = None,
                length_penalty: float | None = None, num_return_sequences: int | None = None, *,
                rng: jax.Array | None = None, **settings: Any) -> Any:
        """The translation / summary of one text (a list for a list of texts); with
        num_return_sequences > 1, a list of candidates per text, best first.

        Args (as in transformers' `generate`): num_beams (1: greedy), max_new_tokens, length_penalty,
        num_return_sequences, and any other GenerationConfig field (early_stopping, do_sample,
        temperature, top_k, top_p, no_repeat_ngram_size, min_new_tokens); `rng` keys sampling.
        """
        single = isinstance(texts, str)
        sources = self.preproc.preprocess_test([texts] if single else texts).input_ids
        g = self.generation_config(num_beams=num_beams, max_new_tokens=max_new_tokens, length_penalty=length_penalty,
                                   num_return_sequences=num_return_sequences, **settings)
        decoded = self.preproc.decode(self.generate_ids(sources, g, rng))
        n = g.num_return_sequences
        grouped = [decoded[i * n:(i + 1) * n] for i in range(len(sources))] if n > 1 else decoded
        return grouped[0] if single else grouped

    def predict_proba(self, *args: Any) -> np.ndarray:
        raise FlaxtrainError("a translation or summarization model has no class probabilities: use predict(texts)")

    def evaluate(self, sources: Sequence[str], targets: Sequence[str], **settings: Any) -> tuple[float, dict[str, float]]:
        """(mean teacher-forced token loss, BLEU and chrF for translation or ROUGE-1/2/L for
        summarization, 0-100) of the generated outputs against `targets`."""
        data = self.preproc.preprocess_test(sources, targets)
        if not len(data):
            raise FlaxtrainError("no pairs to evaluate: pass at least one source and target")
        return self.loss(data), self.scores(data, **settings)

    def loss(self, data: Seq2SeqDataset) -> float:
        steps = self.model.steps
        state = create_train_state(self.model.module, self.model.params, optax.identity()).replace(apply_fn=steps.apply_fn)
        batches, count = data.batches(batch_size=self.batch_size)
        return loop.summarize(loop.evaluate(state, batches, steps=steps, num_batches=count, verbose=False))["loss"]

    def scores(self, data: Seq2SeqDataset, **settings: Any) -> dict[str, float]:
        predicted = self.preproc.decode(self.generate_ids(data.input_ids, self.generation_config(**settings)))
        return generation_metrics(self.preproc.task, predicted, data.targets)

    def save(self, directory: Any, *, extra: dict[str, Any] | None = None) -> Path:
        return super().save(directory, extra={"generation": getattr(self.model, "generation", {}), **(extra or {})})

    def save_pretrained(self, directory: Any) -> Path:
        """Writes a T5 / BART / Marian model in Hugging Face format (transformers' *ForConditionalGeneration)."""
        return hub.save_seq2seq(directory, self.model.config, self.model.params, self.preproc.tokenizer,
                                generation=getattr(self.model, "generation", {}) or None)
