"""What the pretraining objectives share: a stream's packed rows turned into the objective's batch each
time one is drawn, with randomness keyed by (seed, epoch, process, batch number) alone, so a resumed run
sees the uninterrupted one's batches; scored as loss, accuracy and perplexity of the predicted tokens."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from flaxtrain.data.documents import TextFiles
from flaxtrain.data.lm import LMDataset, LMPreprocessor
from flaxtrain.tasks.base import Predictor, Task, TaskModel, mean_eval_loss


class StreamedPredictor(Predictor):
    """A pretraining objective's predictor: `evaluate(files)` scores text files."""

    def evaluate(self, files: Any, max_documents: int | None = None) -> tuple[float, dict[str, float]]:
        """(mean loss of the predicted tokens, {'accuracy', 'perplexity'}) on text files (randomness of seed 0)."""
        data = LMDataset(TextFiles.of(files, "files"), self.preproc, max_documents=max_documents)
        metrics = self.task.scores(self.model, data, self.batch_size)
        return metrics["loss"], {k: v for k, v in metrics.items() if k != "loss"}


class StreamedObjective(Task):
    """A task on `lm_from_files` streams: subclasses give `objective_batch` (and `prepare`)."""

    dataset = LMDataset
    preprocessor = LMPreprocessor

    def prepare(self, data: LMDataset) -> Any:
        """What `objective_batch` needs of the stream, computed once per epoch (None by default)."""
        return None

    def objective_batch(self, batch: dict[str, np.ndarray], preproc: LMPreprocessor, rng: np.random.Generator,
                        prepared: Any) -> dict[str, np.ndarray]:
        """The step's fields of one batch of packed rows."""
        raise NotImplementedError

    def batches(self, data: LMDataset, *, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                process_index: int = 0, process_count: int = 1) -> tuple[Iterator[dict[str, np.ndarray]], int]:
        prepared = self.prepare(data)
        rows, count = data.batches(batch_size=batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                                   process_index=process_index, process_count=process_count)

        def drawn() -> Iterator[dict[str, np.ndarray]]:
            for i, batch in enumerate(rows):
                yield self.objective_batch(batch, data.preproc, np.random.default_rng([seed, epoch, process_index, i]),
                                           prepared)

        return drawn(), count

    def scores(self, model: TaskModel, data: LMDataset, batch_size: int) -> dict[str, float]:
        """{'loss', 'accuracy', 'perplexity'} of the predicted tokens of `data` (randomness of seed 0)."""
        batches, count = self.batches(data, batch_size=batch_size)
        sums = mean_eval_loss(model, batches, count)
        return {"loss": sums["loss"], "accuracy": sums["acc"], "perplexity": math.exp(min(sums["loss"], 700.0))}

    def report(self, predictor: Predictor, data: LMDataset, *, class_names: Sequence[Any] | None,
               print_report: bool) -> dict[str, float]:
        """Loss, accuracy and perplexity of the predicted tokens."""
        metrics = self.scores(predictor.model, data, predictor.batch_size)
        if print_report:
            print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    def worst_rows(self, predictor: Predictor, data: LMDataset, losses: np.ndarray, n: int) -> list[tuple[int, dict]]:
        """(row index, that row's fields as the step saw them) of the `n` highest `losses`, worst first."""
        order = [int(i) for i in np.argsort(-losses, kind="stable")[:n]]
        wanted, found = set(order), {}
        for batch in self.batches(data, batch_size=predictor.batch_size)[0]:
            for r, index in enumerate(batch["index"]):
                if int(index) in wanted and batch["weight"][r] > 0:
                    found[int(index)] = {k: v[r] for k, v in batch.items()}
        return [(i, found[i]) for i in order if i in found]
