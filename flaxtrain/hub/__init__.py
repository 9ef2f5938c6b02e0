"""Hugging Face-format checkpoints (config.json + safetensors + tokenizer.json) read from local paths."""

from flaxtrain.hub.local import PRETRAINED, load_tokenizer, load_word_embeddings, resolve_checkpoint
from flaxtrain.hub.pretrained import load_pretrained, load_seq2seq, read_hf_config, save_pretrained, save_seq2seq

__all__ = ["PRETRAINED", "load_tokenizer", "load_word_embeddings", "resolve_checkpoint", "load_pretrained", "read_hf_config", "save_pretrained", "load_seq2seq",
           "save_seq2seq"]
