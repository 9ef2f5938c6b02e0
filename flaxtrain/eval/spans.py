"""Answer-span decoding of extractive QA: n-best start/end pairs over every window of a question."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())


def best_span(logits: Sequence[np.ndarray], offsets: Sequence[np.ndarray], context: str, *, n_best: int = 20,
              max_answer_length: int = 30, allow_no_answer: bool = False, null_threshold: float = 0.0,
              ) -> dict[str, object]:
    """The best answer to one question from its windows.

    Args:
      logits: per window, [tokens, 2] start and end logits (longer rows are padding, ignored).
      offsets: per window, [tokens, 2] character span of each context token, (-1, -1) elsewhere.
      context: the question's context text.
      n_best: start and end candidates kept per window (the highest logits).
      max_answer_length: longest span, in tokens.
      allow_no_answer: SQuAD 2.0 style: answer '' when the [CLS] score beats every span's by
        more than `null_threshold`.

    Returns:
      {'answer', 'start', 'end' (character offsets in `context`), 'score'}: score is the span's
      probability, p(start) * p(end), under each window's softmax over its tokens ('' answers score
      the [CLS] pair).
    """
    best: dict[str, object] = {"answer": "", "start": 0, "end": 0, "score": 0.0}
    best_logit = null_logit = -np.inf
    for window_logits, window_offsets in zip(logits, offsets):
        n = len(window_offsets)
        start, end = window_logits[:n, 0].astype(np.float64), window_logits[:n, 1].astype(np.float64)
        log_start, log_end = _log_softmax(start), _log_softmax(end)
        null_logit = max(null_logit, start[0] + end[0])
        context_tokens = np.flatnonzero(window_offsets[:, 0] >= 0)
        if len(context_tokens) == 0:
            continue
        starts = context_tokens[np.argsort(-start[context_tokens], kind="stable")[:n_best]]
        ends = context_tokens[np.argsort(-end[context_tokens], kind="stable")[:n_best]]
        for s in starts:
            for e in ends:
                if e < s or e - s + 1 > max_answer_length:
                    continue
                logit = start[s] + end[e]
                if logit > best_logit:
                    best_logit = logit
                    a, b = int(window_offsets[s, 0]), int(window_offsets[e, 1])
                    best = {"answer": context[a:b], "start": a, "end": b,
                            "score": float(np.exp(log_start[s] + log_end[e]))}
    if allow_no_answer and null_logit > best_logit + null_threshold:
        return {"answer": "", "start": 0, "end": 0, "score": float(1.0 / (1.0 + np.exp(best_logit - null_logit)))}
    return best
