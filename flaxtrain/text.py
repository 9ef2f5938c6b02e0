"""`flaxtrain.text`: the text-task namespace users type, as in `ktrain.text`."""

from flaxtrain.api.model import get_model, text_classifier
from flaxtrain.api.transformer import Transformer
from flaxtrain.data import (
    LoadedData,
    TextDataset,
    TextPreprocessor,
    load_data,
    texts_from_array,
    texts_from_csv,
    texts_from_df,
    texts_from_folder,
)

__all__ = [
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
