"""Text data: named sets, ktrain loaders, tokenizers, batching (numpy for in-memory sets, tf.data for streamed corpora)."""

from flaxtrain.data.dataset import TextDataset
from flaxtrain.data.entities import (
    EntityPreprocessor,
    TaggedDataset,
    entities_from_array,
    entities_from_conll2003,
    entities_from_df,
    entities_from_txt,
)
from flaxtrain.data.qa import QADataset, QAPreprocessor, qa_from_array, qa_from_squad
from flaxtrain.data.documents import TextFiles, TfdsText
from flaxtrain.data.lm import LMDataset, LMPreprocessor, lm_from_files, lm_from_tfds, train_tokenizer, wikitext2
from flaxtrain.data.loaders import LoadedData, load_data, texts_from_array, texts_from_csv, texts_from_df, texts_from_folder
from flaxtrain.data.pipeline import make_batches
from flaxtrain.data.preprocess import TextPreprocessor
from flaxtrain.data.seq2seq import (
    Seq2SeqDataset,
    Seq2SeqPreprocessor,
    bbc_headlines,
    django_translations,
    summarization_from_df,
    translation_from_pairs,
)

__all__ = [
    "LMDataset",
    "LMPreprocessor",
    "lm_from_files",
    "lm_from_tfds",
    "TextFiles",
    "TfdsText",
    "train_tokenizer",
    "wikitext2",
    "Seq2SeqDataset",
    "Seq2SeqPreprocessor",
    "bbc_headlines",
    "django_translations",
    "summarization_from_df",
    "translation_from_pairs",
    "QADataset",
    "QAPreprocessor",
    "qa_from_array",
    "qa_from_squad",
    "EntityPreprocessor",
    "TaggedDataset",
    "entities_from_array",
    "entities_from_conll2003",
    "entities_from_df",
    "entities_from_txt",
    "TextDataset",
    "LoadedData",
    "load_data",
    "texts_from_array",
    "texts_from_csv",
    "texts_from_df",
    "texts_from_folder",
    "make_batches",
    "TextPreprocessor",
]
