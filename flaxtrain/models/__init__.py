"""Networks built from layers/, and the registry of model names."""

from flaxtrain.models.encoder import Encoder, EncoderConfig, EncoderLayer
from flaxtrain.models.fasttext import FastText, FastTextConfig
from flaxtrain.models.heads import HeadConfig, MaskedLM, SequenceClassifier, SpanClassifier, TokenClassifier
from flaxtrain.models.seq2seq import Seq2Seq, Seq2SeqConfig
from flaxtrain.models.registry import MODELS, build_model, config_to_dict, get_entry, make_config, with_compute_dtype
from flaxtrain.models.tagger import SequenceTagger, TaggerConfig
from flaxtrain.models.textcnn import TextCNN, TextCNNConfig

__all__ = [
    "Encoder",
    "EncoderConfig",
    "EncoderLayer",
    "FastText",
    "HeadConfig",
    "MaskedLM",
    "SequenceClassifier",
    "SpanClassifier",
    "TokenClassifier",
    "SequenceTagger",
    "Seq2Seq",
    "Seq2SeqConfig",
    "TaggerConfig",
    "FastTextConfig",
    "TextCNN",
    "TextCNNConfig",
    "MODELS",
    "build_model",
    "config_to_dict",
    "get_entry",
    "make_config",
    "with_compute_dtype",
]
