"""The train step's compile time, HLO size and step time with the finite-update flag as flaxtrain computes
it (`flaxtrain.train.step.all_true`: one sort of the per-leaf flags) against a chain of `&` (what the step
did before 2026-12-02; XLA copied the chain into every leaf's update fusion).

Run:  .venv/bin/python benchmarks/step_compile.py [--rounds 2]

Models: the Marian-layout translation model of tests/text/test_translation.py (width 128, 2 + 2 layers,
vocabulary 1000, Django en->de pairs, batch 32 x 32) and all-MiniLM-L6-v2 with a new 2-class head (6
layers, width 384; the 256 rotten_tomatoes texts longer than 200 characters, batch 32). Each
measurement is a child process (a fresh XLA: no in-memory compile cache, the persistent cache off);
the two flags alternate round by round. Reported: XLA's compile time of the train step (the longest compilation of the first epoch), the
optimized HLO's line count, and the step time (the faster of two epochs of 8 batches, after the first).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def child(model: str, flag: str) -> dict[str, float]:
    import jax

    import flaxtrain
    import flaxtrain.text
    from flaxtrain.data import django_translations, translation_from_pairs
    from flaxtrain.train import partition, step

    if flag == "chain":
        def chain(flags):
            out = flags[0]
            for f in flags[1:]:
                out = out & f
            return out

        step.all_true = chain
    lowered = []
    original = partition.CompiledSteps._lowered_train

    def keep(self, *args):
        lowered.append(original(self, *args))
        return lowered[-1]

    partition.CompiledSteps._lowered_train = keep  # the step as fit lowers it (for its FLOP count)
    if model == "marian":
        sources, targets = django_translations("de")
        trn, _, _ = translation_from_pairs(sources[:256], targets[:256], val_pct=0, maxlen=32, max_target_length=32,
                                           vocab_size=1000, verbose=0)
        net = flaxtrain.get_model("marian", trn, params=dict(hidden_size=128, num_layers=2, num_decoder_layers=2,
                                                              head_dim=32, mlp_dim=256, dropout_rate=0.0))
    else:
        data = flaxtrain.text.load_data("rotten_tomatoes", train=True)
        t = flaxtrain.text.Transformer("minilm", maxlen=128, class_names=data.class_names)
        long = [x for x in data.train_x if len(x) > 200][:256]  # texts of about 128 word pieces: one bucket
        trn = t.preprocess_train(long, [data.train_y[data.train_x.index(x)] for x in long], verbose=0)
        net = t.get_classifier()
    learner = flaxtrain.get_learner(net, trn, batch_size=32)
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: compiles.append(seconds) if event == "/jax/core/compile/backend_compile_duration"
        else None)
    learner.fit(1e-4, 1, verbose=0)  # compiles the train step: the longest of its XLA compilations
    epochs = []
    for _ in range(2):
        start = time.perf_counter()
        learner.fit(1e-4, 1, verbose=0)
        epochs.append(time.perf_counter() - start)
    return {"compile_s": max(compiles), "step_s": min(epochs) / learner.train_data.num_batches(32),
            "hlo_lines": len(lowered[0].compile().as_text().splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "FLAG"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    print(describe())
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"} | {"PYTHONPATH": str(ROOT)}
    for _ in range(args.rounds):
        for model in ("marian", "minilm"):
            for flag in ("sort", "chain"):
                done = subprocess.run([sys.executable, __file__, "--child", model, flag], capture_output=True, text=True,
                                      cwd=ROOT, env=env)
                if done.returncode:
                    raise SystemExit(done.stderr[-2000:])
                results.setdefault(model, {}).setdefault(flag, []).append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("\n| model | flag | HLO lines | compile (median) | step (median) |\n|---|---|---|---|---|")
    for model, flags in results.items():
        for flag, runs in flags.items():
            print(f"| {model} | {flag} | {runs[0]['hlo_lines']} | {statistics.median(r['compile_s'] for r in runs):.1f} s | "
                  f"{statistics.median(r['step_s'] for r in runs) * 1000:.0f} ms |")
        ratio = statistics.median(r["compile_s"] for r in flags["chain"]) / statistics.median(r["compile_s"] for r in flags["sort"])
        print(f"| {model} | chain / sort compile time | | {ratio:.2f}x | |")


if __name__ == "__main__":
    main()
