"""Decoding for encoder-decoder models: greedy, beam search and sampling, each one jitted `lax.while_loop`.

The decoder runs incrementally on a fixed-size key/value cache ([b * beams, max_length] per layer),
so every step has the same shapes and the whole generation compiles once per (batch, source length,
max_new_tokens). Beam search follows the vectorised algorithm of `transformers`' `generate` (2 *
beams candidates a step, finished hypotheses scored sum log p / length ** length_penalty, the same
early-stopping rules), so both return the same tokens for the same model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain._xla_flags import compiler_options
from flaxtrain.errors import FlaxtrainError, nearest

_NEG = -1.0e9  # transformers' "very large negative" for finished or impossible beams


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings, named as `transformers`' `generate` names them."""

    max_new_tokens: int = 64  # tokens generated after the decoder start token
    num_beams: int = 1  # 1: greedy (or sampling); > 1: beam search
    length_penalty: float = 1.0  # beam scores: sum log p / (length ** length_penalty)
    early_stopping: bool | str = False  # True: stop once num_beams hypotheses finished; 'never': canonical beam search
    num_return_sequences: int = 1  # best beams (or samples) returned per input
    do_sample: bool = False  # sample from the (warped) distribution instead of taking the best token
    temperature: float = 1.0  # sampling: logits / temperature
    top_k: int = 0  # sampling: keep the k most likely tokens (0: all)
    top_p: float = 1.0  # sampling: keep the smallest set of tokens whose probability reaches top_p
    min_new_tokens: int = 0  # end of sequence forbidden before this many new tokens
    no_repeat_ngram_size: int = 0  # forbid repeating any n-gram of this size (0: off)
    decoder_start_id: int = 0
    eos_id: int = 1
    pad_id: int = 0
    forced_bos_id: int | None = None  # forced as the first generated token
    forced_eos_id: int | None = None  # forced when the max length is reached
    bad_token_ids: tuple[int, ...] = ()  # never generated

    def __post_init__(self) -> None:
        checks = [(self.max_new_tokens >= 1, f"max_new_tokens must be at least 1, got {self.max_new_tokens}"),
                  (self.num_beams >= 1, f"num_beams must be at least 1, got {self.num_beams}"),
                  (self.num_return_sequences >= 1, f"num_return_sequences must be at least 1, got {self.num_return_sequences}"),
                  (self.temperature > 0, f"temperature must be positive, got {self.temperature}"),
                  (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
                  (self.early_stopping in (True, False, "never"), f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")]
        if self.num_beams > 1 and not self.do_sample:
            checks.append((self.num_return_sequences <= self.num_beams,
                           f"num_return_sequences {self.num_return_sequences} exceeds num_beams {self.num_beams}: raise num_beams"))
        if self.num_beams == 1 and not self.do_sample:
            checks.append((self.num_return_sequences == 1, "num_return_sequences > 1 needs num_beams > 1 or do_sample=True"))
        if self.do_sample and self.num_beams > 1:
            checks.append((False, "sampling with beams is not supported: use do_sample=True with num_beams=1"))
        for ok, message in checks:
            if not ok:
                raise FlaxtrainError(message)

    @property
    def max_length(self) -> int:
        """Decoder sequence length, the start token included."""
        return self.max_new_tokens + 1


def generation_config(defaults: Mapping[str, Any] | None = None, **overrides: Any) -> GenerationConfig:
    """A GenerationConfig from a checkpoint's generation settings (transformers' names: max_length,
    min_length, bad_words_ids, eos_token_id, ...) and the caller's keyword overrides."""
    values: dict[str, Any] = {}
    d = dict(defaults or {})
    names = {"decoder_start_token_id": "decoder_start_id", "eos_token_id": "eos_id", "pad_token_id": "pad_id",
             "forced_bos_token_id": "forced_bos_id", "forced_eos_token_id": "forced_eos_id"}
    for key, field in names.items():
        if d.get(key) is not None:
            value = d[key]
            values[field] = int(value[0] if isinstance(value, (list, tuple)) else value)
    for key in ("num_beams", "length_penalty", "early_stopping", "no_repeat_ngram_size", "num_return_sequences",
                "max_new_tokens"):
        if d.get(key) is not None:
            values[key] = d[key]
    if "max_new_tokens" not in values and d.get("max_length"):
        values["max_new_tokens"] = int(d["max_length"]) - 1
    if d.get("min_length"):
        values["min_new_tokens"] = max(int(d["min_length"]) - 1, 0)
    if d.get("bad_words_ids"):
        values["bad_token_ids"] = tuple(int(w[0]) for w in d["bad_words_ids"] if len(w) == 1)
    fields = {f.name for f in dataclasses.fields(GenerationConfig)}
    for key, value in overrides.items():
        if key == "max_length":
            key, value = "max_new_tokens", value - 1
        if key == "min_length":
            key, value = "min_new_tokens", max(value - 1, 0)
        if key not in fields:
            raise FlaxtrainError(f"unknown generation setting {key!r}{nearest(key, fields)}")
        values[key] = tuple(value) if isinstance(value, list) else value
    return GenerationConfig(**values)


def _process(scores: jax.Array, cur_len: jax.Array, sequences: jax.Array, g: GenerationConfig) -> jax.Array:
    """transformers' logits processors on [B, V] scores for the token at position `cur_len`."""
    vocab = scores.shape[-1]
    ids = jnp.arange(vocab)
    neg_inf = jnp.asarray(-jnp.inf, scores.dtype)
    if g.min_new_tokens > 0:
        scores = jnp.where((cur_len < g.min_new_tokens + 1) & (ids == g.eos_id)[None], neg_inf, scores)
    if g.no_repeat_ngram_size > 0:
        scores = jnp.where(_banned_ngrams(sequences, cur_len, g.no_repeat_ngram_size, vocab), neg_inf, scores)
    if g.bad_token_ids:
        scores = jnp.where(jnp.isin(ids, jnp.asarray(g.bad_token_ids))[None], neg_inf, scores)
    if g.forced_bos_id is not None:
        forced = jnp.where(ids == g.forced_bos_id, 0.0, neg_inf).astype(scores.dtype)[None]
        scores = jnp.where(cur_len == 1, forced, scores)
    if g.forced_eos_id is not None:
        forced = jnp.where(ids == g.forced_eos_id, 0.0, neg_inf).astype(scores.dtype)[None]
        scores = jnp.where(cur_len == g.max_length - 1, forced, scores)
    return scores


def _banned_ngrams(sequences: jax.Array, cur_len: jax.Array, n: int, vocab: int) -> jax.Array:
    """[B, V] True for tokens that would repeat an n-gram already in sequences[:, :cur_len]."""
    batch, length = sequences.shape
    starts = jnp.arange(length)
    match = jnp.broadcast_to((starts + n - 1 < cur_len)[None, :], (batch, length))  # n-grams inside the prefix
    for k in range(n - 1):  # their first n - 1 tokens equal the prefix's last n - 1
        last = jax.lax.dynamic_index_in_dim(sequences, cur_len - (n - 1) + k, axis=1, keepdims=False)  # [B]
        shifted = jnp.take(sequences, jnp.minimum(starts + k, length - 1), axis=1)  # [B, L]
        match = match & (shifted == last[:, None])
    match = match & (cur_len + 1 >= n)
    following = jnp.take(sequences, jnp.minimum(starts + n - 1, length - 1), axis=1)  # [B, L]
    rows = jnp.broadcast_to(jnp.arange(batch)[:, None], following.shape)
    return jnp.zeros((batch, vocab), bool).at[rows, following].max(match)


def _warp(logits: jax.Array, g: GenerationConfig) -> jax.Array:
    """Temperature, top-k and top-p (nucleus) filtering, as transformers' warpers apply them."""
    logits = logits / g.temperature
    neg_inf = jnp.asarray(-jnp.inf, logits.dtype)
    if g.top_k > 0:
        kth = jax.lax.top_k(logits, min(g.top_k, logits.shape[-1]))[0][:, -1:]
        logits = jnp.where(logits < kth, neg_inf, logits)
    if g.top_p < 1.0:
        order = jnp.argsort(logits, axis=-1)  # ascending
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        remove_sorted = cumulative <= 1 - g.top_p
        remove_sorted = remove_sorted.at[:, -1].set(False)  # keep at least one token
        remove = jnp.zeros_like(remove_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(remove_sorted)
        logits = jnp.where(remove, neg_inf, logits)
    return logits


def _step_fn(module: Any, params: Any, valid: jax.Array):
    def step(cache: Any, tokens: jax.Array, encoder_hidden: jax.Array | None) -> tuple[jax.Array, Any]:
        logits, mutated = module.apply({"params": params, "cache": cache}, tokens, encoder_hidden, valid,
                                       incremental=True, method="decode", mutable=["cache"])
        return logits[:, -1].astype(jnp.float32), mutated["cache"]

    return step


def _empty_cache(module: Any, params: Any, batch: int, max_length: int, hidden: jax.Array, valid: jax.Array) -> Any:
    def shapes() -> Any:
        _, variables = module.apply({"params": params}, jnp.zeros((batch, max_length), jnp.int32), hidden, valid,
                                    incremental=True, method="decode", mutable=["cache"])
        return variables["cache"]

    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(shapes))


def decode_loop(params: Any, input_ids: jax.Array, attention_mask: jax.Array, rng: jax.Array, *, module: Any,
                g: GenerationConfig) -> tuple[jax.Array, jax.Array]:
    """[b * n, max_length] sequences (start token first) and [b * n] scores; n = num_return_sequences."""
    hidden = module.apply({"params": params}, input_ids, attention_mask, method="encode")
    valid = attention_mask.astype(bool)
    copies = g.num_beams if g.num_beams > 1 else g.num_return_sequences
    if copies > 1:  # every beam (or sample) of an input attends to that input
        hidden, valid = jnp.repeat(hidden, copies, axis=0), jnp.repeat(valid, copies, axis=0)
    rows = hidden.shape[0]
    step = _step_fn(module, params, valid)
    cache = _empty_cache(module, params, rows, g.max_length, hidden, valid)
    start = jnp.full((rows, 1), g.decoder_start_id, jnp.int32)
    logits, cache = step(cache, start, hidden)  # fills the cross-attention keys/values once
    if g.num_beams > 1:
        return _beam_search(step, logits, cache, rows // g.num_beams, g)
    return _greedy_or_sample(step, logits, cache, rows, rng, g)


def _deterministic(g: GenerationConfig) -> None:
    """Exports decode deterministically: a one-line error for settings that sample."""
    if g.do_sample:
        raise FlaxtrainError("an export decodes deterministically, but this model's generation config samples: "
                             "set its do_sample to False first")


def serving_function(module: Any, g: GenerationConfig) -> Any:
    """serving(params, input_ids [b, s]) -> ('sequences' [b, max_new_tokens] int32,): the whole generation
    loop under `g` (deterministic), pad ids after each row's end-of-sequence token, as `generate` returns
    them; the source padding is the model's pad id. The exports of the 'jax' and 'saved_model' formats."""
    _deterministic(g)
    pad = module.config.pad_id

    def serving(params: Any, input_ids: jax.Array) -> tuple[jax.Array, ...]:
        mask = (input_ids != pad).astype(jnp.int32)
        sequences, _ = decode_loop(params, input_ids, mask, jax.random.key(0), module=module, g=g)
        tokens = sequences[:, 1:]
        eos = (tokens == g.eos_id).astype(jnp.int32)
        return (jnp.where(jnp.cumsum(eos, axis=1) - eos > 0, g.pad_id, tokens).astype(jnp.int32),)

    return serving


def step_functions(module: Any, g: GenerationConfig, format: str = "onnx") -> tuple[Any, Any]:
    """Greedy decoding cut into the two functions a runtime without loops of its own runs (the ONNX export):

      prefill(params, input_ids [b, s]) -> (scores [b, v], cache): the encoder, the empty cache and the
        decoder start token's step; `scores` are the processed scores of the first generated token;
      step(params, tokens [b, 1], cur_len [], sequences [b, max_length], attention_mask [b, s], cache)
        -> (scores, cache): `tokens` (the token just written at position cur_len - 1 of `sequences`)
        through the decoder, the processed scores of the token at `cur_len`.

    The runtime takes argmax(scores), pads finished rows and stops at max_length or when every row has
    ended, as `_greedy_or_sample` does."""
    _deterministic(g)
    if g.num_beams > 1:
        raise FlaxtrainError(f"format={format!r} holds greedy decoding (one cached decoder step that serve.py loops "
                             f"over), but this model decodes with {g.num_beams} beams: export format='jax' or "
                             "'saved_model' (the whole beam search), or set model.generation['num_beams'] = 1")
    pad = module.config.pad_id

    def prefill(params: Any, input_ids: jax.Array) -> tuple[jax.Array, Any]:
        # arrays of the batch's (symbolic) size are broadcast scalars: converters of shape-polymorphic
        # graphs take broadcasts where their jnp.full / jnp.zeros rewrites want concrete sizes
        def filled(shape: tuple[Any, ...], value: Any, dtype: Any) -> jax.Array:
            return jnp.broadcast_to(jnp.asarray(value, dtype), shape)

        valid = input_ids != pad
        hidden = module.apply({"params": params}, input_ids, valid.astype(jnp.int32), method="encode")
        rows = input_ids.shape[0]
        cache = jax.tree.map(lambda s: filled(s.shape, 0, s.dtype),
                             jax.eval_shape(lambda: _empty_cache(module, params, rows, g.max_length, hidden, valid)))
        start = filled((rows, 1), g.decoder_start_id, jnp.int32)
        logits, cache = _step_fn(module, params, valid)(cache, start, hidden)
        positions = jax.lax.broadcasted_iota(jnp.int32, (rows, g.max_length), 1)
        sequences = jnp.where(positions == 0, g.decoder_start_id, g.pad_id).astype(jnp.int32)
        return _process(logits, jnp.asarray(1, jnp.int32), sequences, g), cache

    def step(params: Any, tokens: jax.Array, cur_len: jax.Array, sequences: jax.Array, attention_mask: jax.Array,
             cache: Any) -> tuple[jax.Array, Any]:
        logits, cache = _step_fn(module, params, attention_mask.astype(bool))(cache, tokens, None)
        return _process(logits, cur_len, sequences, g), cache

    return prefill, step


def _greedy_or_sample(step, logits, cache, rows, rng, g: GenerationConfig):
    length = g.max_length
    sequences = jnp.full((rows, length), g.pad_id, jnp.int32).at[:, 0].set(g.decoder_start_id)
    state = (jnp.asarray(1, jnp.int32), sequences, jnp.zeros(rows, bool), jnp.zeros(rows, jnp.float32), cache, logits)

    def cond(state):
        cur_len, _, finished, *_ = state
        return (cur_len < length) & ~jnp.all(finished)

    def body(state):
        cur_len, sequences, finished, score, cache, logits = state
        scores = _process(logits, cur_len, sequences, g)
        if g.do_sample:
            token = jax.random.categorical(jax.random.fold_in(rng, cur_len), _warp(scores, g), axis=-1).astype(jnp.int32)
        else:
            token = jnp.argmax(scores, axis=-1).astype(jnp.int32)
        token = jnp.where(finished, g.pad_id, token)
        log_p = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), token[:, None], axis=-1)[:, 0]
        score = score + jnp.where(finished, 0.0, log_p)
        sequences = jax.lax.dynamic_update_slice(sequences, token[:, None], (0, cur_len))
        finished = finished | (token == g.eos_id)
        logits, cache = step(cache, token[:, None], None)
        return cur_len + 1, sequences, finished, score, cache, logits

    _, sequences, _, score, _, _ = jax.lax.while_loop(cond, body, state)
    return sequences, score


def _gather(x: jax.Array, index: jax.Array) -> jax.Array:
    """x [b, k, ...] rows picked by index [b, j] -> [b, j, ...]."""
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def _beam_search(step, logits, cache, batch: int, g: GenerationConfig):
    beams, length = g.num_beams, g.max_length
    keep = 2 * beams  # candidates a step: enough to continue num_beams beams when num_beams of them end
    running = jnp.full((batch, beams, length), g.pad_id, jnp.int32).at[:, :, 0].set(g.decoder_start_id)
    running_scores = jnp.zeros((batch, beams), jnp.float32).at[:, 1:].set(_NEG)
    state = dict(cur_len=jnp.asarray(1, jnp.int32), running=running, running_scores=running_scores,
                 sequences=running, scores=jnp.full((batch, beams), _NEG, jnp.float32),
                 finished=jnp.zeros((batch, beams), bool), open=jnp.ones((batch, 1), bool),
                 hits=jnp.zeros((batch, keep), bool), cache=cache, logits=logits)
    top_beams = jnp.arange(keep) < beams
    positions = jnp.arange(length)

    def cond(s):
        improvable = jnp.any(s["open"])
        all_done = jnp.all(s["finished"]) & (g.early_stopping is True)
        return improvable & ~all_done & ~jnp.all(s["hits"])

    def body(s):
        cur_len = s["cur_len"]
        vocab = s["logits"].shape[-1]
        log_probs = _process(jax.nn.log_softmax(s["logits"], axis=-1), cur_len, s["running"].reshape(batch * beams, length), g)
        log_probs = log_probs.reshape(batch, beams, vocab) + s["running_scores"][:, :, None]
        topk_scores, topk_index = jax.lax.top_k(log_probs.reshape(batch, beams * vocab), keep)
        source, token = topk_index // vocab, (topk_index % vocab).astype(jnp.int32)
        candidates = _gather(s["running"], source)
        candidates = jnp.where(positions == cur_len, token[:, :, None], candidates)
        hits = (token == g.eos_id) | (cur_len + 1 >= length)
        # the best num_beams candidates that go on
        alive_scores = topk_scores + hits.astype(jnp.float32) * _NEG
        nxt = jax.lax.top_k(alive_scores, beams)[1]
        running, running_scores, origin = _gather(candidates, nxt), _gather(alive_scores, nxt), _gather(source, nxt)
        # finished hypotheses enter the kept set when they beat its worst
        just_finished = hits & top_beams[None, :]
        final = topk_scores / ((cur_len + 1 - 1).astype(jnp.float32) ** g.length_penalty)
        full = jnp.all(s["finished"], axis=-1, keepdims=True) & (g.early_stopping is True)
        final = final + full.astype(jnp.float32) * _NEG + (~s["open"]).astype(jnp.float32) * _NEG
        final = final + (~just_finished).astype(jnp.float32) * _NEG
        merged_scores = jnp.concatenate([s["scores"], final], axis=1)
        pick = jax.lax.top_k(merged_scores, beams)[1]
        sequences = _gather(jnp.concatenate([s["sequences"], candidates], axis=1), pick)
        scores = _gather(merged_scores, pick)
        finished = _gather(jnp.concatenate([s["finished"], just_finished], axis=1), pick)
        # the caches follow their beams
        flat_origin = (jnp.arange(batch)[:, None] * beams + origin).reshape(-1)
        cache = _reorder_cache(s["cache"], flat_origin)
        cur_len = cur_len + 1
        if g.early_stopping == "never" and g.length_penalty > 0:
            best_length = jnp.asarray(length - 1, jnp.float32)
        else:
            best_length = (cur_len - 1).astype(jnp.float32)
        best_possible = running_scores[:, :1] / best_length ** g.length_penalty
        worst_finished = jnp.where(finished, jnp.min(scores, axis=1, keepdims=True), _NEG)
        still_open = s["open"] & jnp.any(best_possible > worst_finished, axis=-1, keepdims=True)
        last = jax.lax.dynamic_index_in_dim(running, cur_len - 1, axis=2, keepdims=False).reshape(batch * beams, 1)
        logits, cache = step(cache, last, None)
        return dict(cur_len=cur_len, running=running, running_scores=running_scores, sequences=sequences, scores=scores,
                    finished=finished, open=still_open, hits=hits, cache=cache, logits=logits)

    s = jax.lax.while_loop(cond, body, state)
    n = g.num_return_sequences
    return s["sequences"][:, :n].reshape(batch * n, length), s["scores"][:, :n].reshape(batch * n)


def _reorder_cache(cache: Any, index: jax.Array) -> Any:
    """Self-attention keys/values ([b, t, h, d]; [layers, b, t, h, d] under scanned blocks) follow their
    beams; the encoder's (identical across an input's beams) and the position counters stay."""
    def pick(path, x):
        name = getattr(path[-1], "key", None)
        return jnp.take(x, index, axis=x.ndim - 4) if name in ("cached_key", "cached_value") else x

    return jax.tree_util.tree_map_with_path(pick, cache)


_COMPILED: dict[tuple[Any, GenerationConfig], Any] = {}


def compiled_generate(module: Any, g: GenerationConfig):
    """The jitted generate function of (module, settings); it compiles once per input shape."""
    key = (module.config, g)
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(lambda params, ids, mask, rng: decode_loop(params, ids, mask, rng, module=module, g=g),
                                 compiler_options=compiler_options())
    return _COMPILED[key]


def generate(module: Any, params: Any, input_ids: Any, attention_mask: Any | None = None, *,
             config: GenerationConfig | None = None, rng: jax.Array | None = None, **settings: Any) -> np.ndarray:
    """Generated token ids [b * num_return_sequences, max_new_tokens], start token dropped; after a
    sequence's end-of-sequence token come pad ids.

    Args:
      module: a `models.Seq2Seq`.
      params: its params.
      input_ids: [b, s] source ids (pad id where padded).
      attention_mask: [b, s], 1 on real tokens (default: input_ids != pad id).
      config: the GenerationConfig (default: built from `settings` and the model's special ids).
      rng: a `jax.random.key`, needed when sampling.
      **settings: GenerationConfig fields (num_beams=4, max_new_tokens=..., length_penalty=...).
    """
    cfg = module.config
    if config is None:
        ids = dict(decoder_start_id=cfg.decoder_start_id, eos_id=cfg.eos_id, pad_id=cfg.pad_id,
                   forced_bos_id=cfg.forced_bos_id, forced_eos_id=cfg.forced_eos_id)
        config = GenerationConfig(**{**ids, **settings})
    elif settings:
        config = dataclasses.replace(config, **settings)
    if config.do_sample and rng is None:
        raise FlaxtrainError("sampling needs an explicit key: pass rng=jax.random.key(seed)")
    input_ids = jnp.asarray(input_ids, jnp.int32)
    mask = (input_ids != cfg.pad_id) if attention_mask is None else jnp.asarray(attention_mask)
    sequences, _ = compiled_generate(module, config)(params, input_ids, mask.astype(jnp.int32),
                                                     jax.random.key(0) if rng is None else rng)
    return finish(np.asarray(sequences)[:, 1:], config)


def finish(tokens: np.ndarray, g: GenerationConfig) -> np.ndarray:
    """Pad ids after each row's first end-of-sequence token."""
    ended = np.cumsum(tokens == g.eos_id, axis=1) - (tokens == g.eos_id) > 0
    return np.where(ended, g.pad_id, tokens)
