"""A predictor's tokenizer as TensorFlow ops (tensorflow-text), for SavedModels that take raw strings.

`describe(tokenizer, maxlen, add_special_tokens)` reads the tokenizer's own description (its
tokenizer.json); `string_tokenizer(settings, pad_id)` builds the same pipeline from string ops and
tensorflow-text's `WordpieceTokenizer` (BERT's basic tokenizer as one RE2 split: Unicode spaces, punctuation
and CJK characters; control and format characters dropped, accents stripped and lower case when the
tokenizer lower-cases; then greedy longest-match-first WordPiece): word
pieces (BERT, MiniLM, DistilBERT) and word-level vocabularies (flaxtrain's own `texts_from_array` tokenizer: WordPiece over a vocabulary of whole words
gives a word or [UNK], as a word-level lookup does). Unigram models (T5, XLM-R, ALBERT) run as
tensorflow-text's `SentencepieceTokenizer` over a sentencepiece model built from tokenizer.json: the pieces
and scores in vocabulary order (so its ids are the tokenizer's), the precompiled normalization map, runs
of spaces collapsed and "▁" for spaces (Metaspace); ALBERT's NFKD, accent stripping and lower-casing run
as string ops before it (NFKC likewise). Generated ids go back to text through the same model (special ids
dropped, as `skip_special_tokens` does). Truncation and the special-token template ([CLS] ... [SEP], <s> ... </s>,
... </s>) follow the tokenizer's settings. Byte-level BPE (RoBERTa) has no such ops: `Unsupported` says
why. The export compares the graph's ids with the tokenizer's on the sample texts before it keeps the
text signature, and the SavedModel's outputs on them after.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

MIN_WIDTH = 8  # rows are padded at least this wide, as the predictor's smallest bucket


class Unsupported(Exception):
    """The tokenizer cannot run as tensorflow-text ops (the message says why)."""


def describe(tokenizer: Any, maxlen: int, add_special_tokens: bool) -> dict[str, Any]:
    """The settings `string_tokenizer` needs, read from a `tokenizers.Tokenizer`; raises Unsupported."""
    spec = json.loads(tokenizer.to_str())
    model, normalizer, pre = spec.get("model") or {}, spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    kind = model.get("type")
    if kind == "Unigram":
        return {**_unigram(spec, model, normalizer, pre), **_template(spec, maxlen, add_special_tokens)}
    if kind not in ("WordPiece", "WordLevel"):
        raise Unsupported(f"a {kind} tokenizer has no tensorflow-text ops here (word pieces, word vocabularies and "
                          "unigram models do)")
    if normalizer.get("type") != "BertNormalizer" or pre.get("type") != "BertPreTokenizer":
        raise Unsupported(f"normalizer {normalizer.get('type')} / pre-tokenizer {pre.get('type')} differ from BERT's")
    lower = bool(normalizer.get("lowercase"))
    strip = normalizer.get("strip_accents")
    if (lower if strip is None else bool(strip)) != lower:
        raise Unsupported("accents are stripped without lower-casing (or kept while lower-casing)")
    vocab = model["vocab"]
    template = _template(spec, maxlen, add_special_tokens)
    # BERT's normalizer: NFD and nonspacing marks dropped, then Unicode lower case; tensorflow-text's own
    # lower_case would case-fold under NFKC instead ('ﬁ' -> 'fi', '½' -> '1⁄2'), which BERT's does not.
    return {"kind": "wordpiece", "vocab": sorted(vocab, key=vocab.get), "ids": sorted(vocab.values()),
            "before": [("nfd",), ("stripaccents",), ("lowercase",)] if lower else [],
            "unk_token": model.get("unk_token", "[UNK]"),
            "suffix": model.get("continuing_subword_prefix", "##"), "max_chars": int(model.get("max_input_chars_per_word", 100)),
            **template}


def _template(spec: dict[str, Any], maxlen: int, add_special_tokens: bool) -> dict[str, Any]:
    """The special ids before and after a text (its post-processor) and the room left for its tokens."""
    prefix, suffix = [], []
    post = spec.get("post_processor") or {}
    if add_special_tokens and post:
        if post.get("type") == "BertProcessing":
            prefix, suffix = [post["cls"][1]], [post["sep"][1]]
        elif post.get("type") == "TemplateProcessing":
            specials = {name: entry["ids"] for name, entry in post.get("special_tokens", {}).items()}
            before = True
            for item in post["single"]:
                if "Sequence" in item:
                    before = False
                else:
                    (prefix if before else suffix).extend(specials[item["SpecialToken"]["id"]])
        else:
            raise Unsupported(f"post-processor {post.get('type')} is not a [CLS] ... [SEP] style template")
    return {"prefix": prefix, "suffix_ids": suffix, "room": int(maxlen) - len(prefix) - len(suffix),
            "pair": _pair_template(post) if add_special_tokens else [("A", 0), ("B", 1)]}


def _pair_template(post: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The post-processor's template for a pair of texts: ('special', ids, type id) and ('A' | 'B', type id)
    items in order."""
    if post.get("type") == "BertProcessing":
        cls, sep = [post["cls"][1]], [post["sep"][1]]
        return [("special", cls, 0), ("A", 0), ("special", sep, 0), ("B", 1), ("special", sep, 1)]
    if post.get("type") != "TemplateProcessing" or "pair" not in post:
        return [("A", 0), ("B", 1)]
    specials = {name: entry["ids"] for name, entry in post.get("special_tokens", {}).items()}
    return [("special", specials[item["SpecialToken"]["id"]], item["SpecialToken"].get("type_id", 0))
            if "SpecialToken" in item else (item["Sequence"]["id"], item["Sequence"].get("type_id", 0))
            for item in post["pair"]]


