"""Extractive question answering: start/end cross entropy per window, answer spans out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain.data.qa import QADataset, QAPreprocessor, examples_from_arrays
from flaxtrain.errors import FlaxtrainError
from flaxtrain.eval.explanation import Explanation
from flaxtrain.eval import squad_metrics
from flaxtrain.eval.spans import best_span
from flaxtrain.tasks.base import Predictor, Task, TaskModel, mean_eval_loss
from flaxtrain.train import loop

Batch = dict[str, jax.Array]
SAMPLE_PAIRS = [
    ("Who wrote it?", "The novel was written by Mary Shelley in 1818."),
    ("Where is the tower?", "The Eiffel Tower stands on the Champ de Mars in Paris, France, and was finished in 1889 "
                            "for the World's Fair."),
    ("When?", "It rained."),
]


def span_loss(
    apply_fn: Callable[..., jax.Array], params: Any, batch: Batch, *, rngs: dict[str, jax.Array], deterministic: bool
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Extractive QA: the mean of the start and end cross entropies over each window's tokens (padding
    excluded) on batch {'input_ids', 'token_type_ids', 'attention_mask', 'label' [b, 2] (start, end),
    'weight'}; 'correct' counts windows whose start and end are both right."""
    start, end = apply_fn({"params": params}, batch["input_ids"], token_type_ids=batch["token_type_ids"],
                          attention_mask=batch["attention_mask"], deterministic=deterministic, rngs=rngs)
    valid = batch["attention_mask"] > 0
    weight = batch["weight"]
    losses, hits = [], []
    for logits, target in ((start, batch["label"][:, 0]), (end, batch["label"][:, 1])):
        logits = jnp.where(valid, logits.astype(jnp.float32), -1e9)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        losses.append(-jnp.take_along_axis(log_probs, target[:, None], axis=-1)[:, 0])
        hits.append(jnp.argmax(logits, axis=-1) == target)
    loss_sum = jnp.sum(0.5 * (losses[0] + losses[1]) * weight)
    correct = jnp.sum((hits[0] & hits[1]).astype(jnp.float32) * weight)
    return loss_sum, {"loss_sum": loss_sum, "count": jnp.sum(weight), "correct": correct}


def predict_span_logits(apply_fn: Callable[..., jax.Array], params: Any, batch: Batch) -> jax.Array:
    """Float32 [b, L, 2] start and end logits of every window token (decoding runs on the host)."""
    start, end = apply_fn({"params": params}, batch["input_ids"], token_type_ids=batch["token_type_ids"],
                          attention_mask=batch["attention_mask"], deterministic=True)
    return jnp.stack([start, end], axis=-1).astype(jnp.float32)


