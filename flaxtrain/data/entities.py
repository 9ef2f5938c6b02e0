"""Named-entity data: CoNLL / BIO readers, tag schemes, and word -> sub-word alignment (ktrain's names).

Each `entities_from_*` returns `(train, val, preproc)`: two TaggedDatasets and the EntityPreprocessor.
Words are tokenized one by one (`is_pretokenized`), each word's tag goes on its first sub-token, and
the model reads its tag scores at those positions (`word_starts`), so the other sub-tokens and the
special tokens never enter the loss.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from flaxtrain.data.dataset import EncodedOnUse
from flaxtrain.data.pipeline import Batch, make_batches
from flaxtrain.data.preprocess import bucket_lengths
from flaxtrain.data.tokenizer import Preprocessor, train_word_tokenizer
from flaxtrain.errors import FlaxtrainError

OUTSIDE = "O"
SCHEMES = ("bio", "bioes")
DOCSTART = "-DOCSTART-"
Sentence = tuple[list[str], list[str]]


# --- reading files -------------------------------------------------------------------------------
def read_conll(path: str | Path, *, word_column: int = 0, tag_column: int = -1, encoding: str = "utf-8") -> list[Sentence]:
    """Sentences of a CoNLL-style file: one token per line in whitespace-separated columns, a blank
    line between sentences, `-DOCSTART-` lines skipped (CoNLL-2003: word POS chunk NER).

    Every line of the file must have the same number of columns; a malformed line is a one-line
    error naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FlaxtrainError(f"no such file: {path}")
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    columns = None
    try:
        lines = path.read_text(encoding=encoding).splitlines()
    except UnicodeDecodeError as err:
        raise FlaxtrainError(f"{path} is not {encoding} text ({err.reason} at byte {err.start}): pass encoding=") from None
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        if parts[0] == DOCSTART:
            continue
        if columns is None:
            columns = len(parts)
            if columns < 2:
                raise FlaxtrainError(f"{path}, line {number}: {line.strip()!r} has one column; need a word and a tag per line")
            for what, index in (("word_column", word_column), ("tag_column", tag_column)):
                if not -columns <= index < columns:
                    raise FlaxtrainError(f"{path}: {what}={index} but the lines have {columns} columns")
        elif len(parts) != columns:
            raise FlaxtrainError(
                f"{path}, line {number}: {len(parts)} columns where the file's lines have {columns} ({line.strip()!r}): "
                "fix the line (one token per line, columns separated by spaces or tabs)"
            )
        words.append(parts[word_column])
        tags.append(parts[tag_column])
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise FlaxtrainError(f"{path} holds no sentences: expected lines of 'word ... tag' with blank lines between sentences")
    return sentences


# --- tag schemes ---------------------------------------------------------------------------------
def _split_tag(tag: str, where: str) -> tuple[str, str | None]:
    if tag == OUTSIDE:
        return OUTSIDE, None
    if len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIESU":
        return tag[0], tag[2:]
    raise FlaxtrainError(f"{where}: tag {tag!r} is neither 'O' nor a prefixed tag like 'B-PER' or 'I-LOC'")


def to_bio(tags: Sequence[str], where: str = "tags") -> list[str]:
    """IOB1, IOB2 (BIO) or BIOES tags -> BIO: an entity starts with B-, continues with I-."""
    out: list[str] = []
    previous: str | None = None
    for tag in tags:
        prefix, kind = _split_tag(tag, where)
        if kind is None:
            out.append(OUTSIDE)
        elif prefix in "BSU" or kind != previous:
            out.append(f"B-{kind}")
        else:
            out.append(f"I-{kind}")
        previous = kind if prefix not in "ES" else None
    return out


def to_bioes(tags: Sequence[str], where: str = "tags") -> list[str]:
    """Tags -> BIOES: single-token entities S-, multi-token ones B- ... I- ... E-."""
    bio = to_bio(tags, where)
    out = []
    for i, tag in enumerate(bio):
        if tag == OUTSIDE:
            out.append(tag)
            continue
        continues = i + 1 < len(bio) and bio[i + 1] == f"I-{tag[2:]}"
        if tag.startswith("B-"):
            out.append(tag if continues else "S-" + tag[2:])
        else:
            out.append(tag if continues else "E-" + tag[2:])
    return out


