"""Tokenizers built with Hugging Face `tokenizers` and stored as `tokenizer.json`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from flaxtrain.errors import FlaxtrainError

PAD, UNK = "[PAD]", "[UNK]"


def train_word_tokenizer(texts: Sequence[str], *, vocab_size: int = 20_000, min_frequency: int = 1) -> Tokenizer:
    """A lower-casing word-level tokenizer trained on `texts`; [PAD] is id 0 and [UNK] id 1.

    Args:
      texts: training texts.
      vocab_size: largest vocabulary, special tokens included (most frequent words kept).
      min_frequency: words seen fewer times become [UNK].

    Returns:
      The trained tokenizer.
    """
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD, UNK], show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Reads a `tokenizer.json`, with a one-line error when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FlaxtrainError(f"no tokenizer file at {path}: save the predictor again or pass the right directory")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust parser raises a bare Exception on malformed JSON
        raise FlaxtrainError(f"{path} is not a valid tokenizer.json ({str(err).splitlines()[0]}): save it again") from None


TOKENIZER_FILE = "tokenizer.json"


class Preprocessor:
    """Base of the preprocessors: the tokenizer is saved as `tokenizer.json` beside a JSON config section
    (no pickle). A subclass names its `kind` and gives `to_config` / `from_config`."""

    kind: str
    tokenizer: Tokenizer | None

    def to_config(self) -> dict[str, Any]:
        """The JSON section that, with the tokenizer, rebuilds this preprocessor ('kind' first)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, tokenizer: Tokenizer, config: dict[str, Any]) -> Preprocessor:
        """The preprocessor of a saved section (a missing key raises KeyError, reported by `load`)."""
        raise NotImplementedError

    def save(self, directory: str | Path) -> dict[str, Any]:
        """Writes `tokenizer.json` into `directory` and returns the JSON config section."""
        self.tokenizer.save(str(Path(directory) / TOKENIZER_FILE))
        return self.to_config()

    @classmethod
    def load(cls, directory: str | Path, config: dict[str, Any]) -> Preprocessor:
        """Rebuilds a preprocessor from `directory`'s tokenizer.json and its config section."""
        tokenizer = load_tokenizer(Path(directory) / TOKENIZER_FILE)
        try:
            return cls.from_config(tokenizer, config)
        except KeyError as err:
            raise FlaxtrainError(f"preprocessor config in {directory} lacks {err}: save the predictor again") from None
