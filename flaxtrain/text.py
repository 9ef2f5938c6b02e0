"""`flaxtrain.text`: the text-task namespace users type, as in `ktrain.text`."""

from flaxtrain.api.model import get_model, text_classifier
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
    "LoadedData",
    "TextDataset",
    "TextPreprocessor",
    "load_data",
    "texts_from_array",
    "texts_from_csv",
    "texts_from_df",
    "texts_from_folder",
]
