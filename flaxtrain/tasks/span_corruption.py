"""T5's span-corruption pretraining (Raffel et al. 2020): noise spans of packed rows replaced by
sentinels in the inputs, the dropped spans (each after its sentinel) as the targets."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import hub, ops
from flaxtrain.data.lm import LMDataset, LMPreprocessor, corrupted_lengths
from flaxtrain.errors import FlaxtrainError
from flaxtrain.eval import decode
from flaxtrain.tasks.base import TaskModel
from flaxtrain.tasks.streamed import StreamedObjective, StreamedPredictor

Batch = dict[str, jax.Array]


def noise_mask(length: int, noise: int, spans: int, rng: np.random.Generator) -> np.ndarray:
    """[length] bool: `noise` tokens in `spans` random spans, alternating with as many non-noise spans
    (non-noise first), every span at least one token long."""

    def parts(total: int) -> np.ndarray:  # `spans` positive lengths summing to `total`
        cuts = np.sort(rng.choice(total - 1, spans - 1, replace=False)) + 1
        return np.diff(np.concatenate([[0], cuts, [total]]))

    lengths = np.stack([parts(length - noise), parts(noise)], axis=1).reshape(-1)
    return np.repeat(np.arange(2 * spans) % 2 == 1, lengths)


def corrupt(ids: np.ndarray, segments: np.ndarray, preproc: LMPreprocessor, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One raw row -> inputs [maxlen] (noise spans replaced by <extra_id_0>, <extra_id_1>, ... and </s>)
    and targets [target_length] (each sentinel, then its span; </s>), with each token's document."""
    noise, spans, _, _ = corrupted_lengths(len(ids), preproc.noise_density, preproc.mean_span_length)
    is_noise = noise_mask(len(ids), noise, spans, rng)
    span_start = is_noise & ~np.concatenate([[False], is_noise[:-1]])
    span = np.cumsum(span_start) - 1  # noise span number of each token
    sentinels = (preproc.first_sentinel - np.arange(spans)).astype(np.int32)
    keep_input = ~is_noise | span_start
    inputs = np.where(span_start, sentinels[np.maximum(span, 0)], ids)[keep_input]
    input_segments = segments[keep_input]
    starts = np.flatnonzero(span_start)
    targets = np.insert(ids[is_noise], np.searchsorted(np.flatnonzero(is_noise), starts), sentinels)
    # A span's sentinel and tokens belong to the document the span starts in.
    target_segments = np.repeat(segments[starts], np.bincount(span[is_noise], minlength=spans) + 1)
    return {"input_ids": np.append(inputs, preproc.eos_id).astype(np.int32),
            "segment_ids": np.append(input_segments, input_segments[-1]).astype(np.int32),
            "labels": np.append(targets, preproc.eos_id).astype(np.int32),
            "decoder_segment_ids": np.append(target_segments, target_segments[-1]).astype(np.int32)}


def corrupt_batch(batch: dict[str, np.ndarray], preproc: LMPreprocessor, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The step's fields of a batch of raw rows; a row with padding (the stream's last) gets weight 0."""
    rows = [corrupt(ids, seg, preproc, rng) for ids, seg in zip(batch["input_ids"], np.maximum(batch["segment_ids"], 1))]
    out = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    out["decoder_input_ids"] = np.concatenate([np.full((len(rows), 1), preproc.pad_id, np.int32), out["labels"][:, :-1]],
                                              axis=1)
    full = np.all(batch["segment_ids"] > 0, axis=1)
    return {**out, "index": batch["index"], "weight": batch["weight"] * full.astype(np.float32)}


def span_corruption_loss(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch, *, rngs: dict[str, jax.Array],
                         deterministic: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross entropy of every target token (sentinels, spans and </s>) of packed rows; sums count tokens."""
    logits = apply_fn({"params": params}, batch["input_ids"], batch["decoder_input_ids"], segment_ids=batch["segment_ids"],
                      decoder_segment_ids=batch["decoder_segment_ids"], deterministic=deterministic, rngs=rngs)
    labels = batch["labels"]
    tokens = jnp.broadcast_to((batch["weight"] > 0)[:, None], labels.shape).astype(jnp.float32)
    loss_sum = jnp.sum(ops.token_cross_entropy(logits, labels) * tokens)
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32) * tokens)
    return loss_sum, {"loss_sum": loss_sum, "count": jnp.sum(tokens), "correct": correct}


def predict_targets(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch) -> jax.Array:
    """Teacher-forced best target ids [b, T] int32."""
    logits = apply_fn({"params": params}, batch["input_ids"], batch["decoder_input_ids"], segment_ids=batch["segment_ids"],
                      decoder_segment_ids=batch["decoder_segment_ids"], deterministic=True)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def generation(cfg: Any, preproc: Any, max_new_tokens: int | None = None, **settings: Any) -> decode.GenerationConfig:
    """The sentinel filler's decoding settings: greedy, up to the preprocessor's target length."""
    return decode.generation_config({"decoder_start_token_id": cfg.decoder_start_id, "eos_token_id": cfg.eos_id,
                                     "pad_token_id": cfg.pad_id,
                                     "max_new_tokens": max_new_tokens or preproc.target_length}, **settings)


