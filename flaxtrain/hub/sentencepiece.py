"""Sentencepiece models (T5's spiece.model, Marian's source.spm + vocab.json) as `tokenizers` Tokenizers.

The model file is read with sentencepiece's own protobuf schema; encoding then runs in Hugging Face
`tokenizers` (a Unigram model with the file's pieces and scores, its precompiled normaliser and the
'▁' word-start pre-tokenizer), the same conversion `transformers` applies to make fast tokenizers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flaxtrain.errors import FlaxtrainError

MODEL_FILES = ("spiece.model", "source.spm", "sentencepiece.bpe.model", "sentencepiece.model")
_UNIGRAM = 1


def tokenizer_from_sentencepiece(folder: str | Path) -> Any:
    """The folder's sentencepiece model as a `tokenizers.Tokenizer` that appends `</s>` (T5, Marian).

    Marian folders map pieces to model ids through vocab.json; the ids then follow it.
    """
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    folder = Path(folder)
    file = next((folder / name for name in MODEL_FILES if (folder / name).is_file()), None)
    if file is None:
        raise FlaxtrainError(f"{folder} has no tokenizer.json and no sentencepiece model ({', '.join(MODEL_FILES)}): "
                             "save the tokenizer with the checkpoint")
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(file.read_bytes())
    except Exception as err:  # protobuf's DecodeError and friends
        raise FlaxtrainError(f"{file} is not a readable sentencepiece model ({err})") from None
    if proto.trainer_spec.model_type != _UNIGRAM:
        raise FlaxtrainError(f"{file} is a sentencepiece BPE model; flaxtrain reads unigram models (T5, Marian)")
    pieces = [(p.piece, p.score) for p in proto.pieces]
    unk = proto.trainer_spec.unk_id
    vocab_file = folder / "vocab.json"
    if vocab_file.is_file():  # Marian: model ids from vocab.json, scores from the sentencepiece model
        ids = json.loads(vocab_file.read_text())
        scores = dict(pieces)
        floor = min(scores.values()) - 10.0
        pieces = [(piece, scores.get(piece, floor)) for piece, _ in sorted(ids.items(), key=lambda kv: kv[1])]
        unk = ids.get("<unk>", unk)
    eos_piece = "</s>"
    eos = next((i for i, (piece, _) in enumerate(pieces) if piece == eos_piece), None)
    if eos is None:
        raise FlaxtrainError(f"{file} has no {eos_piece} piece: not a T5 or Marian vocabulary")
    tokenizer = Tokenizer(models.Unigram(pieces, unk, byte_fallback=proto.trainer_spec.byte_fallback))
    steps = [normalizers.Replace(Regex(" {2,}"), " ")]
    if proto.normalizer_spec.precompiled_charsmap:
        steps.insert(0, normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {eos_piece}", special_tokens=[(eos_piece, eos)])
    return tokenizer
