"""`flaxtrain.text`: the text-task namespace users type, as in `ktrain.text`."""

from flaxtrain.api.model import get_model, text_classifier
from flaxtrain.api.qa import qa_model
from flaxtrain.api.tagging import sequence_tagger
from flaxtrain.api.transformer import Transformer
from flaxtrain.data import (
    EntityPreprocessor,
    LoadedData,
    QADataset,
    QAPreprocessor,
    TaggedDataset,
    TextDataset,
    TextPreprocessor,
    entities_from_array,
    entities_from_conll2003,
    entities_from_df,
    entities_from_txt,
    load_data,
    qa_from_array,
    qa_from_squad,
    texts_from_array,
    texts_from_csv,
    texts_from_df,
    texts_from_folder,
)

__all__ = [
    "qa_model",
    "QADataset",
    "QAPreprocessor",
    "qa_from_array",
    "qa_from_squad",
    "sequence_tagger",
    "EntityPreprocessor",
    "TaggedDataset",
    "entities_from_array",
    "entities_from_conll2003",
    "entities_from_df",
    "entities_from_txt",
    "get_model",
    "text_classifier",
    "Transformer",
    "LoadedData",
    "TextDataset",
    "TextPreprocessor",
    "load_data",
    "texts_from_array",
    "texts_from_csv",
    "texts_from_df",
    "texts_from_folder",
]
