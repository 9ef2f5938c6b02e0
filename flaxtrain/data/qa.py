"""Extractive question answering data: SQuAD v1.1 files and arrays, windows over long contexts.

A (question, context) pair becomes one or more windows '[CLS] question [SEP] context piece [SEP]'
of at most `maxlen` word pieces; consecutive pieces overlap by `doc_stride` tokens (the Hugging Face
tokenizers' `stride`). A window's label is the (start, end) token of the answer when the whole
answer lies inside it, else (0, 0), the [CLS] token: "not in this window". Each window keeps its
context tokens' character offsets, so predicted spans map back to the original text.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from flaxtrain.data.dataset import Batched
from flaxtrain.data.pipeline import Batch, make_batches
from flaxtrain.data.preprocess import bucket_lengths
from flaxtrain.data.tokenizer import Preprocessor
from flaxtrain.errors import FlaxtrainError


@dataclasses.dataclass(frozen=True)
class QAExample:
    """One question about one context, with its reference answers (empty: no answer)."""

    question: str
    context: str
    answers: tuple[str, ...] = ()
    answer_starts: tuple[int, ...] = ()
    id: str = ""


# --- reading -------------------------------------------------------------------------------------
def _line_of(text: str, needle: str) -> int:
    index = text.find(needle)
    return text.count("\n", 0, index) + 1 if index >= 0 else 0


def read_squad(path: str | Path) -> list[QAExample]:
    """Questions of a SQuAD v1.1 (or v2.0) JSON file. An answer whose answer_start does not point at
    its text, or a paragraph without context, is a one-line error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FlaxtrainError(f"no such file: {path}")
    raw = path.read_text(encoding="utf-8")
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as err:
        raise FlaxtrainError(f"{path}, line {err.lineno}: not valid JSON ({err.msg}): fix the file") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise FlaxtrainError(f"{path} is not a SQuAD file: expected {{'data': [{{'paragraphs': [...]}}]}}")
    examples = []
    for article in document["data"]:
        for paragraph in article.get("paragraphs", []):
            context = paragraph.get("context", "")
            qas = paragraph.get("qas", [])
            where = f"{path}, line {_line_of(raw, json.dumps(qas[0].get('id', ''))) if qas else 0}"
            if not isinstance(context, str) or not context.strip():
                raise FlaxtrainError(f"{where}: a paragraph has an empty context: drop it or give it text")
            for qa in qas:
                qid = str(qa.get("id", ""))
                where = f"{path}, line {_line_of(raw, json.dumps(qa.get('id', '')))} (question {qid!r})"
                question = qa.get("question", "")
                if not isinstance(question, str) or not question.strip():
                    raise FlaxtrainError(f"{where}: empty question")
                texts, starts = [], []
                for answer in [] if qa.get("is_impossible") else qa.get("answers", []):
                    text, start = answer.get("text"), answer.get("answer_start")
                    if not isinstance(text, str) or not isinstance(start, int):
                        raise FlaxtrainError(f"{where}: an answer needs 'text' (string) and 'answer_start' (int)")
                    if context[start:start + len(text)] != text:
                        raise FlaxtrainError(
                            f"{where}: answer_start {start} does not point at the answer {text!r} (the context there "
                            f"reads {context[start:start + len(text)]!r}): fix answer_start"
                        )
                    texts.append(text)
                    starts.append(start)
                examples.append(QAExample(question, context, tuple(texts), tuple(starts), qid))
    if not examples:
        raise FlaxtrainError(f"{path} holds no questions")
    return examples