class SpanCorruptionPredictor(StreamedPredictor):
    """Fills sentinels: `predict("The <extra_id_0> walks in <extra_id_1> park")` -> the generated targets
    ('<extra_id_0> cute dog <extra_id_1> the ...'), greedy unless generation settings say otherwise."""

    def predict(self, texts: str | Sequence[str], max_new_tokens: int | None = None, **settings: Any) -> Any:
        p, cfg = self.preproc, self.model.config
        single = isinstance(texts, str)
        encoded = [row[: p.maxlen] for row in p.encode_documents([texts] if single else list(texts))]
        g = generation(cfg, p, max_new_tokens, **settings)
        generate = decode.compiled_generate(self.model.module, g)
        ids = np.full((len(encoded), p.maxlen), p.pad_id, np.int32)
        for r, row in enumerate(encoded):
            ids[r, : len(row)] = row
        seqs, _ = generate(self.model.params, jnp.asarray(ids), jnp.asarray(ids != p.pad_id, jnp.int32), jax.random.key(0))
        rows = decode.finish(np.asarray(seqs)[:, 1:], g)
        out = p.tokenizer.decode_batch([[int(t) for t in row if t != p.pad_id] for row in rows], skip_special_tokens=False)
        return out[0] if single else out

    def _save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes the model in Hugging Face format (transformers' T5ForConditionalGeneration)."""
        return hub.save_seq2seq(directory, self.model.config, self.model.params, self.preproc.tokenizer)


class SpanCorruption(StreamedObjective):
    """Fresh noise spans for every batch drawn (`StreamedObjective`: keyed by seed, epoch, process and batch)."""

    name = "span_corruption"
    family = "span_corruption"
    predictor = SpanCorruptionPredictor
    loaders = "lm_from_files(..., objective='span_corruption')"

    def matches(self, preproc: Any) -> bool:
        return getattr(preproc, "objective", None) == "span_corruption"

    def loss_fn(self, model: TaskModel) -> Callable[..., Any]:
        return span_corruption_loss

    def predict_fn(self, model: TaskModel) -> Callable[..., Any]:
        return predict_targets

    def prepare(self, data: LMDataset) -> None:
        if not data.packing:
            raise FlaxtrainError("span corruption corrupts full rows: build the data with lm_from_files(..., packing=True)")

    def objective_batch(self, batch: dict[str, np.ndarray], preproc: LMPreprocessor, rng: np.random.Generator,
                        prepared: None) -> dict[str, np.ndarray]:
        return corrupt_batch(batch, preproc, rng)

    # The sentinel filler exports as a translation model does: the whole greedy loop ('jax', 'saved_model'),
    # or the encoder with the first step and one cached decoder step ('onnx').
    export_formats = ("jax", "onnx", "saved_model", "tflite")

    def export_outputs(self, model: TaskModel) -> tuple[Callable[..., tuple[jax.Array, ...]], tuple[str, ...]]:
        """'sequences' [b, target_length] int32 of token ids [b, L] (one text per row, padded with the pad id):
        the sentinels and their fills as `predict` generates them, before detokenizing."""
        return decode.serving_function(model.module, generation(model.config, model.preproc)), ("sequences",)

    def export_steps(self, model: TaskModel, format: str = "onnx"
                     ) -> tuple[Callable[..., Any], Callable[..., Any], decode.GenerationConfig]:
        """(prefill, step, settings) of eval/decode.py's `step_functions`."""
        g = generation(model.config, model.preproc)
        return (*decode.step_functions(model.module, g, format), g)

    def export_sample(self, predictor: SpanCorruptionPredictor, texts: Sequence[Any] | None) -> dict[str, np.ndarray]:
        """The texts encoded as `predict` encodes them (default: rows of random token ids of different lengths)."""
        from flaxtrain.export import pad_rows

        p = predictor.preproc
        if texts:
            rows = [ids[: p.maxlen] for ids in p.encode_documents(list(texts))]
        else:
            rng = np.random.default_rng(0)
            rows = [rng.integers(1, p.tokenizer.get_vocab_size(), size=n).astype(np.int32)
                    for n in np.linspace(4, min(p.maxlen, 32), 6).astype(int)]
        return {"input_ids": pad_rows(rows, p.pad_id)}

    def top_losses(self, predictor: SpanCorruptionPredictor, data: LMDataset, losses: np.ndarray, n: int) -> list[tuple]:
        """(row index, mean target-token loss, the corrupted input, its targets)."""
        decode_ids = predictor.preproc.tokenizer.decode
        return [(i, float(losses[i]), decode_ids(row["input_ids"].tolist(), skip_special_tokens=False),
                 decode_ids(row["labels"].tolist(), skip_special_tokens=False))
                for i, row in self.worst_rows(predictor, data, losses, n)]