class QAPredictor(Predictor):
    """Answers questions from contexts: `predict(question, context)` ->
    {'answer': text, 'start': char offset, 'end': char offset, 'score': probability}."""

    hf_head = "span"

    def __init__(self, model: TaskModel, preproc: Any = None, batch_size: int = 32, *, n_best: int = 20,
                 allow_no_answer: bool = False):
        super().__init__(model, preproc, batch_size)
        self.n_best = n_best
        self.allow_no_answer = allow_no_answer

    def answers(self, data: QADataset) -> list[dict[str, Any]]:
        """The best answer of every example of `data`, in order."""
        windows = data.windows
        batches, count = data.batches(batch_size=self.rows_per_batch(len(windows.input_ids)))
        logits = loop.predict(self.model.params, batches, steps=self.model.steps, num_examples=len(windows.input_ids),
                              num_batches=count)  # [windows, L, 2]
        by_example: list[list[int]] = [[] for _ in data.examples]
        for w, e in enumerate(windows.example):
            by_example[int(e)].append(w)
        return [
            best_span([logits[w] for w in ws], [windows.offsets[w] for w in ws], example.context, n_best=self.n_best,
                      max_answer_length=self.preproc.max_answer_length, allow_no_answer=self.allow_no_answer)
            for example, ws in zip(data.examples, by_example)
        ]

    def predict(self, questions: str | Sequence[str] | Sequence[tuple[str, str]], contexts: str | Sequence[str] | None = None,
                return_proba: bool = False) -> Any:
        """The answer dict of one (question, context), or a list of them for lists of questions and
        contexts (or one list of (question, context) pairs)."""
        if return_proba:
            raise FlaxtrainError("a QA model returns answer spans with a score, not class probabilities: drop return_proba")
        single = isinstance(questions, str)
        if single:
            if not isinstance(contexts, str):
                raise FlaxtrainError("pass a context (a string) with the question: predict(question, context)")
            questions, contexts = [questions], [contexts]
        elif contexts is None:
            pairs = list(questions)
            if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
                raise FlaxtrainError("pass predict(questions, contexts) or a list of (question, context) pairs")
            questions, contexts = [q for q, _ in pairs], [c for _, c in pairs]
        data = QADataset(examples_from_arrays(list(questions), list(contexts), None, None, "questions"), self.preproc)
        found = self.answers(data)
        return found[0] if single else found

    def predict_proba(self, *args: Any) -> np.ndarray:
        raise FlaxtrainError("a QA model returns answer spans with a score: use predict(question, context)")

    def explain(self, question: str, context: str, *, steps: int = 64) -> Explanation:
        """Per-token attributions (integrated gradients, as ClassifierPredictor.explain) over the question and
        context toward the answer the model picks: p(start) x p(end) of its span, each a softmax over the
        window's tokens. The explanation's `target` is the answer text. Contexts longer than one window
        (maxlen) are refused: the answer's probability is then spread over windows."""
        if not isinstance(question, str) or not isinstance(context, str):
            raise FlaxtrainError("explain takes one question and its context (two strings): call it once per pair")
        data = QADataset(examples_from_arrays([question], [context], None, None, "questions"), self.preproc)
        windows = data.windows
        if len(windows.input_ids) != 1:
            raise FlaxtrainError(f"the context fills {len(windows.input_ids)} windows of {self.preproc.maxlen} word pieces: "
                                 "explain a shorter context (one window)")
        answer = self.answers(data)[0]
        offsets = np.asarray(windows.offsets[0])
        starts = np.flatnonzero(offsets[:, 0] == answer["start"])
        ends = np.flatnonzero(offsets[:, 1] == answer["end"])
        if not answer["answer"] or not len(starts) or not len(ends):
            raise FlaxtrainError("the model gives no answer span in this context: there is nothing to explain")
        ids = np.asarray(windows.input_ids[0])
        length = len(ids)
        inputs = {"input_ids": ids[None], "token_type_ids": np.asarray(windows.token_type_ids[0])[None],
                  "attention_mask": np.ones((1, length), np.int32)}
        tokenizer = self.preproc.tokenizer
        tokens = [tokenizer.id_to_token(int(i)) or str(int(i)) for i in ids]
        target = int(starts[0]) * length + int(ends[-1])
        return self._attribute(inputs, length=length, tokens=tokens, target=target, name=answer["answer"],
                               score=self._explain_score, steps=steps)

    @staticmethod
    def _explain_score(outputs: Any, target: jax.Array) -> jax.Array:
        start, end = outputs  # [1, L] logits each; target = start index * L + end index
        length = start.shape[-1]
        p_start = jax.nn.softmax(start[0].astype(jnp.float32))[target // length]
        return p_start * jax.nn.softmax(end[0].astype(jnp.float32))[target % length]

    def evaluate(self, questions: Sequence[str], contexts: Sequence[str], answers: Sequence[Any],
                 answer_starts: Sequence[Any] | None = None) -> tuple[float, dict[str, float]]:
        """(mean window loss, {'exact_match', 'f1'}) — SQuAD's metrics in percent; an answer may be a
        list of accepted answers. Without answer_starts the loss is not computed (nan)."""
        references = [[a] if isinstance(a, str) else list(a or []) for a in answers]
        data = QADataset(examples_from_arrays(list(questions), list(contexts), None, None, "questions"), self.preproc)
        predicted = [a["answer"] for a in self.answers(data)]
        loss = float("nan")
        if answer_starts is not None:
            labelled = QADataset(examples_from_arrays(list(questions), list(contexts), answers, answer_starts,
                                                      "questions"), self.preproc)
            loss = mean_eval_loss(self.model, labelled.batches(batch_size=self.batch_size)[0])["loss"]
        return loss, squad_metrics(predicted, references)


class QuestionAnswering(Task):
    name = "question_answering"
    family = "question_answering"
    dataset = QADataset
    preprocessor = QAPreprocessor
    predictor = QAPredictor
    loaders = "qa_from_squad or qa_from_array"

    def loss_fn(self, model: TaskModel) -> Callable[..., Any]:
        return span_loss

    def predict_fn(self, model: TaskModel) -> Callable[..., Any]:
        return predict_span_logits

    export_inputs = ("input_ids", "token_type_ids", "attention_mask")
    sample_pairs = SAMPLE_PAIRS  # the export's default parity sample

    def export_outputs(self, model: TaskModel) -> tuple[Callable[..., tuple[jax.Array, ...]], tuple[str, ...]]:
        """'start_logits' and 'end_logits' [b, L] float32 of question-context windows [b, L]; choosing the
        span (offsets, n-best, maximum length) stays with the caller, as in QAPredictor.answers."""
        apply_fn = model.module.apply

        def serving(params: Any, input_ids: jax.Array, token_type_ids: jax.Array, attention_mask: jax.Array
                    ) -> tuple[jax.Array, ...]:
            logits = predict_span_logits(apply_fn, params, {"input_ids": input_ids, "token_type_ids": token_type_ids,
                                                            "attention_mask": attention_mask})
            return logits[..., 0], logits[..., 1]

        return serving, ("start_logits", "end_logits")

    def export_sample(self, predictor: QAPredictor, texts: Sequence[Any] | None) -> dict[str, np.ndarray]:
        """The windows of (question, context) pairs (default: a few of different lengths)."""
        from flaxtrain.export import pad_rows

        pairs = list(texts) if texts else self.sample_pairs
        if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
            raise FlaxtrainError("a QA model's export sample is (question, context) pairs: pass texts=[(q, c), ...]")
        data = QADataset(examples_from_arrays([q for q, _ in pairs], [c for _, c in pairs], None, None, "texts"),
                         predictor.preproc)
        w = data.windows
        return {"input_ids": pad_rows(w.input_ids, predictor.preproc.pad_id),
                "token_type_ids": pad_rows(w.token_type_ids, 0),
                "attention_mask": pad_rows([np.ones(len(x), np.int32) for x in w.input_ids], 0)}

    def example_losses(self, data: QADataset, row_losses: np.ndarray) -> np.ndarray:
        """A question's loss: its worst window's."""
        per_example = np.full(len(data), -np.inf, np.float32)
        np.maximum.at(per_example, data.windows.example, row_losses)
        return per_example

    def report(self, predictor: QAPredictor, data: QADataset, *, class_names: Sequence[Any] | None,
               print_report: bool) -> dict[str, float]:
        """SQuAD exact match and F1 of the decoded answers."""
        predicted = [a["answer"] for a in predictor.answers(data)]
        metrics = squad_metrics(predicted, [list(e.answers) for e in data.examples])
        if print_report:
            print("  ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
        return metrics

    def top_losses(self, predictor: QAPredictor, data: QADataset, losses: np.ndarray, n: int) -> list[tuple]:
        """(index, loss, first true answer, predicted answer)."""
        order = np.argsort(-losses, kind="stable")[:n]
        found = predictor.answers(QADataset([data.examples[i] for i in order], data.preproc))
        return [(int(i), float(losses[i]), (data.examples[i].answers or ("",))[0], a["answer"])
                for i, a in zip(order, found)]

    def format_predictions(self, predictor: QAPredictor, texts: list[str]) -> list[str]:
        raise FlaxtrainError("a QA model answers a question from a context: use predictor.predict(question, context) "
                             "in Python")
