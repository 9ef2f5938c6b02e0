"""Extractive question answering: `qa_model` and its Predictor (`predict(question, context)`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flaxtrain import models
from flaxtrain.api.model import Model, init_model_params, load_encoder, with_pretrained_head
from flaxtrain.api.predictor import Predictor
from flaxtrain.data.qa import QADataset, QAPreprocessor, examples_from_arrays
from flaxtrain.errors import FlaxtrainError
from flaxtrain.eval import squad_metrics
from flaxtrain.eval.spans import best_span
from flaxtrain.train import loop


def qa_model(name_or_path: str, preproc: QAPreprocessor, *, seed: int = 0, verbose: int = 1) -> Model:
    """A span start/end head on a pretrained encoder ('minilm', 'bert' or a Hugging Face-format
    checkpoint path of any supported family); a checkpoint fine-tuned by *ForQuestionAnswering keeps
    its head. Gives `preproc` the encoder's tokenizer (datasets re-window on next use)."""
    if not isinstance(preproc, QAPreprocessor):
        raise FlaxtrainError(f"qa_model needs the preprocessor of qa_from_squad / qa_from_array, not {type(preproc).__name__}")
    encoder_config, pretrained, tokenizer, pad_id = load_encoder(name_or_path, task="span", maxlen=preproc.maxlen)
    preproc.tokenizer, preproc.pad_id = tokenizer, pad_id
    config = models.make_config("qa", encoder=encoder_config)
    params = with_pretrained_head(init_model_params(models.build_model("qa", config), seed), pretrained,
                                  checkpoint=str(name_or_path), head="question-answering", verbose=bool(verbose))
    model = Model("qa", config, params, preproc)
    if verbose:
        print(repr(model))
    return model


class QAPredictor(Predictor):
    """Answers questions from contexts: `predict(question, context)` ->
    {'answer': text, 'start': char offset, 'end': char offset, 'score': probability}."""

    def __init__(self, model: Model, preproc: Any = None, batch_size: int = 32, *, n_best: int = 20,
                 allow_no_answer: bool = False):
        super().__init__(model, preproc, batch_size)
        self.n_best = n_best
        self.allow_no_answer = allow_no_answer

    def answers(self, data: QADataset) -> list[dict[str, Any]]:
        """The best answer of every example of `data`, in order."""
        windows = data.windows
        batches, count = data.batches(batch_size=self.batch_size)
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
            from flaxtrain.api.tagging import _eval_state

            loss = loop.summarize(loop.evaluate(_eval_state(self.model), labelled.batches(batch_size=self.batch_size)[0],
                                                steps=self.model.steps, verbose=False))["loss"]
        return loss, squad_metrics(predicted, references)