def convert(tags: Sequence[str], scheme: str, where: str = "tags") -> list[str]:
    if scheme not in SCHEMES:
        raise FlaxtrainError(f"tag_scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    return to_bio(tags, where) if scheme == "bio" else to_bioes(tags, where)


def entities(words: Sequence[str], tags: Sequence[str]) -> list[tuple[str, str, int, int]]:
    """(text, type, first word, last word + 1) of each entity in BIO or BIOES tags."""
    found = []
    start = kind = None
    for i, tag in enumerate([*to_bio(tags), OUTSIDE]):
        if start is not None and (tag == OUTSIDE or tag.startswith("B-") or tag[2:] != kind):
            found.append((" ".join(words[start:i]), kind, start, i))
            start = kind = None
        if tag.startswith("B-"):
            start, kind = i, tag[2:]
    return found


# --- datasets ------------------------------------------------------------------------------------
@dataclasses.dataclass
class TaggedDataset(EncodedOnUse):
    """Sentences as words with their tags (converted to the preprocessor's scheme), encoded on use.

    The sub-word ids depend on the tokenizer, which `sequence_tagger` picks (a pretrained encoder's,
    or the word tokenizer trained on the training words), so encoding happens on first use and again
    only when the preprocessor's tokenizer changes.
    """

    words: list[list[str]]
    tags: list[list[str]] | None  # one tag per word, or None for unlabelled data
    preproc: EntityPreprocessor
    _cache: tuple[Any, Any] | None = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def texts(self) -> list[str]:
        return [" ".join(w) for w in self.words]

    @property
    def class_names(self) -> list[str]:
        return self.preproc.class_names

    def encoded(self) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray] | None]:
        """(sub-token ids, first sub-token of each kept word, tag ids of the kept words) per sentence."""
        key = (id(self.preproc.tokenizer), self.preproc.maxlen, self.preproc.add_special_tokens)
        if self._cache is None or self._cache[0] != key:
            input_ids, starts = self.preproc.encode(self.words)
            labels = None
            if self.tags is not None:
                labels = [row[: len(s)] for row, s in zip(self.preproc.encode_tags(self.tags, "data"), starts)]
            self._cache = (key, (input_ids, starts, labels))
        return self._cache[1]

    def batches(self, *, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                process_index: int = 0, process_count: int = 1) -> tuple[Iterator[Batch], int]:
        """Batches of {'input_ids' [b, L], 'word_starts' [b, L], 'tags' [b, L] (-1: no word), 'index', 'weight'}."""
        input_ids, starts, labels = self.encoded()
        tags = labels if labels is not None else [np.full(len(s), -1, np.int32) for s in starts]
        return make_batches(input_ids, None, batch_size=batch_size, buckets=self.preproc.buckets, shuffle=shuffle,
                            seed=seed, epoch=epoch, pad_id=self.preproc.pad_id, process_index=process_index,
                            process_count=process_count, sequences={"word_starts": (starts, -1), "tags": (tags, -1)})



