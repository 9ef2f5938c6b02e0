"""Scores of generated text: BLEU and chrF (sacrebleu) for translation, ROUGE (rouge-score) for summaries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def translation_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU (Papineni et al. 2002) and chrF (Popovic 2015) with sacrebleu's standard
    settings (13a tokenisation), one reference per sentence; both 0-100."""
    import sacrebleu

    refs = [list(references)]
    return {"bleu": float(sacrebleu.corpus_bleu(list(predictions), refs).score),
            "chrf": float(sacrebleu.corpus_chrf(list(predictions), refs).score)}


def rouge_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 (Lin 2004) with Porter stemming, as rouge-score
    computes them; 0-100."""
    from rouge_score import rouge_scorer

    kinds = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
    return {k: float(100 * np.mean([s[k].fmeasure for s in scores])) if scores else 0.0 for k in kinds}


def generation_metrics(task: str, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """BLEU/chrF for 'translation', ROUGE-1/2/L for 'summarization'."""
    return translation_metrics(predictions, references) if task == "translation" else rouge_metrics(predictions, references)