_STRING_STEPS = ("NFKD", "NFKC", "NFD", "NFC", "StripAccents", "Lowercase")  # string ops before the sentencepiece model


def _unigram(spec: dict[str, Any], model: dict[str, Any], normalizer: dict[str, Any], pre: dict[str, Any]
             ) -> dict[str, Any]:
    """A sentencepiece model (serialized ModelProto) equal to a tokenizer.json unigram model, and the
    string ops that run before it; raises Unsupported for normalizers and pre-tokenizers it cannot mirror."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    steps = normalizer.get("normalizers", []) if normalizer.get("type") == "Sequence" else [normalizer] if normalizer else []
    charsmap, collapse, before = "", False, []
    for step in steps:
        kind, pattern = step.get("type"), (step.get("pattern") or {})
        if kind == "Precompiled":
            charsmap = step.get("precompiled_charsmap") or ""
        elif kind == "Replace" and pattern.get("Regex") == " {2,}" and step.get("content") == " ":
            collapse = True
        elif kind == "Replace" and "String" in pattern:
            before.append(("replace", pattern["String"], step.get("content", "")))
        elif kind in _STRING_STEPS:
            before.append((kind.lower(),))
        else:
            raise Unsupported(f"normalizer step {kind} has no sentencepiece counterpart here")
    parts = [pre] if pre.get("type") != "Sequence" else pre.get("pretokenizers", [])
    metaspace = [p for p in parts if p.get("type") == "Metaspace"]
    others = [p.get("type") for p in parts if p.get("type") not in ("Metaspace", "WhitespaceSplit")]
    if len(metaspace) != 1 or others or metaspace[0].get("replacement", "▁") != "▁" or \
            metaspace[0].get("prepend_scheme", "always") not in ("always", "first"):
        raise Unsupported(f"pre-tokenizer {pre.get('type')} is not sentencepiece's Metaspace")
    if model.get("byte_fallback"):
        raise Unsupported("byte-fallback unigram models are not mirrored here")
    unk = model.get("unk_id")
    if unk is None:
        raise Unsupported("the unigram model has no unknown-token id")
    added = {entry["content"] for entry in spec.get("added_tokens", [])}
    proto = pb.ModelProto()
    kinds = pb.ModelProto.SentencePiece.Type
    for i, (piece, score) in enumerate(model["vocab"]):
        kind = kinds.UNKNOWN if i == unk else kinds.USER_DEFINED if piece in added else kinds.NORMAL
        proto.pieces.add(piece=piece, score=float(score), type=kind)
    trainer = proto.trainer_spec
    trainer.model_type = pb.TrainerSpec.UNIGRAM
    trainer.vocab_size = len(model["vocab"])
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = int(unk), -1, -1, -1
    trainer.unk_piece = model["vocab"][unk][0]
    norm = proto.normalizer_spec
    norm.name = "nmt_nfkc" if charsmap else "identity"
    if charsmap:
        import base64

        norm.precompiled_charsmap = base64.b64decode(charsmap)
    norm.add_dummy_prefix, norm.escape_whitespaces, norm.remove_extra_whitespaces = True, True, collapse
    decoder = spec.get("decoder") or {}
    special = sorted(entry["id"] for entry in spec.get("added_tokens", []) if entry.get("special"))
    return {"kind": "sentencepiece", "model": proto.SerializeToString(), "before": before,
            "detokenize": decoder.get("type") == "Metaspace", "special_ids": special}


def _before(texts: Any, steps: list[tuple[str, ...]]) -> Any:
    """The normalizer steps tokenizer.json runs before its sentencepiece-equivalent part, as string ops."""
    import tensorflow as tf
    import tensorflow_text as tft

    for step in steps:
        if step[0] == "replace":
            texts = tf.strings.regex_replace(texts, _regex_literal(step[1]), step[2])
        elif step[0] in ("nfkd", "nfkc", "nfd", "nfc"):
            texts = tft.normalize_utf8(texts, step[0].upper())
        elif step[0] == "stripaccents":
            texts = tf.strings.regex_replace(texts, r"\p{Mn}", "")
        elif step[0] == "lowercase":
            texts = tf.strings.lower(texts, encoding="utf-8")
    return texts


def _regex_literal(text: str) -> str:
    """`text` as an RE2 pattern that matches it literally."""
    return "".join("\\" + c if c in r"\.^$|?*+()[]{}" else c for c in text)


def _vocabulary(settings: dict[str, Any]) -> Any:
    """The word-piece vocabulary as a lookup table (piece -> int64 id, -1 for none)."""
    import tensorflow as tf

    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(settings["vocab"]), tf.constant(settings["ids"], tf.int64)),
        default_value=-1)


def _pieces(settings: dict[str, Any]) -> tuple[Callable[[Any], Any], Any]:
    """(strings -> int64 piece ids with one more ragged dimension, the object the SavedModel must keep):
    texts [batch] -> [batch, (pieces)]; words [batch, (words)] -> [batch, (words), (pieces)]."""
    import tensorflow as tf
    import tensorflow_text as tft

    if settings["kind"] == "sentencepiece":
        model = tft.SentencepieceTokenizer(model=settings["model"], out_type=tf.int32)

        def pieces_of(strings: Any) -> Any:  # the string ops before the model, on texts or ragged words
            normalized = tf.ragged.map_flat_values(lambda flat: _before(flat, settings["before"]), strings)
            return tf.cast(model.tokenize(normalized), tf.int64)

        return pieces_of, model  # the module tracks the model, so the SavedModel keeps it
    table = _vocabulary(settings)
    wordpiece = _wordpiece(table, settings)

    def pieces_of(strings: Any) -> Any:  # BERT's basic words, then their word pieces: one dimension of them
        pieces = wordpiece.tokenize(_bert_words(strings, settings)[1])
        return pieces.merge_dims(pieces.shape.rank - 2, pieces.shape.rank - 1)

    return pieces_of, table


def _framed(pieces: Any, settings: dict[str, Any], pad_id: int) -> Any:
    """Piece ids [batch, (n)] -> int32 [batch, width]: cut to the room, the special ids around them, padded
    with `pad_id` to at least MIN_WIDTH."""
    import tensorflow as tf

    rows = pieces.nrows()
    prefix = tf.constant(settings["prefix"], tf.int64)
    suffix = tf.constant(settings["suffix_ids"], tf.int64)
    pieces = tf.concat([tf.RaggedTensor.from_tensor(tf.tile(prefix[None], [rows, 1])), pieces[:, : settings["room"]],
                        tf.RaggedTensor.from_tensor(tf.tile(suffix[None], [rows, 1]))], axis=1)
    ids = tf.cast(pieces.to_tensor(default_value=pad_id), tf.int32)
    short = tf.maximum(0, MIN_WIDTH - tf.shape(ids)[1])
    return tf.pad(ids, [[0, 0], [0, short]], constant_values=pad_id)


def string_tokenizer(settings: dict[str, Any], pad_id: int) -> Callable[[Any], Any]:
    """texts (tf.string [batch]) -> int32 token ids [batch, width], padded with `pad_id` (tf ops only)."""
    import tensorflow as tf

    pieces_of, table = _pieces(settings)

    def tokenize(texts: Any) -> Any:
        return _framed(pieces_of(texts), settings, pad_id)

    tokenize.table = table
    if settings.get("detokenize"):
        drop = tf.constant(settings["special_ids"] or [-1], tf.int32)

        def detokenize(ids: Any) -> Any:
            """int32 ids [batch, n] -> tf.string [batch]: special ids dropped, pieces joined, '▁' -> space."""
            keep = tf.reduce_all(tf.not_equal(ids[..., None], drop), axis=-1)
            return table.detokenize(tf.ragged.boolean_mask(ids, keep))

        tokenize.detokenize = detokenize
    return tokenize


# flaxtrain.data.entities.split_words's pattern (words with inner - ' ’ ., or single punctuation marks) in
# RE2, whose \w and \s are ASCII only: Python's \w is a letter, number or underscore, its \s Unicode space.
_SPACE = r"\t\n\x{0B}\f\r\x{1C}-\x{1F} \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
_WORD = r"[\p{L}\p{N}_]+(?:[-'’.][\p{L}\p{N}_]+)*"
_MARK = rf"[^\p{{L}}\p{{N}}_{_SPACE}]"
WORD_PATTERN = f"{_WORD}|{_MARK}"


def word_tokenizer(settings: dict[str, Any], pad_id: int, unk_ids: list[int]) -> Callable[[Any], Any]:
    """texts (tf.string [batch]) -> (token ids int32 [batch, width], each kept word's first token int32
    [batch, words] (-1: none), the words tf.string [batch, words] ('': none)), as a sequence tagger's
    predictor splits and encodes them: words as `split_words` finds them, each tokenized on its own (a
    word with no pieces reads as `unk_ids`, the pieces of the unknown token), and the words whose first piece falls past the room
    left out of `word_starts`."""
    import tensorflow as tf
    import tensorflow_text as tft

    pieces_of, table = _pieces(settings)
    prefix_length = len(settings["prefix"])

    def tokenize(texts: Any) -> Any:
        # regex_split reads its input up to a NUL: the split runs on a copy with U+0001 in its place (one
        # byte, and a mark to WORD_PATTERN as NUL is), the words are cut from the texts themselves
        _, begin, end = tft.regex_split_with_offsets(tf.strings.regex_replace(texts, r"\x{0}", "\x01"),
                                                     f"{WORD_PATTERN}|[{_SPACE}]+", WORD_PATTERN)
        words = begin.with_flat_values(tf.strings.substr(tf.gather(texts, begin.value_rowids()), begin.flat_values,
                                                         end.flat_values - begin.flat_values))  # [batch, (words)]
        pieces = pieces_of(words)  # [batch, (words), (pieces)]
        per_word = pieces.values
        count = per_word.row_lengths()
        unknown = tf.tile(tf.constant(unk_ids, tf.int64)[None], [tf.shape(count)[0], 1])
        count = tf.where(count > 0, count, len(unk_ids))  # an empty word's pieces: the unknown token's
        kept = tf.ragged.range(per_word.row_lengths() + len(unk_ids)) < count[:, None]
        per_word = tf.ragged.boolean_mask(tf.concat([per_word, tf.RaggedTensor.from_tensor(unknown)], axis=1), kept)
        before = tf.cumsum(count, exclusive=True)  # pieces before each word, counted over the whole batch
        row_first = tf.gather(tf.concat([before, tf.reduce_sum(count, keepdims=True)], 0), words.row_starts())
        offset = before - tf.gather(row_first, words.value_rowids())  # ... and within its own text
        starts = tf.RaggedTensor.from_value_rowids(offset + prefix_length, words.value_rowids(), nrows=words.nrows())
        starts = tf.ragged.boolean_mask(starts, starts < prefix_length + settings["room"])
        word_starts = tf.cast(starts.to_tensor(default_value=-1), tf.int32)
        word_starts = tf.pad(word_starts, [[0, 0], [0, tf.maximum(0, 1 - tf.shape(word_starts)[1])]], constant_values=-1)
        dense_words = words.to_tensor(default_value="")
        dense_words = tf.pad(dense_words, [[0, 0], [0, tf.maximum(0, 1 - tf.shape(dense_words)[1])]], constant_values="")
        ids = _framed(pieces.with_values(per_word).merge_dims(1, 2), settings, pad_id)
        return ids, word_starts, dense_words

    tokenize.table = table
    return tokenize


# BERT's basic tokenizer (tokenizers' BertNormalizer + BertPreTokenizer) as one RE2 split of the original
# text, so that offsets point into it: Unicode spaces separate words, punctuation marks and CJK characters
# are words of their own; control and format characters are dropped from inside words afterwards.
_BERT_SPACE = r"[\t\n\r\p{Zs}]+"
_BERT_KEPT = (r"[!-/:-@\[-`{-~\p{P}]|[\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
              r"\x{2B740}-\x{2B81F}\x{2B820}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}]")
_DROPPED = r"[\p{Cc}\p{Cf}\x{0}\x{FFFD}]"


def _bert_normalized(flat: Any, settings: dict[str, Any]) -> Any:
    """Strings as BERT's normalizer leaves them: control and format characters dropped, then the tokenizer's
    accent stripping and lower case."""
    import tensorflow as tf

    return _before(tf.strings.regex_replace(flat, _DROPPED, ""), settings["before"])


def _bert_words(strings: Any, settings: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """BERT's basic words of strings [...] (texts, or ragged words): (the words as written, normalized,
    their first byte and the byte after them), each with one more ragged dimension. A word of control
    characters only is no word; a format character inside a word (a zero-width space, a soft hyphen)
    joins its two halves, as tokenizers' BertNormalizer removes it before the split."""
    import tensorflow as tf
    import tensorflow_text as tft

    # regex_split reads its input up to a NUL; the normalizer drops NUL as it drops U+0001 (one byte too)
    strings = tf.ragged.map_flat_values(tf.strings.regex_replace, strings, r"\x{0}", "\x01")
    words, begin, end = tft.regex_split_with_offsets(strings, f"{_BERT_SPACE}|{_BERT_KEPT}", _BERT_KEPT)
    normal = tf.ragged.map_flat_values(lambda flat: _bert_normalized(flat, settings), words)
    keep = tf.not_equal(normal, "")
    return tuple(tf.ragged.boolean_mask(x, keep) for x in (words, normal, begin, end))


