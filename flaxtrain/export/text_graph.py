"""A predictor's tokenizer as TensorFlow ops (tensorflow-text), for SavedModels that take raw strings.

`describe(tokenizer, maxlen, add_special_tokens)` reads the tokenizer's own description (its
tokenizer.json); `string_tokenizer(settings, pad_id)` builds the same pipeline from tensorflow-text's
`BertTokenizer` (BERT's basic tokenizer: lower case and accents stripped when the tokenizer lower-cases, punctuation and CJK split;
then greedy longest-match-first WordPiece): word pieces (BERT, MiniLM, DistilBERT) and word-level
vocabularies (flaxtrain's own `texts_from_array` tokenizer: WordPiece over a vocabulary of whole words
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
    return {"kind": "wordpiece", "vocab": sorted(vocab, key=vocab.get), "ids": sorted(vocab.values()),
            "lower_case": lower, "unk_token": model.get("unk_token", "[UNK]"),
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
    return {"prefix": prefix, "suffix_ids": suffix, "room": int(maxlen) - len(prefix) - len(suffix)}


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


def string_tokenizer(settings: dict[str, Any], pad_id: int) -> Callable[[Any], Any]:
    """texts (tf.string [batch]) -> int32 token ids [batch, width], padded with `pad_id` (tf ops only)."""
    import tensorflow as tf
    import tensorflow_text as tft

    if settings["kind"] == "sentencepiece":
        model = tft.SentencepieceTokenizer(model=settings["model"], out_type=tf.int32)

        def pieces_of(texts: Any) -> Any:
            return tf.cast(model.tokenize(_before(texts, settings["before"])), tf.int64)

        table = model  # tracked by the module, so the SavedModel keeps the sentencepiece model
    else:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(settings["vocab"]), tf.constant(settings["ids"], tf.int64)),
            default_value=-1)
        tokenizer = tft.BertTokenizer(table, suffix_indicator=settings["suffix"], max_bytes_per_word=settings["max_chars"],
                                      token_out_type=tf.int64, unknown_token=settings["unk_token"],
                                      lower_case=settings["lower_case"])

        def pieces_of(texts: Any) -> Any:
            return tokenizer.tokenize(texts).merge_dims(1, 2)

    prefix = tf.constant(settings["prefix"], tf.int64)
    suffix = tf.constant(settings["suffix_ids"], tf.int64)

    def tokenize(texts: Any) -> Any:
        pieces = pieces_of(texts)[:, : settings["room"]]  # [batch, (tokens)]
        rows = tf.shape(texts)[0]
        pieces = tf.concat([tf.RaggedTensor.from_tensor(tf.tile(prefix[None], [rows, 1])), pieces,
                            tf.RaggedTensor.from_tensor(tf.tile(suffix[None], [rows, 1]))], axis=1)
        ids = tf.cast(pieces.to_tensor(default_value=pad_id), tf.int32)
        short = tf.maximum(0, MIN_WIDTH - tf.shape(ids)[1])
        return tf.pad(ids, [[0, 0], [0, short]], constant_values=pad_id)

    tokenize.table = table
    if settings.get("detokenize"):
        drop = tf.constant(settings["special_ids"] or [-1], tf.int32)

        def detokenize(ids: Any) -> Any:
            """int32 ids [batch, n] -> tf.string [batch]: special ids dropped, pieces joined, '▁' -> space."""
            keep = tf.reduce_all(tf.not_equal(ids[..., None], drop), axis=-1)
            return model.detokenize(tf.ragged.boolean_mask(ids, keep))

        tokenize.detokenize = detokenize
    return tokenize
