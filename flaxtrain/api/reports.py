"""The Learner's reports on validation data: top losses and the task's report (ktrain's names)."""

from __future__ import annotations

from typing import Any

import numpy as np

from flaxtrain import tasks
from flaxtrain.errors import FlaxtrainError


class Reports:
    """`top_losses`, `view_top_losses` and `validate` of the Learner (a mixin: it reads the learner's model,
    task and data)."""

    def top_losses(self, n: int = 4, val_data: Any = None) -> list[tuple[int, float, Any, Any]]:
        """The `n` validation examples with the highest loss, worst first, as
        (index, loss, true label, predicted label) — ktrain's top_losses, in the task's terms (tags,
        answers, generated text). Per-example losses are the model's own loss function vmapped over
        rows on the device."""
        data = val_data or self.val_data
        if data is None or not data.labelled:
            raise FlaxtrainError("no labelled validation data: pass val_data to get_learner or to top_losses")
        if n < 1:
            raise FlaxtrainError(f"n must be at least 1, got {n}")
        steps = self.model.steps
        losses = np.zeros(data.num_rows(), np.float32)
        batches, _ = self._batches(data, train=False, local=True)
        pending = [(b["index"], b["weight"], steps.example_losses(self.model.params, b)) for b in batches]
        for index, weight, values in pending:
            keep = weight > 0
            losses[index[keep]] = np.asarray(values)[keep]
        task = self.task
        return task.top_losses(self._predictor(), data, task.example_losses(data, losses), n)

    def _predictor(self) -> tasks.Predictor:
        return self.task.predictor(self.model, batch_size=self.eval_batch_size)

    def view_top_losses(self, n: int = 4, preproc: Any = None, val_data: Any = None) -> list[tuple]:
        """Prints the `n` worst validation examples (loss, true and predicted label, the text) and
        returns them as `top_losses` does. `preproc` is accepted for ktrain's signature; the texts
        come from the dataset itself."""
        data = val_data or self.val_data
        worst = self.top_losses(n, data)
        for index, loss, truth, predicted in worst:
            print("-" * 40)
            print(f"id {index} | loss {loss:.4f} | true {truth} | predicted {predicted}")
            text = data.text_of(index)
            if text is not None:
                print(text)
        return worst

    def validate(self, val_data: Any = None, class_names: list[Any] | None = None, print_report: bool = True) -> Any:
        """Prints and returns the task's report on labelled validation data: for a classifier a per-class
        precision/recall/F1 report, returning the confusion matrix (rows true); for regression
        {'mae', 'mse', 'rmse', 'r2'}; entity-level scores for a tagger; SQuAD's for QA; BLEU/chrF or
        ROUGE for generation."""
        data = val_data or self.val_data
        if data is None or not data.labelled:
            raise FlaxtrainError("no labelled validation data: pass val_data to get_learner or to validate")
        return self.task.report(self._predictor(), data, class_names=class_names, print_report=print_report)
