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


def vocabulary(settings: dict[str, Any]) -> Any:
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
    table = vocabulary(settings)
    split = wordpiece(table, settings)

    def pieces_of(strings: Any) -> Any:  # BERT's basic words, then their word pieces: one dimension of them
        pieces = split.tokenize(bert_words(strings, settings)[1])
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


def bert_normalized(flat: Any, settings: dict[str, Any]) -> Any:
    """Strings as BERT's normalizer leaves them: control and format characters dropped, then the tokenizer's
    accent stripping and lower case."""
    import tensorflow as tf

    return _before(tf.strings.regex_replace(flat, _DROPPED, ""), settings["before"])


def bert_words(strings: Any, settings: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """BERT's basic words of strings [...] (texts, or ragged words): (the words as written, normalized,
    their first byte and the byte after them), each with one more ragged dimension. A word of control
    characters only is no word; a format character inside a word (a zero-width space, a soft hyphen)
    joins its two halves, as tokenizers' BertNormalizer removes it before the split."""
    import tensorflow as tf
    import tensorflow_text as tft

    # regex_split reads its input up to a NUL; the normalizer drops NUL as it drops U+0001 (one byte too)
    strings = tf.ragged.map_flat_values(tf.strings.regex_replace, strings, r"\x{0}", "\x01")
    words, begin, end = tft.regex_split_with_offsets(strings, f"{_BERT_SPACE}|{_BERT_KEPT}", _BERT_KEPT)
    normal = tf.ragged.map_flat_values(lambda flat: bert_normalized(flat, settings), words)
    keep = tf.not_equal(normal, "")
    return tuple(tf.ragged.boolean_mask(x, keep) for x in (words, normal, begin, end))


def wordpiece(table: Any, settings: dict[str, Any]) -> Any:
    """Greedy longest-match-first word pieces over `table`, with the tokenizer's suffix mark and limits."""
    import tensorflow as tf
    import tensorflow_text as tft

    return tft.WordpieceTokenizer(table, suffix_indicator=settings["suffix"], max_bytes_per_word=settings["max_chars"],
                                  token_out_type=tf.int64, unknown_token=settings["unk_token"])