class EntityPreprocessor(Preprocessor):
    """Tokenizer, maximum length and tag names of a sequence tagger.

    Attributes:
      tokenizer: the Hugging Face `tokenizers.Tokenizer` (a pretrained encoder's, or a word-level one).
      maxlen: longest sub-token sequence kept; words past it are not tagged (predict gives them 'O').
      class_names: the tags, 'O' first.
      tag_scheme: 'bio' or 'bioes' — the scheme tags are converted to.
      add_special_tokens: wrap sentences in the tokenizer's special tokens ([CLS] ... [SEP]).
    """

    kind = "entities"

    def __init__(self, tokenizer: Tokenizer, *, maxlen: int, class_names: Sequence[str], tag_scheme: str = "bio",
                 pad_id: int = 0, add_special_tokens: bool = False):
        if maxlen < 2:
            raise FlaxtrainError(f"maxlen must be at least 2, got {maxlen}")
        if tag_scheme not in SCHEMES:
            raise FlaxtrainError(f"tag_scheme must be one of {', '.join(SCHEMES)}, got {tag_scheme!r}")
        self.tokenizer = tokenizer
        self.tokenizer.enable_truncation(max_length=int(maxlen))
        self.maxlen = int(maxlen)
        self.class_names = list(class_names)
        self.tag_scheme = tag_scheme
        self.pad_id = pad_id
        self.add_special_tokens = add_special_tokens
        self._index = {c: i for i, c in enumerate(self.class_names)}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def regression(self) -> bool:
        return False

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def buckets(self) -> tuple[int, ...]:
        return bucket_lengths(self.maxlen)

    def encode(self, sentences: Sequence[Sequence[str]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(sub-token ids, first sub-token of each kept word) per sentence."""
        encodings = self.tokenizer.encode_batch([list(s) for s in sentences], is_pretokenized=True,
                                                add_special_tokens=self.add_special_tokens)
        ids, starts = [], []
        for words, encoding in zip(sentences, encodings):
            first = _first_tokens(encoding.word_ids)
            missing = {i for i in range(max(first, default=-1)) if i not in first}
            if missing:  # a word with no sub-tokens (e.g. a lone control character) reads as the unknown token
                words = [self.unknown_token() if i in missing else w for i, w in enumerate(words)]
                encoding = self.tokenizer.encode(words, is_pretokenized=True, add_special_tokens=self.add_special_tokens)
                first = _first_tokens(encoding.word_ids)
            kept = 0  # words past maxlen have no tokens left
            while kept in first:
                kept += 1
            ids.append(np.asarray(encoding.ids, np.int32))
            starts.append(np.asarray([first[w] for w in range(kept)], np.int32))
        return ids, starts

    def unknown_token(self) -> str:
        """The token a word with no sub-tokens is read as (the tokenizer's unknown token)."""
        return getattr(self.tokenizer.model, "unk_token", None) or "[UNK]"

    def encode_tags(self, tags: Sequence[Sequence[str]], where: str) -> list[np.ndarray]:
        out = []
        for i, sentence in enumerate(tags):
            converted = convert(sentence, self.tag_scheme, f"{where}, sentence {i + 1}")
            row = np.empty(len(converted), np.int32)
            for j, tag in enumerate(converted):
                index = self._index.get(tag)
                if index is None:
                    raise FlaxtrainError(f"{where}, sentence {i + 1}: tag {tag!r} is not among the training tags "
                                         f"{self.class_names}: fix the tag or add it to the training data")
                row[j] = index
            out.append(row)
        return out

    def preprocess(self, words: Sequence[Sequence[str]], tags: Sequence[Sequence[str]] | None = None, *,
                   where: str = "data") -> TaggedDataset:
        """A dataset of sentences (lists of words) and, when given, their tags (one per word)."""
        words = check_sentences(words, tags, where)
        if tags is not None:
            self.encode_tags(tags, where)  # unknown or malformed tags fail here, naming the sentence
            tags = [convert(row, self.tag_scheme, where) for row in tags]
        return TaggedDataset(words=words, tags=None if tags is None else [list(t) for t in tags], preproc=self)

    def decode_tags(self, row: np.ndarray) -> list[str]:
        return [self.class_names[int(i)] for i in row]

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "maxlen": self.maxlen, "class_names": self.class_names, "tag_scheme": self.tag_scheme,
                "pad_id": self.pad_id, "add_special_tokens": self.add_special_tokens}

    @classmethod
    def from_config(cls, tokenizer: Tokenizer, config: dict[str, Any]) -> EntityPreprocessor:
        return cls(tokenizer, maxlen=config["maxlen"], class_names=config["class_names"],
                   tag_scheme=config.get("tag_scheme", "bio"), pad_id=config.get("pad_id", 0),
                   add_special_tokens=config.get("add_special_tokens", False))

    def __repr__(self) -> str:
        return f"EntityPreprocessor(vocab_size={self.vocab_size}, maxlen={self.maxlen}, tags={self.class_names})"


def _first_tokens(word_ids: Sequence[int | None]) -> dict[int, int]:
    """word index -> position of its first sub-token."""
    first: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None and word not in first:
            first[word] = position
    return first


def check_sentences(words: Any, tags: Any, where: str) -> list[list[str]]:
    """Sentences as lists of str words; tags, when given, one per word."""
    if isinstance(words, str) or not isinstance(words, Sequence):
        raise FlaxtrainError(f"{where}: pass a list of sentences, each a list of words")
    out = []
    for i, sentence in enumerate(words):
        if isinstance(sentence, str) or not isinstance(sentence, Sequence) or not all(isinstance(w, str) for w in sentence):
            raise FlaxtrainError(f"{where}, sentence {i + 1}: pass a list of words (strings), got {type(sentence).__name__}")
        if not sentence:
            raise FlaxtrainError(f"{where}, sentence {i + 1} is empty: drop it or give it words")
        out.append(list(sentence))
    if tags is not None:
        if len(tags) != len(out):
            raise FlaxtrainError(f"{where}: {len(out)} sentences but {len(tags)} tag sequences: pass one per sentence")
        for i, (sentence, row) in enumerate(zip(out, tags)):
            if len(row) != len(sentence):
                raise FlaxtrainError(f"{where}, sentence {i + 1}: {len(sentence)} words but {len(row)} tags: "
                                     "pass one tag per word")
    return out


def tag_names(tags: Sequence[Sequence[str]], scheme: str, where: str) -> list[str]:
    """'O' then the other tags, sorted by entity type and then prefix."""
    seen = {t for i, row in enumerate(tags) for t in convert(row, scheme, f"{where}, sentence {i + 1}")}
    order = {p: i for i, p in enumerate("BIES")}
    others = sorted(seen - {OUTSIDE}, key=lambda t: (t[2:], order.get(t[0], 9)))
    if not others:
        raise FlaxtrainError(f"{where} has no entity tags (every tag is 'O'): nothing to learn")
    return [OUTSIDE, *others]


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words and punctuation of raw text with their character spans: 'Paris, France.' ->
    ['Paris', ',', 'France', '.']."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"\w+(?:[-'’.]\w+)*|[^\w\s]", text)]
    return [text[a:b] for a, b in spans], spans


# --- loaders (ktrain's names) ---------------------------------------------------------------------
def _split(sentences: list[Sentence], val_pct: float, seed: int) -> tuple[list[Sentence], list[Sentence]]:
    if not 0.0 < val_pct < 1.0:
        raise FlaxtrainError(f"val_pct must lie between 0 and 1 when no validation set is given, got {val_pct}")
    if len(sentences) < 2:
        raise FlaxtrainError("need at least two sentences to split off a validation set: pass a validation set")
    order = np.random.default_rng(seed).permutation(len(sentences))
    cut = max(1, int(round(len(sentences) * val_pct)))
    return [sentences[i] for i in order[cut:]], [sentences[i] for i in order[:cut]]


def _build(train: list[Sentence], val: list[Sentence] | None, *, where: tuple[str, str], val_pct: float,
           tag_scheme: str, maxlen: int, max_features: int, random_state: int, verbose: int,
           ) -> tuple[TaggedDataset, TaggedDataset | None, EntityPreprocessor]:
    if not train:
        raise FlaxtrainError(f"{where[0]} holds no sentences: pass at least one tagged sentence")
    if val is None and val_pct > 0:
        train, val = _split(train, val_pct, random_state)
    words, tags = [w for w, _ in train], [t for _, t in train]
    check_sentences(words, tags, where[0])
    names = tag_names(tags, tag_scheme, where[0])
    tokenizer = train_word_tokenizer([" ".join(w) for w in words], vocab_size=max_features)
    preproc = EntityPreprocessor(tokenizer, maxlen=maxlen, class_names=names, tag_scheme=tag_scheme)
    trn = preproc.preprocess(words, tags, where=where[0])
    dev = None if not val else preproc.preprocess([w for w, _ in val], [t for _, t in val], where=where[1])
    if verbose:
        types = sorted({n[2:] for n in names if n != OUTSIDE})
        print(f"{len(trn)} training and {0 if dev is None else len(dev)} validation sentences; entity types {types}; "
              f"tags {names}")
    return trn, dev, preproc


def entities_from_txt(train_filepath: str | Path, val_filepath: str | Path | None = None, *, word_column: int = 0,
                      tag_column: int = -1, val_pct: float = 0.1, tag_scheme: str = "bio", maxlen: int = 128,
                      max_features: int = 20_000, encoding: str = "utf-8", random_state: int = 42, verbose: int = 1,
                      ) -> tuple[TaggedDataset, TaggedDataset | None, EntityPreprocessor]:
    """Tagged sentences from CoNLL-style files (one 'word ... tag' per line, blank lines between
    sentences, -DOCSTART- lines skipped). Without `val_filepath`, `val_pct` of the training
    sentences are held out (0: no validation set). Tags in IOB1, BIO or BIOES are converted to
    `tag_scheme`. Returns (train, val, preproc)."""
    read = lambda path: read_conll(path, word_column=word_column, tag_column=tag_column, encoding=encoding)  # noqa: E731
    train = read(train_filepath)
    val = None if val_filepath is None else read(val_filepath)
    return _build(train, val, where=(str(train_filepath), str(val_filepath)), val_pct=val_pct, tag_scheme=tag_scheme,
                  maxlen=maxlen, max_features=max_features, random_state=random_state, verbose=verbose)


def entities_from_conll2003(train_filepath: str | Path, val_filepath: str | Path | None = None, **kwargs: Any,
                            ) -> tuple[TaggedDataset, TaggedDataset | None, EntityPreprocessor]:
    """CoNLL-2003 files (columns: word, POS, chunk, NER tag in IOB1): `entities_from_txt` with the tag
    in the last column."""
    return entities_from_txt(train_filepath, val_filepath, word_column=0, tag_column=-1, **kwargs)


def entities_from_array(x_train: Sequence[Sequence[str]], y_train: Sequence[Sequence[str]],
                        x_test: Sequence[Sequence[str]] | None = None, y_test: Sequence[Sequence[str]] | None = None, *,
                        val_pct: float = 0.1, tag_scheme: str = "bio", maxlen: int = 128, max_features: int = 20_000,
                        random_state: int = 42, verbose: int = 1,
                        ) -> tuple[TaggedDataset, TaggedDataset | None, EntityPreprocessor]:
    """Tagged sentences given as lists of words and lists of tags (one per word)."""
    check_sentences(x_train, y_train, "x_train")
    train = [(list(w), list(t)) for w, t in zip(x_train, y_train)]
    val = None
    if x_test is not None:
        if y_test is None:
            raise FlaxtrainError("x_test was given without y_test: pass the tags of the validation sentences")
        check_sentences(x_test, y_test, "x_test")
        val = [(list(w), list(t)) for w, t in zip(x_test, y_test)]
    return _build(train, val, where=("x_train", "x_test"), val_pct=val_pct, tag_scheme=tag_scheme, maxlen=maxlen,
                  max_features=max_features, random_state=random_state, verbose=verbose)


def _sentences_from_df(df: Any, word_column: str, tag_column: str, sentence_column: str, where: str) -> list[Sentence]:
    for column in (word_column, tag_column, sentence_column):
        if column not in df.columns:
            raise FlaxtrainError(f"{where} has no column {column!r} (columns: {list(df.columns)}): pass word_column=, "
                                 "tag_column=, sentence_column=")
    ids = df[sentence_column].ffill()  # GMB style: the sentence id only on each sentence's first row
    if ids.isna().any():
        raise FlaxtrainError(f"{where}: the first rows have no {sentence_column!r}: the column must start with an id")
    sentences: list[Sentence] = []
    for _, group in df.groupby(ids, sort=False):
        words = [str(w) for w in group[word_column].tolist()]
        tags = [str(t) for t in group[tag_column].tolist()]
        sentences.append((words, tags))
    return sentences


def entities_from_df(train_df: Any, val_df: Any = None, *, word_column: str = "Word", tag_column: str = "Tag",
                     sentence_column: str = "SentenceID", val_pct: float = 0.1, tag_scheme: str = "bio",
                     maxlen: int = 128, max_features: int = 20_000, random_state: int = 42, verbose: int = 1,
                     ) -> tuple[TaggedDataset, TaggedDataset | None, EntityPreprocessor]:
    """Tagged sentences from a data frame with one row per word (ktrain's / GMB's layout: a sentence
    column, filled on every row or only on each sentence's first one, a word and a tag column)."""
    train = _sentences_from_df(train_df, word_column, tag_column, sentence_column, "train_df")
    val = None if val_df is None else _sentences_from_df(val_df, word_column, tag_column, sentence_column, "val_df")
    return _build(train, val, where=("train_df", "val_df"), val_pct=val_pct, tag_scheme=tag_scheme, maxlen=maxlen,
                  max_features=max_features, random_state=random_state, verbose=verbose)