def examples_from_arrays(questions: Sequence[str], contexts: Sequence[str], answers: Sequence[Any] | None,
                         answer_starts: Sequence[Any] | None, where: str) -> list[QAExample]:
    """QAExamples of parallel lists; an answer may be a string, a list of strings, or None/'' (no answer)."""
    if isinstance(questions, str) or isinstance(contexts, str):
        raise FlaxtrainError(f"{where}: pass lists of questions and contexts")
    n = len(questions)
    for name, values in (("contexts", contexts), ("answers", answers), ("answer_starts", answer_starts)):
        if values is not None and len(values) != n:
            raise FlaxtrainError(f"{where}: {n} questions but {len(values)} {name}: pass one per question")
    if (answers is None) != (answer_starts is None):
        raise FlaxtrainError(f"{where}: pass answers and answer_starts together")
    examples = []
    for i in range(n):
        question, context = questions[i], contexts[i]
        if not isinstance(question, str) or not question.strip() or not isinstance(context, str) or not context.strip():
            raise FlaxtrainError(f"{where}, example {i + 1}: question and context must be non-empty strings")
        texts: list[str] = []
        starts: list[int] = []
        if answers is not None:
            given, offsets = answers[i], answer_starts[i]
            if given is None or given == "":
                given, offsets = [], []
            elif isinstance(given, str):
                given, offsets = [given], [offsets]
            for text, start in zip(given, offsets):
                start = int(start)
                if context[start:start + len(text)] != text:
                    raise FlaxtrainError(f"{where}, example {i + 1}: answer_start {start} does not point at the answer "
                                         f"{text!r} in its context: fix answer_start")
                texts.append(text)
                starts.append(start)
        examples.append(QAExample(question, context, tuple(texts), tuple(starts), str(i)))
    return examples


