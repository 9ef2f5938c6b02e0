"""Tasks: one module per task (its loss and predict functions, report, top-loss view, predictor and
saved section), one registry, and the `Task` / `Predictor` bases they share.

    module                       task                  dataset          predictor
    tasks/classification.py      text_classification   TextDataset      ClassifierPredictor
    tasks/regression.py          text_regression       TextDataset      RegressorPredictor
    tasks/tagging.py             sequence_tagging      TaggedDataset    TaggerPredictor
    tasks/qa.py                  question_answering    QADataset        QAPredictor
    tasks/seq2seq.py             seq2seq               Seq2SeqDataset   Seq2SeqPredictor
    tasks/masked_lm.py           masked_lm             LMDataset        MaskedLMPredictor
    tasks/span_corruption.py     span_corruption       LMDataset        SpanCorruptionPredictor
"""

from flaxtrain.tasks.base import Predictor, Task, TaskModel, as_preprocessor
from flaxtrain.tasks.registry import TASKS, dataset_types, for_data, for_model, named, preprocessor_type

__all__ = ["Predictor", "Task", "TaskModel", "as_preprocessor", "TASKS", "dataset_types", "for_data", "for_model", "named",
           "preprocessor_type"]