def _wordpiece(table: Any, settings: dict[str, Any]) -> Any:
    """Greedy longest-match-first word pieces over `table`, with the tokenizer's suffix mark and limits."""
    import tensorflow as tf
    import tensorflow_text as tft

    return tft.WordpieceTokenizer(table, suffix_indicator=settings["suffix"], max_bytes_per_word=settings["max_chars"],
                                  token_out_type=tf.int64, unknown_token=settings["unk_token"])


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
        raise Unsupported("answer spans need the character offsets of word pieces: tensorflow-text's sentencepiece "
                          "offsets count the '▁' of a word, the tokenizer's do not")
    table = _vocabulary(settings)
    wordpiece = _wordpiece(table, settings)

    def chars(strings: Any) -> Any:
        return tf.cast(tf.strings.length(strings, unit="UTF8_CHAR"), tf.int32)

    def pieces_of(texts: Any) -> tuple[Any, Any, Any]:
        words, normal, begin, end = _bert_words(texts, settings)
        pieces, piece_begin, piece_end = wordpiece.tokenize_with_offsets(normal)  # [batch, (words), (pieces)]
        original = tf.gather(texts, normal.value_rowids())  # each word's text
        first = _chars_before(original, begin.flat_values)
        after = _chars_before(original, end.flat_values)
        length = chars(normal.flat_values)
        per_char = tf.strings.unicode_split(words.flat_values, "UTF-8")  # [words, (characters)]
        became = per_char.with_flat_values(chars(_bert_normalized(per_char.flat_values, settings)))  # normalized characters of each
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
        shape = tf.stack([tf.cast(rows, tf.int64), tf.maximum(tf.constant(MIN_WIDTH, tf.int64), tf.reduce_max(
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