# --- windows -------------------------------------------------------------------------------------
@dataclasses.dataclass
class QAWindows:
    """The windows of a list of examples, in order."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    offsets: list[np.ndarray]  # [tokens, 2] character span of each context token, (-1, -1) elsewhere
    example: np.ndarray  # [windows] index of each window's example
    spans: np.ndarray  # [windows, 2] answer start and end token, (0, 0) when not inside the window


class QAPreprocessor(Preprocessor):
    """A pretrained encoder's tokenizer and the window sizes of extractive QA.

    Attributes:
      maxlen: word pieces per window (question, context piece and special tokens).
      doc_stride: tokens shared by consecutive windows of a long context (default min(128, maxlen / 4)).
      max_query_length: longest question in word pieces (longer ones are cut).
      max_answer_length: longest answer decoding considers, in word pieces.
    """

    kind = "qa"
    class_names = None
    regression = False
    num_classes = 2

    def __init__(self, tokenizer: Tokenizer | None = None, *, maxlen: int = 384, doc_stride: int | None = None,
                 max_query_length: int = 64, max_answer_length: int = 30, pad_id: int = 0):
        if doc_stride is None:  # 128 for SQuAD's 384-token windows
            doc_stride = min(128, maxlen // 4)
        if not 0 <= doc_stride < maxlen // 2:
            raise FlaxtrainError(f"doc_stride must lie in [0, maxlen / 2), got {doc_stride} with maxlen {maxlen}")
        if max_query_length + 8 > maxlen:
            raise FlaxtrainError(f"max_query_length {max_query_length} leaves no room for context in maxlen {maxlen}")
        self.tokenizer = tokenizer
        self.maxlen, self.doc_stride = int(maxlen), int(doc_stride)
        self.max_query_length, self.max_answer_length = int(max_query_length), int(max_answer_length)
        self.pad_id = pad_id

    @property
    def buckets(self) -> tuple[int, ...]:
        return bucket_lengths(self.maxlen)

    @property
    def vocab_size(self) -> int:
        return 0 if self.tokenizer is None else self.tokenizer.get_vocab_size()

    def _short_question(self, question: str) -> str:
        self.tokenizer.no_truncation()
        encoding = self.tokenizer.encode(question, add_special_tokens=False)
        if len(encoding.ids) <= self.max_query_length:
            return question
        return question[: encoding.offsets[self.max_query_length - 1][1]]

    def windows(self, examples: Sequence[QAExample]) -> QAWindows:
        if self.tokenizer is None:
            raise FlaxtrainError("this QA preprocessor has no tokenizer yet: build the model with qa_model(name, preproc) first")
        pairs = [(self._short_question(e.question), e.context) for e in examples]
        self.tokenizer.enable_truncation(max_length=self.maxlen, stride=self.doc_stride, strategy="only_second")
        try:
            encodings = self.tokenizer.encode_batch(pairs)
        finally:
            self.tokenizer.no_truncation()
        out = QAWindows([], [], [], np.zeros(0, np.int64), np.zeros((0, 2), np.int32))
        example_index, spans = [], []
        for i, (example, first) in enumerate(zip(examples, encodings)):
            answer = None
            if example.answers:
                start = example.answer_starts[0]
                answer = (start, start + len(example.answers[0]))
            for window in [first, *first.overflowing]:
                sequence = window.sequence_ids
                offsets = np.asarray([o if s == 1 else (-1, -1) for o, s in zip(window.offsets, sequence)], np.int32)
                out.input_ids.append(np.asarray(window.ids, np.int32))
                out.token_type_ids.append(np.asarray(window.type_ids, np.int32))
                out.offsets.append(offsets.reshape(-1, 2))
                example_index.append(i)
                spans.append(_token_span(offsets, answer))
        out.example = np.asarray(example_index, np.int64)
        out.spans = np.asarray(spans, np.int32).reshape(-1, 2)
        return out

    def to_config(self) -> dict[str, Any]:
        return {"kind": self.kind, "maxlen": self.maxlen, "doc_stride": self.doc_stride,
                "max_query_length": self.max_query_length, "max_answer_length": self.max_answer_length,
                "pad_id": self.pad_id}

    @classmethod
    def from_config(cls, tokenizer: Tokenizer, config: dict[str, Any]) -> QAPreprocessor:
        return cls(tokenizer, maxlen=config["maxlen"], doc_stride=config["doc_stride"],
                   max_query_length=config["max_query_length"], max_answer_length=config["max_answer_length"],
                   pad_id=config.get("pad_id", 0))

    def __repr__(self) -> str:
        return (f"QAPreprocessor(vocab_size={self.vocab_size}, maxlen={self.maxlen}, doc_stride={self.doc_stride}, "
                f"max_answer_length={self.max_answer_length})")


def _token_span(offsets: np.ndarray, answer: tuple[int, int] | None) -> tuple[int, int]:
    """(start, end) tokens covering the character span `answer` when the window holds all of it, else (0, 0)."""
    if answer is None:
        return 0, 0
    context = np.flatnonzero(offsets[:, 0] >= 0)
    if len(context) == 0:
        return 0, 0
    first, last = context[0], context[-1]
    if offsets[first, 0] > answer[0] or offsets[last, 1] < answer[1]:
        return 0, 0
    start = first + int(np.searchsorted(offsets[first:last + 1, 1], answer[0], side="right"))
    end = first + int(np.searchsorted(offsets[first:last + 1, 0], answer[1], side="left")) - 1
    return (int(start), int(end)) if start <= end else (0, 0)


@dataclasses.dataclass
class QADataset(Batched):
    """Examples and their windows (encoded on first use)."""

    examples: list[QAExample]
    preproc: QAPreprocessor
    _cache: tuple[Any, QAWindows] | None = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def windows(self) -> QAWindows:
        """The examples' windows under the preprocessor's current tokenizer and sizes."""
        p = self.preproc
        key = (id(p.tokenizer), p.maxlen, p.doc_stride, p.max_query_length)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, p.windows(self.examples))
        return self._cache[1]

    @property
    def labels(self) -> np.ndarray | None:
        """[windows, 2] answer token spans, or None when no example has an answer."""
        return self.windows.spans if any(e.answers for e in self.examples) else None

    @property
    def input_ids(self) -> list[np.ndarray]:
        """Token ids of every window (the rows batches hold: an example may have several)."""
        return self.windows.input_ids

    @property
    def texts(self) -> list[str]:
        return [f"{e.question} | {e.context}" for e in self.examples]

    @property
    def class_names(self) -> None:
        return None

    def batches(self, *, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                process_index: int = 0, process_count: int = 1) -> tuple[Iterator[Batch], int]:
        """Batches of windows: {'input_ids', 'token_type_ids', 'attention_mask' [b, L], 'label' [b, 2] (answer
        start and end token), 'index' (window), 'weight'}."""
        w = self.windows
        return make_batches(w.input_ids, w.spans, batch_size=batch_size, buckets=self.preproc.buckets, shuffle=shuffle,
                            seed=seed, epoch=epoch, pad_id=self.preproc.pad_id, process_index=process_index,
                            process_count=process_count,
                            sequences={"token_type_ids": (w.token_type_ids, 0),
                                       "attention_mask": ([np.ones(len(x), np.int32) for x in w.input_ids], 0)})


# --- loaders --------------------------------------------------------------------------------------
def _split(examples: list[QAExample], val_pct: float, seed: int) -> tuple[list[QAExample], list[QAExample] | None]:
    if val_pct <= 0:
        return examples, None
    if not val_pct < 1.0 or len(examples) < 2:
        raise FlaxtrainError(f"cannot hold out val_pct={val_pct} of {len(examples)} questions: pass a validation set")
    # Questions about one context stay together, so validation contexts are unseen in training.
    contexts = sorted({e.context for e in examples})
    order = np.random.default_rng(seed).permutation(len(contexts))
    held = {contexts[i] for i in order[: max(1, int(round(len(contexts) * val_pct)))]}
    return [e for e in examples if e.context not in held], [e for e in examples if e.context in held]


def _build(train: list[QAExample], val: list[QAExample] | None, *, val_pct: float, random_state: int, verbose: int,
           **sizes: Any) -> tuple[QADataset, QADataset | None, QAPreprocessor]:
    if val is None:
        train, val = _split(train, val_pct, random_state)
    if not any(e.answers for e in train):
        raise FlaxtrainError("no training question has an answer: extractive QA needs answer spans to learn from")
    preproc = QAPreprocessor(None, **sizes)
    if verbose:
        print(f"{len(train)} training and {0 if val is None else len(val)} validation questions")
    return QADataset(train, preproc), None if val is None else QADataset(val, preproc), preproc


def qa_from_squad(train_path: str | Path, val_path: str | Path | None = None, *, val_pct: float = 0.1,
                  maxlen: int = 384, doc_stride: int | None = None, max_query_length: int = 64,
                  max_answer_length: int = 30, random_state: int = 42, verbose: int = 1,
                  ) -> tuple[QADataset, QADataset | None, QAPreprocessor]:
    """Questions of SQuAD v1.1 JSON files (without `val_path`, the questions of `val_pct` of the
    contexts are held out). Returns (train, val, preproc); `qa_model(name, preproc)` gives the
    preprocessor its encoder's tokenizer."""
    train = read_squad(train_path)
    val = None if val_path is None else read_squad(val_path)
    return _build(train, val, val_pct=val_pct, random_state=random_state, verbose=verbose, maxlen=maxlen,
                  doc_stride=doc_stride, max_query_length=max_query_length, max_answer_length=max_answer_length)


def qa_from_array(questions: Sequence[str], contexts: Sequence[str], answers: Sequence[Any], answer_starts: Sequence[Any],
                  val_questions: Sequence[str] | None = None, val_contexts: Sequence[str] | None = None,
                  val_answers: Sequence[Any] | None = None, val_answer_starts: Sequence[Any] | None = None, *,
                  val_pct: float = 0.1, maxlen: int = 384, doc_stride: int | None = None, max_query_length: int = 64,
                  max_answer_length: int = 30, random_state: int = 42, verbose: int = 1,
                  ) -> tuple[QADataset, QADataset | None, QAPreprocessor]:
    """Questions, contexts, answers (a string, a list of strings, or ''/None for no answer) and their
    character starts in the contexts, as lists. Returns (train, val, preproc)."""
    train = examples_from_arrays(questions, contexts, answers, answer_starts, "questions")
    val = None
    if val_questions is not None:
        val = examples_from_arrays(val_questions, val_contexts if val_contexts is not None else [], val_answers,
                                   val_answer_starts, "val_questions")
    return _build(train, val, val_pct=val_pct, random_state=random_state, verbose=verbose, maxlen=maxlen,
                  doc_stride=doc_stride, max_query_length=max_query_length, max_answer_length=max_answer_length)
