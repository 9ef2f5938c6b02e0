"""Translation and summarization: teacher-forced cross entropy per target token, generated text out."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import hub, ops
from flaxtrain.data.seq2seq import Seq2SeqDataset, Seq2SeqPreprocessor
from flaxtrain.data.pipeline import used_buckets
from flaxtrain.errors import FlaxtrainError
from flaxtrain.eval import decode, generation_metrics
from flaxtrain.tasks.base import Predictor, Task, TaskModel, mean_eval_loss

Batch = dict[str, jax.Array]


def seq2seq_loss(
    apply_fn: Callable[..., jax.Array], params: Any, batch: Batch, *, rngs: dict[str, jax.Array], deterministic: bool,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Teacher forcing: cross entropy (optionally label-smoothed) of every target token given the
    source and the target so far, on batch {'input_ids', 'decoder_input_ids', 'labels' (-1: padding),
    'weight'}. Sums count target tokens; 'correct' counts tokens whose argmax is the label."""
    logits = apply_fn({"params": params}, batch["input_ids"], batch["decoder_input_ids"], deterministic=deterministic,
                      rngs=rngs)
    labels = batch["labels"]
    tokens = ((labels >= 0) & (batch["weight"][:, None] > 0)).astype(jnp.float32)
    losses = ops.token_cross_entropy(logits, labels, label_smoothing=label_smoothing)
    loss_sum = jnp.sum(losses * tokens)
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32) * tokens)
    return loss_sum, {"loss_sum": loss_sum, "count": jnp.sum(tokens), "correct": correct}


def predict_next_tokens(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch) -> jax.Array:
    """Teacher-forced best token ids [b, T] int32 (generation itself is eval/decode.py's)."""
    logits = apply_fn({"params": params}, batch["input_ids"], batch["decoder_input_ids"], deterministic=True)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


class Seq2SeqPredictor(Predictor):
    """Translates or summarises raw texts with jitted greedy / beam-search decoding.

    Decoding settings default to the checkpoint's generation config (when the model came from one),
    then to greedy decoding of up to max_target_length tokens; every `predict` argument overrides them.
    Batches are padded to a power of two up to the predictor's batch size and to the source buckets
    (sparse ones merged, as in training batches), so decoding compiles once per (rows, bucket, settings) and one text does not pay for a full batch.
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
        out = np.full((len(source_ids) * g.num_return_sequences, g.max_new_tokens), g.pad_id, np.int32)
        lengths = np.asarray([len(x) for x in source_ids])
        # the bucket lengths batching uses: a sparse one joins the next (each compiles the whole decoding loop)
        buckets = np.asarray(used_buckets(lengths, batch_size=self.batch_size, buckets=p.buckets))
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
        """Mean teacher-forced token loss of labelled pairs."""
        return mean_eval_loss(self.model, *data.batches(batch_size=self.batch_size))["loss"]

    def scores(self, data: Seq2SeqDataset, **settings: Any) -> dict[str, float]:
        predicted = self.preproc.decode(self.generate_ids(data.input_ids, self.generation_config(**settings)))
        return generation_metrics(self.preproc.task, predicted, data.targets)

    def _save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes a T5 / BART / Marian model in Hugging Face format (transformers' *ForConditionalGeneration)."""
        return hub.save_seq2seq(directory, self.model.config, self.model.params, self.preproc.tokenizer,
                                generation=self.model.generation or None)


class Seq2SeqGeneration(Task):
    name = "seq2seq"
    family = "seq2seq"
    dataset = Seq2SeqDataset
    preprocessor = Seq2SeqPreprocessor
    predictor = Seq2SeqPredictor
    loaders = "translation_from_pairs or summarization_from_df"

    def loss_fn(self, model: TaskModel) -> Callable[..., Any]:
        return functools.partial(seq2seq_loss, label_smoothing=model.label_smoothing)

    def predict_fn(self, model: TaskModel) -> Callable[..., Any]:
        return predict_next_tokens

    def report(self, predictor: Seq2SeqPredictor, data: Seq2SeqDataset, *, class_names: Sequence[Any] | None,
               print_report: bool) -> dict[str, float]:
        """BLEU and chrF (translation) or ROUGE (summarization) of the generated outputs."""
        metrics = predictor.scores(data)
        if print_report:
            print("  ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
        return metrics

    def top_losses(self, predictor: Seq2SeqPredictor, data: Seq2SeqDataset, losses: np.ndarray, n: int) -> list[tuple]:
        """(index, mean token loss, target, generated output)."""
        order = np.argsort(-losses, kind="stable")[:n]
        outputs = predictor.predict([data.sources[i] for i in order])
        return [(int(i), float(losses[i]), data.targets[i], o) for i, o in zip(order, outputs)]

    # 'onnx' holds greedy decoding as two graphs (the encoder with the first step, and one cached decoder
    # step) that the export's serve.py loops over; 'jax' and 'saved_model' hold the whole generation loop.
    export_formats = ("jax", "onnx", "saved_model", "tflite")

    def export_generation(self, model: TaskModel) -> decode.GenerationConfig:
        """The predictor's default decoding settings (greedy, or the checkpoint's beams and length penalty)."""
        cfg = model.config
        defaults = {"decoder_start_token_id": cfg.decoder_start_id, "eos_token_id": cfg.eos_id, "pad_token_id": cfg.pad_id,
                    "forced_bos_token_id": cfg.forced_bos_id, "forced_eos_token_id": cfg.forced_eos_id,
                    "max_new_tokens": model.preproc.max_target_length, **getattr(model, "generation", {})}
        return decode.generation_config(defaults)

    def export_outputs(self, model: TaskModel) -> tuple[Callable[..., tuple[jax.Array, ...]], tuple[str, ...]]:
        """'sequences' [b, max_new_tokens] int32 of source ids [b, L]: the whole generation loop with the
        predictor's default settings, as `predictor.predict` decodes them (eval/decode.py's serving_function)."""
        return decode.serving_function(model.module, self.export_generation(model)), ("sequences",)

    def export_steps(self, model: TaskModel, format: str = "onnx"
                     ) -> tuple[Callable[..., Any], Callable[..., Any], decode.GenerationConfig]:
        """(prefill, step, settings) of eval/decode.py's `step_functions` for the formats that hold one decoder
        step (a one-line error for a model that decodes with beams)."""
        g = self.export_generation(model)
        return (*decode.step_functions(model.module, g, format), g)

    def export_sample(self, predictor: Seq2SeqPredictor, texts: Sequence[Any] | None) -> dict[str, np.ndarray]:
        """The source texts encoded as `predict` encodes them (default: rows of random token ids)."""
        from flaxtrain.export import pad_rows

        p = predictor.preproc
        if texts:
            rows = p.encode_sources(list(texts))
        else:
            rng = np.random.default_rng(0)
            rows = [rng.integers(3, p.vocab_size, size=n).astype(np.int32) for n in (3, 6, 9, min(p.maxlen, 16))]
        return {"input_ids": pad_rows(rows, p.pad_id)}

    def folder_section(self, model: TaskModel) -> dict[str, Any]:
        """The decoding settings (transformers' names) the predictor defaults to."""
        return {"generation": model.generation}

    def restore_section(self, model: TaskModel, config: dict[str, Any]) -> None:
        model.generation = config.get("generation", {})
