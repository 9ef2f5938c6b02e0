"""Masked-LM pretraining (Devlin et al. 2019) of the BERT family: dynamic masking per batch drawn,
cross entropy and accuracy over the chosen positions only, fill-mask predictions."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import hub, ops
from flaxtrain.data.lm import LMDataset, LMPreprocessor, expand_files
from flaxtrain.errors import FlaxtrainError
from flaxtrain.tasks.base import Predictor, Task, TaskModel, mean_eval_loss
from flaxtrain.train import loop

Batch = dict[str, jax.Array]
TOP_K = 5  # candidates per position the predict function returns


def mask_tokens(batch: dict[str, np.ndarray], preproc: LMPreprocessor, rng: np.random.Generator,
                continuation: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """BERT's dynamic masking of a batch of rows: each real, non-special token is chosen with
    probability `mlm_probability` (with `continuation`, whole words are: a word's pieces go together);
    of the chosen, 80% become [MASK], 10% a random token, 10% stay. 'labels' holds the original id
    at chosen positions and -1 elsewhere."""
    ids = batch["input_ids"]
    real = (batch["segment_ids"] > 0) & ~np.isin(ids, preproc.special_ids) & (batch["weight"][:, None] > 0)
    if continuation is None:
        chosen = real & (rng.random(ids.shape) < preproc.mlm_probability)
    else:  # one draw per word: a word starts at every piece that does not continue one ('##ing')
        word = np.cumsum(~continuation[ids], axis=1)  # word number of each piece within its row
        picked = rng.random((ids.shape[0], ids.shape[1] + 1)) < preproc.mlm_probability
        chosen = real & np.take_along_axis(picked, word, axis=1)
    draw = rng.random(ids.shape)
    masked = np.where(chosen & (draw < 0.8), preproc.mask_id, ids)
    random = chosen & (draw >= 0.8) & (draw < 0.9)
    masked = np.where(random, rng.integers(0, preproc.vocab_size, ids.shape), masked).astype(np.int32)
    return {**batch, "input_ids": masked, "labels": np.where(chosen, ids, -1).astype(np.int32)}


def masked_lm_loss(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch, *, rngs: dict[str, jax.Array],
                   deterministic: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross entropy of the original token at each chosen position of batch {'input_ids' (masked),
    'segment_ids', 'labels' (-1: not chosen), 'weight'}; sums count chosen tokens ('correct': argmax
    right). A batch without chosen tokens sums to 0 (no NaN)."""
    logits = apply_fn({"params": params}, batch["input_ids"], segment_ids=batch["segment_ids"],
                      deterministic=deterministic, rngs=rngs)
    labels = batch["labels"]
    chosen = ((labels >= 0) & (batch["weight"][:, None] > 0)).astype(jnp.float32)
    loss_sum = jnp.sum(ops.token_cross_entropy(logits, labels) * chosen)
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32) * chosen)
    return loss_sum, {"loss_sum": loss_sum, "count": jnp.sum(chosen), "correct": correct}


def predict_top_tokens(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch) -> jax.Array:
    """[b, t, TOP_K, 2] float32: the log-probabilities and ids (as floats) of each position's best tokens."""
    logits = apply_fn({"params": params}, batch["input_ids"], segment_ids=batch["segment_ids"], deterministic=True)
    values, ids = jax.lax.top_k(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), TOP_K)
    return jnp.stack([values, ids.astype(jnp.float32)], axis=-1)


