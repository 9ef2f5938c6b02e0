"""Pretraining on WikiText-2 and what it buys: a small BERT from scratch, then fine-tuned on rotten_tomatoes
against the same network from random init; and MiniLM's masked-LM loss before and after continuing.

Run:  .venv/bin/python benchmarks/pretrain_wikitext.py [--minutes 30] [--minilm-minutes 8] [--out DIR]

1. A WordPiece tokenizer (8,192 pieces) trained on WikiText-2 train.
2. BERT (4 layers, width 256, 4 heads, MLP 1024) pretrained with masked-LM on WikiText-2 train (rows of
   128 packed tokens, batch 32, 1cycle at 1e-3) for as many steps as fit in `--minutes` (the step time
   measured by a short calibration run first); validated on a part of WikiText-2 valid ten times along the
   way (the loss curve) and on all of it at the end, against the unigram baseline (training-token
   frequencies) on the same masked positions.
3. The pretrained network saved as a BertForMaskedLM folder, then fine-tuned on rotten_tomatoes
   (`flaxtrain.text.Transformer` on that folder; maxlen 64, batch 32, 1cycle at 1e-4, `--finetune-epochs`)
   against the same architecture and tokenizer from random init, same steps: the gain pretraining buys.
4. MiniLM (all-MiniLM-L6-v2, its MiniLM word pieces; its checkpoint has no masked-LM head, so the head
   starts untrained) continued on WikiText-2 train for `--minilm-minutes`: valid masked-token loss
   before and after.

Prints the machine and the XLA float32 matmul peak measured here, and writes one JSON of every number.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder_step import matmul_peak_gflops  # noqa: E402
from machine import describe  # noqa: E402

import flaxtrain  # noqa: E402
import flaxtrain.text  # noqa: E402
from flaxtrain.data import wikitext2  # noqa: E402
from flaxtrain.data.lm import LMDataset  # noqa: E402

SIZES = dict(num_layers=4, hidden_size=256, num_heads=4, mlp_dim=1024)
BATCH, MAXLEN, LR = 32, 128, 1e-3
CURVE_DOCUMENTS = 300  # WikiText-2 valid paragraphs read for each point of the loss curve


def unigram_baseline(trn: LMDataset, val: LMDataset) -> dict[str, float]:
    """Loss and top-1 accuracy of predicting each masked token by its training frequency (add-one)."""
    counts = np.ones(trn.preproc.vocab_size)
    for ids, segments in trn.rows():
        np.add.at(counts, ids[segments > 0], 1)
    log_p = np.log(counts / counts.sum())
    labels = np.concatenate([b["labels"][b["labels"] >= 0] for b in flaxtrain.tasks.named("masked_lm").batches(
        val, batch_size=64)[0]])
    return {"loss": float(-log_p[labels].mean()), "accuracy": float(np.mean(labels == np.argmax(counts)))}


def steps_in(minutes: float, make_learner, lr: float) -> tuple[int, float]:
    """Steps that fit in `minutes`, from a 6-step calibration run's step time (compile excluded)."""
    probe = make_learner()
    record = probe.fit_onecycle(lr, max_steps=6, verbose=0)[-1]
    return max(int(minutes * 60 / record["step_s"]), 10), float(record["step_s"])


