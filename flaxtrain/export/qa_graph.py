"""An extractive QA model's SavedModel graph around it: questions and contexts cut into the model's windows,
with each context piece's character offsets (`qa_windows`), and the best answer span of every question
over its windows (`best_spans`), as `QAPreprocessor.windows` and `QAPredictor.predict` compute them. Word
pieces only (text_graph's BERT split and WordPiece): sentencepiece offsets differ from the tokenizer's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flaxtrain.export import text_graph


def _chars_before(strings: Any, byte_offsets: Any) -> Any:
    """The number of characters in the first `byte_offsets` bytes of each string (both flat, same shape)."""
    import tensorflow as tf

    prefix = tf.strings.substr(strings, tf.zeros_like(byte_offsets), byte_offsets)
    return tf.cast(tf.strings.length(prefix, unit="UTF8_CHAR"), tf.int32)


def _pieces_with_offsets(settings: dict[str, Any]) -> tuple[Callable[[Any], Any], Any]:
    """(texts [batch] -> (piece ids int64 [batch, (n)], each piece's first character and the character after
    it in its text, int32 [batch, (n)]), the lookup table): word pieces as tokenizers' BERT pipeline makes
    them, with its offsets: each character of a word is normalized on its own to learn which characters of
    the normalized word it became (none for a dropped control character or accent), so a piece covers the
    original characters that became its own. (Where that differs from normalizing the word whole, as for a
    final sigma, a piece keeps the word's first or last character where it has one.)"""
    import tensorflow as tf

    if settings["kind"] != "wordpiece":
        raise text_graph.Unsupported("answer spans need the character offsets of word pieces: tensorflow-text's "
                                     "sentencepiece offsets count the '▁' of a word, the tokenizer's do not")
    table = text_graph.vocabulary(settings)
    wordpiece = text_graph.wordpiece(table, settings)

    def chars(strings: Any) -> Any:
        return tf.cast(tf.strings.length(strings, unit="UTF8_CHAR"), tf.int32)

    def pieces_of(texts: Any) -> tuple[Any, Any, Any]:
        words, normal, begin, end = text_graph.bert_words(texts, settings)
        pieces, piece_begin, piece_end = wordpiece.tokenize_with_offsets(normal)  # [batch, (words), (pieces)]
        original = tf.gather(texts, normal.value_rowids())  # each word's text
        first = _chars_before(original, begin.flat_values)
        after = _chars_before(original, end.flat_values)
        length = chars(normal.flat_values)
        per_char = tf.strings.unicode_split(words.flat_values, "UTF-8")  # [words, (characters)]
        # the normalized characters each original character became
        became = per_char.with_flat_values(chars(text_graph.bert_normalized(per_char.flat_values, settings)))
        ends = tf.cumsum(became, axis=1)
        starts = ends - became
        aligned = tf.equal(tf.reduce_sum(became, axis=1), length)
        word = pieces.values.value_rowids()  # the word of each piece
        spelled = tf.gather(normal.flat_values, word)
        start = _chars_before(spelled, piece_begin.flat_values)  # within the normalized word
        stop = _chars_before(spelled, piece_end.flat_values)
        # original characters wholly before the piece's first normalized one, and those that start before its end
        mapped_start = tf.reduce_sum(tf.cast(tf.gather(ends, word) <= start[:, None], tf.int32), axis=1)
        mapped_stop = tf.reduce_sum(tf.cast(tf.gather(starts, word) < stop[:, None], tf.int32), axis=1)
        whole = tf.gather(aligned, word)
        begin_at = tf.gather(first, word)
        start = begin_at + tf.where(whole, mapped_start, start)
        stop = tf.where(whole, begin_at + mapped_stop,
                        tf.where(tf.equal(stop, tf.gather(length, word)), tf.gather(after, word), begin_at + stop))
        start = tf.minimum(start, stop)

        def per_text(flat: Any) -> Any:
            return pieces.with_flat_values(flat).merge_dims(1, 2)

        return per_text(pieces.flat_values), per_text(start), per_text(stop)

    return pieces_of, table


def qa_windows(settings: dict[str, Any], pad_id: int, max_query_length: int, doc_stride: int
               ) -> Callable[[Any, Any], dict[str, Any]]:
    """(questions, contexts) (tf.string [batch] each) -> the windows of `QAPreprocessor.windows`, as tf ops:
    {'input_ids', 'token_type_ids', 'attention_mask' int32 [windows, width], 'starts', 'ends' int32 [windows,
    width] (each context token's characters in its context, -1 elsewhere), 'example' int32 [windows]}. The
    question keeps its first `max_query_length` pieces; the context is cut into pieces that fill the rest of
    `maxlen` and overlap by `doc_stride` tokens, as tokenizers' truncation with a stride cuts them."""
    import tensorflow as tf

    pieces_of, table = _pieces_with_offsets(settings)
    pair = settings["pair"]
    specials = sum(len(item[1]) for item in pair if item[0] == "special")
    maxlen = settings["room"] + len(settings["prefix"]) + len(settings["suffix_ids"])

    def windows(questions: Any, contexts: Any) -> dict[str, Any]:
        question = pieces_of(questions)[0][:, :max_query_length]
        context, starts, ends = pieces_of(contexts)
        fill = maxlen - specials - tf.cast(question.row_lengths(), tf.int32)  # context tokens per window
        step = tf.maximum(fill - doc_stride, 1)
        size = tf.cast(context.row_lengths(), tf.int32)
        count = 1 + (tf.maximum(size - fill, 0) + step - 1) // step
        example = tf.repeat(tf.range(tf.shape(count)[0]), count)  # [windows]
        first = tf.ragged.range(count).flat_values * tf.gather(step, example)
        taken = tf.minimum(tf.gather(fill, example), tf.gather(size, example) - first)
        index = tf.ragged.range(taken) + (first + tf.gather(tf.cast(context.row_starts(), tf.int32), example))[:, None]

        def chunk(values: Any) -> Any:
            return tf.gather(values.flat_values, index)

        rows = tf.shape(example)[0]
        parts: dict[str, list[Any]] = {"ids": [], "types": [], "starts": [], "ends": []}
        for item in pair:
            if item[0] == "special":
                ids = tf.RaggedTensor.from_tensor(tf.tile(tf.constant(item[1], tf.int64)[None], [rows, 1]))
            else:
                ids = tf.gather(question, example) if item[0] == "A" else chunk(context)
            parts["ids"].append(ids)
            parts["types"].append(tf.ones_like(ids, tf.int32) * item[-1])
            none = tf.cast(tf.ones_like(ids), tf.int32) * -1
            parts["starts"].append(chunk(starts) if item[0] == "B" else none)
            parts["ends"].append(chunk(ends) if item[0] == "B" else none)
        shape = tf.stack([tf.cast(rows, tf.int64), tf.maximum(tf.constant(text_graph.MIN_WIDTH, tf.int64), tf.reduce_max(
            tf.concat(parts["ids"], axis=1).row_lengths()))])

        def dense(name: str, pad: int) -> Any:
            return tf.cast(tf.concat(parts[name], axis=1), tf.int32).to_tensor(default_value=pad, shape=shape)

        real = tf.concat([tf.ones_like(ids, tf.int32) for ids in parts["ids"]], axis=1).to_tensor(shape=shape)
        return {"input_ids": dense("ids", pad_id), "token_type_ids": dense("types", 0), "attention_mask": real,
                "starts": dense("starts", -1), "ends": dense("ends", -1), "example": example}

    windows.table = table
    return windows


def best_spans(start_logits: Any, end_logits: Any, windows: dict[str, Any], contexts: Any, *, n_best: int,
               max_answer_length: int, allow_no_answer: bool) -> dict[str, Any]:
    """`flaxtrain.eval.spans.best_span` over every question's windows, as tf ops: {'answers' tf.string,
    'starts', 'ends' int32 (characters in the context), 'scores' float32}, one per question."""
    import tensorflow as tf

    valid = windows["attention_mask"] > 0
    start = tf.where(valid, tf.cast(start_logits, tf.float32), -1e30)
    end = tf.where(valid, tf.cast(end_logits, tf.float32), -1e30)
    context = windows["starts"] >= 0

    def among_best(logits: Any) -> Any:  # the n_best highest context logits, ties to the earlier token
        width = tf.shape(logits)[1]
        before = tf.range(width)[None, :, None] > tf.range(width)[None, None, :]  # [1, i, j]: j comes before i
        higher = (logits[:, None, :] > logits[:, :, None]) | ((logits[:, None, :] == logits[:, :, None]) & before)
        rank = tf.reduce_sum(tf.cast(higher & context[:, None, :], tf.int32), axis=-1)
        return context & (rank < n_best)

    s_ok, e_ok = among_best(start), among_best(end)
    width = tf.shape(start)[1]
    gap = tf.range(width)[None, :] - tf.range(width)[:, None]  # [s, e]: e - s
    allowed = (gap >= 0) & (gap < max_answer_length)
    ok = s_ok[:, :, None] & e_ok[:, None, :] & allowed[None]
    pair = start[:, :, None] + end[:, None, :]
    flat = tf.reshape(tf.where(ok, pair, -float("inf")), [tf.shape(start)[0], -1])
    best = tf.argmax(flat, axis=-1, output_type=tf.int32)
    logit = tf.reduce_max(flat, axis=-1)  # -inf: no span in the window
    s, e = best // width, best % width
    log_start = tf.nn.log_softmax(start, axis=-1)
    log_end = tf.nn.log_softmax(end, axis=-1)
    score = tf.exp(tf.gather(log_start, s, batch_dims=1) + tf.gather(log_end, e, batch_dims=1))
    char_start = tf.gather(windows["starts"], s, batch_dims=1)
    char_end = tf.gather(windows["ends"], e, batch_dims=1)

    example = windows["example"]
    questions = tf.shape(contexts)[0]
    found = tf.math.unsorted_segment_max(tf.cast(tf.math.is_finite(logit), tf.int32), example, questions) > 0
    top = tf.math.unsorted_segment_max(logit, example, questions)  # the best window's logit, per question
    top = tf.where(found, top, -float("inf"))  # (the max of no finite value is the lowest float, not -inf)
    index = tf.range(tf.shape(example)[0])
    chosen = tf.math.unsorted_segment_min(tf.where(tf.equal(logit, tf.gather(top, example)), index, 2 ** 30),
                                          example, questions)  # the first window that reaches it
    chosen = tf.where(found, chosen, 0)
    a = tf.where(found, tf.gather(char_start, chosen), 0)
    b = tf.where(found, tf.gather(char_end, chosen), 0)
    score = tf.where(found, tf.gather(score, chosen), 0.0)
    answers = tf.strings.substr(contexts, a, b - a, unit="UTF8_CHAR")
    if allow_no_answer:
        null = tf.math.unsorted_segment_max(start[:, 0] + end[:, 0], example, questions)
        empty = null > top
        answers = tf.where(empty, "", answers)
        a, b = tf.where(empty, 0, a), tf.where(empty, 0, b)
        score = tf.where(empty, tf.sigmoid(null - top), score)
    return {"answers": answers, "starts": a, "ends": b, "scores": score}