class MaskedLMPredictor(Predictor):
    """Fills masks: `predict("The capital of France is [MASK].")` -> for each [MASK], the best
    (token, probability) pairs, best first (one list per mask)."""

    def top_tokens(self, texts: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray]:
        """(token ids of each text, [n, t, TOP_K, 2] best log-probabilities and ids at every position)."""
        p = self.preproc
        encoded = [ids[: p.row_length] for ids in p.encode_documents(texts)]
        out = np.zeros((len(texts), p.row_length, TOP_K, 2), np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = encoded[start:start + self.batch_size]
            ids = np.full((self.batch_size, p.row_length), p.pad_id, np.int32)
            segments = np.zeros_like(ids)
            for r, row in enumerate(chunk):
                ids[r, : len(row)], segments[r, : len(row)] = row, 1
            found = self.model.steps.predict(self.model.params, {"input_ids": ids, "segment_ids": segments})
            out[start:start + len(chunk)] = np.asarray(found)[: len(chunk)]
        return encoded, out

    def predict(self, texts: str | Sequence[str], top_k: int = TOP_K, return_proba: bool = False) -> Any:
        if return_proba:
            raise FlaxtrainError("a masked-LM model fills masks with scored tokens: drop return_proba")
        if not 1 <= top_k <= TOP_K:
            raise FlaxtrainError(f"top_k must lie between 1 and {TOP_K}, got {top_k}")
        single = isinstance(texts, str)
        encoded, best = self.top_tokens([texts] if single else list(texts))
        tokenizer = self.preproc.tokenizer
        results = []
        for ids, rows in zip(encoded, best):
            results.append([[(tokenizer.id_to_token(int(i)), float(np.exp(v))) for v, i in rows[t, :top_k]]
                            for t in np.flatnonzero(ids == self.preproc.mask_id)])
        return results[0] if single else results

    def evaluate(self, files: Any, max_documents: int | None = None) -> tuple[float, dict[str, float]]:
        """(mean masked-token loss, {'accuracy', 'perplexity'}) on text files (masks drawn with seed 0)."""
        data = LMDataset(expand_files(files, "files"), self.preproc, max_documents=max_documents)
        metrics = self.task.scores(self.model, data, self.batch_size)
        return metrics["loss"], {k: v for k, v in metrics.items() if k != "loss"}

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes the model in Hugging Face format (transformers' *ForMaskedLM, head tied to the embeddings)."""
        return hub.save_pretrained(directory, self.model.config.encoder, self.model.params, self.preproc.tokenizer,
                                   task="mlm")


class MaskedLanguageModeling(Task):
    name = "masked_lm"
    family = "masked_lm"
    dataset = LMDataset
    preprocessor = LMPreprocessor
    predictor = MaskedLMPredictor
    loaders = "lm_from_files(..., objective='mlm')"

    def matches(self, preproc: Any) -> bool:
        return getattr(preproc, "objective", "mlm") == "mlm"

    def loss_fn(self, model: TaskModel) -> Callable[..., Any]:
        return masked_lm_loss

    def predict_fn(self, model: TaskModel) -> Callable[..., Any]:
        return predict_top_tokens

    def batches(self, data: LMDataset, *, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                process_index: int = 0, process_count: int = 1) -> tuple[Iterator[dict[str, np.ndarray]], int]:
        """The stream's rows with fresh masks for every batch drawn: the masks of batch i of an epoch
        depend on (seed, epoch, process, i) alone, so a resumed run masks as the uninterrupted one."""
        rows, count = data.batches(batch_size=batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                                   process_index=process_index, process_count=process_count)
        continuation = data.preproc.continuation_table() if data.preproc.whole_word_masking else None

        def masked() -> Iterator[dict[str, np.ndarray]]:
            for i, batch in enumerate(rows):
                rng = np.random.default_rng([seed, epoch, process_index, i])
                yield mask_tokens(batch, data.preproc, rng, continuation)

        return masked(), count

    def scores(self, model: TaskModel, data: LMDataset, batch_size: int) -> dict[str, float]:
        """{'loss', 'accuracy', 'perplexity'} of the masked tokens of `data` (masks drawn with seed 0)."""
        batches, count = self.batches(data, batch_size=batch_size)
        sums = mean_eval_loss(model, batches, count)
        return {"loss": sums["loss"], "accuracy": sums["acc"], "perplexity": math.exp(min(sums["loss"], 700.0))}

    def report(self, predictor: MaskedLMPredictor, data: LMDataset, *, class_names: Sequence[Any] | None,
               print_report: bool) -> dict[str, float]:
        """Masked-token loss, accuracy and perplexity."""
        metrics = self.scores(predictor.model, data, predictor.batch_size)
        if print_report:
            print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    def top_losses(self, predictor: MaskedLMPredictor, data: LMDataset, losses: np.ndarray, n: int) -> list[tuple]:
        """(row index, mean masked-token loss, the row's text, the row with its masks filled by the model)."""
        order = [int(i) for i in np.argsort(-losses, kind="stable")[:n]]
        wanted = set(order)
        batches, _ = self.batches(data, batch_size=predictor.batch_size)
        found: dict[int, np.ndarray] = {}
        for batch in batches:
            for r, index in enumerate(batch["index"]):
                if int(index) in wanted and batch["weight"][r] > 0:
                    found[int(index)] = np.where(batch["labels"][r] >= 0, batch["labels"][r], batch["input_ids"][r])
        tokenizer = predictor.preproc.tokenizer
        return [(i, float(losses[i]), tokenizer.decode(found[i].tolist()), None) for i in order if i in found]

    def format_predictions(self, predictor: MaskedLMPredictor, texts: list[str]) -> list[str]:
        """The best token for each [MASK] of each text."""
        return [" ".join(best[0][0] for best in row) + f"\t{text}" for row, text in zip(predictor.predict(texts), texts)]