def pretrain(args: argparse.Namespace, out: Path, tokenizer) -> dict:
    trn, val, preproc = flaxtrain.text.lm_from_files(wikitext2("train"), wikitext2("valid"), tokenizer=tokenizer,
                                                     maxlen=MAXLEN, verbose=0)
    curve_val = LMDataset(val.source, preproc, max_documents=CURVE_DOCUMENTS)
    unpacked = LMDataset(val.source, preproc, packing=False)
    result = {"rows_per_epoch": len(trn), "valid_padding_packed": val.padding_fraction(),
              "valid_padding_unpacked": unpacked.padding_fraction(), "unigram": unigram_baseline(trn, val)}
    print(f"WikiText-2 train: {len(trn)} packed rows of {MAXLEN}; valid padding {result['valid_padding_packed']:.1%} "
          f"packed vs {result['valid_padding_unpacked']:.1%} one paragraph per row; unigram baseline {result['unigram']}")

    def learner():
        model = flaxtrain.get_model("bert", train_data=trn, params=SIZES)
        return flaxtrain.get_learner(model, train_data=trn, val_data=curve_val, batch_size=BATCH, eval_batch_size=64,
                                     clip_norm=1.0, weight_decay=0.01)

    steps, step_s = steps_in(args.minutes, learner, LR)
    print(f"calibration: {step_s:.3f} s/step -> {steps} steps in {args.minutes} min ({steps * BATCH * MAXLEN:,} tokens)")
    run = learner()
    start = time.perf_counter()
    history = run.fit_onecycle(LR, max_steps=steps, verbose=1, evaluate_every=max(steps // 10, 1))
    result["pretrain_s"] = time.perf_counter() - start
    result["steps"], result["history"], result["curve"] = steps, history, run.evaluations
    result["valid"] = run.validate(val, print_report=False)
    print(f"pretrained {steps} steps in {result['pretrain_s'] / 60:.1f} min: valid {result['valid']} "
          f"(unigram loss {result['unigram']['loss']:.3f})")
    folder = flaxtrain.get_predictor(run.model, preproc).save_pretrained(out / "bert_wikitext")
    return result | {"folder": str(folder)}


def random_twin(folder: Path, out: Path) -> Path:
    """The same BERT architecture and tokenizer with PyTorch's random initialisation."""
    import transformers

    config = transformers.BertConfig.from_pretrained(folder)
    transformers.BertModel(config).save_pretrained(out)
    shutil.copy(folder / "tokenizer.json", out / "tokenizer.json")
    return out


def finetune(folder: Path, epochs: int) -> dict:
    data = flaxtrain.text.load_data("rotten_tomatoes", train=True)
    test = flaxtrain.text.load_data("rotten_tomatoes", train=False)
    t = flaxtrain.text.Transformer(str(folder), maxlen=64, class_names=data.class_names)
    trn = t.preprocess_train(data.train_x, data.train_y, verbose=0)
    val = t.preprocess_test(test.val_x, test.val_y)
    learner = flaxtrain.get_learner(t.get_classifier(verbose=0), train_data=trn, val_data=val, batch_size=BATCH)
    history = learner.fit_onecycle(1e-4, epochs, verbose=0)
    return {"val_acc": history[-1]["val_acc"], "val_loss": history[-1]["val_loss"], "steps": epochs * trn.num_batches(BATCH)}


def minilm(minutes: float) -> dict:
    trn, val, _ = flaxtrain.text.lm_from_files(wikitext2("train"), wikitext2("valid"), tokenizer="minilm", maxlen=MAXLEN,
                                               verbose=0)

    def learner():
        model = flaxtrain.get_model("minilm", train_data=trn)
        return flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=BATCH, eval_batch_size=64,
                                     clip_norm=1.0, weight_decay=0.01)

    steps, step_s = steps_in(minutes, learner, 1e-4)
    run = learner()
    before = run.validate(print_report=False)
    run.fit_onecycle(1e-4, max_steps=steps, verbose=0)
    after = run.validate(print_report=False)
    print(f"MiniLM continued {steps} steps ({step_s:.3f} s/step): valid before {before}, after {after}")
    return {"steps": steps, "step_s": step_s, "before": before, "after": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="pretraining budget of the small BERT")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--minilm-minutes", type=float, default=8.0, help="0 skips MiniLM")
    parser.add_argument("--out", default="runs/pretrain_wikitext")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xla_peak, _ = matmul_peak_gflops()
    report = {"machine": describe(), "xla_matmul_peak_gflops": xla_peak, "args": vars(args)}
    print(f"{report['machine']}; XLA float32 matmul peak {xla_peak:.0f} GFLOP/s")
    start = time.perf_counter()
    tokenizer = flaxtrain.text.train_tokenizer(wikitext2("train"), vocab_size=8192)
    report["tokenizer_s"] = time.perf_counter() - start
    report["pretrain"] = pretrain(args, out, tokenizer)
    folder = Path(report["pretrain"]["folder"])
    report["finetune_pretrained"] = finetune(folder, args.finetune_epochs)
    report["finetune_random"] = finetune(random_twin(folder, out / "bert_random"), args.finetune_epochs)
    gain = report["finetune_pretrained"]["val_acc"] - report["finetune_random"]["val_acc"]
    print(f"rotten_tomatoes test accuracy after {report['finetune_pretrained']['steps']} steps: pretrained "
          f"{report['finetune_pretrained']['val_acc']:.4f}, random init {report['finetune_random']['val_acc']:.4f} "
          f"(gain {gain:+.4f})")
    if args.minilm_minutes > 0:
        report["minilm"] = minilm(args.minilm_minutes)
    (out / "result.json").write_text(json.dumps(report, indent=1, default=float))
    print(f"wrote {out / 'result.json'}")


if __name__ == "__main__":
    main()
