"""A predictor's tokenizer as TensorFlow ops (tensorflow-text), for SavedModels that take raw strings.

`describe(tokenizer, maxlen, add_special_tokens)` reads the tokenizer's own description (its
tokenizer.json); `string_tokenizer(settings, pad_id)` builds the same pipeline from tensorflow-text's
`BertTokenizer` (BERT's basic tokenizer: lower case and accents stripped when the tokenizer lower-cases, punctuation and CJK split;
then greedy longest-match-first WordPiece): word pieces (BERT, MiniLM, DistilBERT) and word-level
vocabularies (flaxtrain's own `texts_from_array` tokenizer: WordPiece over a vocabulary of whole words
gives a word or [UNK], as a word-level lookup does). Truncation and the [CLS] ... [SEP] template follow the
tokenizer's settings. Other tokenizers (byte-level BPE, unigram) have no such ops: `Unsupported` says why.
The SavedModel export proves the result on the sample texts before it is kept.
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
    if kind not in ("WordPiece", "WordLevel"):
        raise Unsupported(f"a {kind} tokenizer has no tensorflow-text ops here (word pieces and word vocabularies do)")
    if normalizer.get("type") != "BertNormalizer" or pre.get("type") != "BertPreTokenizer":
        raise Unsupported(f"normalizer {normalizer.get('type')} / pre-tokenizer {pre.get('type')} differ from BERT's")
    lower = bool(normalizer.get("lowercase"))
    strip = normalizer.get("strip_accents")
    if (lower if strip is None else bool(strip)) != lower:
        raise Unsupported("accents are stripped without lower-casing (or kept while lower-casing)")
    vocab = model["vocab"]
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
            raise Unsupported(f"post-processor {post.get('type')} is not BERT's template")
    room = int(maxlen) - len(prefix) - len(suffix)
    return {"vocab": sorted(vocab, key=vocab.get), "ids": sorted(vocab.values()), "lower_case": lower,
            "unk_token": model.get("unk_token", "[UNK]"), "suffix": model.get("continuing_subword_prefix", "##"),
            "max_chars": int(model.get("max_input_chars_per_word", 100)), "prefix": prefix, "suffix_ids": suffix,
            "room": room}


def string_tokenizer(settings: dict[str, Any], pad_id: int) -> Callable[[Any], Any]:
    """texts (tf.string [batch]) -> int32 token ids [batch, width], padded with `pad_id` (tf ops only)."""
    import tensorflow as tf
    import tensorflow_text as tft

    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(settings["vocab"]), tf.constant(settings["ids"], tf.int64)),
        default_value=-1)
    tokenizer = tft.BertTokenizer(table, suffix_indicator=settings["suffix"], max_bytes_per_word=settings["max_chars"],
                                  token_out_type=tf.int64, unknown_token=settings["unk_token"],
                                  lower_case=settings["lower_case"])
    prefix = tf.constant(settings["prefix"], tf.int64)
    suffix = tf.constant(settings["suffix_ids"], tf.int64)

    def tokenize(texts: Any) -> Any:
        pieces = tokenizer.tokenize(texts).merge_dims(1, 2)[:, : settings["room"]]  # [batch, (tokens)]
        rows = tf.shape(texts)[0]
        pieces = tf.concat([tf.RaggedTensor.from_tensor(tf.tile(prefix[None], [rows, 1])), pieces,
                            tf.RaggedTensor.from_tensor(tf.tile(suffix[None], [rows, 1]))], axis=1)
        ids = tf.cast(pieces.to_tensor(default_value=pad_id), tf.int32)
        short = tf.maximum(0, MIN_WIDTH - tf.shape(ids)[1])
        return tf.pad(ids, [[0, 0], [0, short]], constant_values=pad_id)

    tokenize.table = table
    return tokenize
