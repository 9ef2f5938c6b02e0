"""Training with glibc's default allocator against `flaxtrain.tune_allocator()`, through the public Learner.

Run:  .venv/bin/python benchmarks/allocator.py [--rounds 2] [--steps 60]

Allocator options are fixed when a process starts, so each measurement is a child process of this
script; the two settings alternate (default, tuned, default, tuned, ...) so that machine noise hits both.
Each child builds the model, trains 10 steps to compile and warm up, then times `--steps` steps and reports wall
time, kernel (sys) time and minor page faults of those steps. Models: TextCNN with MiniLM's 30,522 x 384
word-piece table on rotten_tomatoes (batch 50, maxlen 80), and MiniLM fine-tuned on rotten_tomatoes
(batch 32, maxlen 64): both carry a 47 MB embedding table whose gradient and Adam update XLA allocates
every step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

MODELS = ("textcnn", "minilm")


def child(name: str, steps: int, tuned: bool) -> dict[str, float]:
    if tuned:
        from flaxtrain.allocator import tune_allocator

        assert tune_allocator(), "the allocator could not be tuned (not glibc, or threads already running)"
    import flaxtrain
    import flaxtrain.text

    data = flaxtrain.text.load_data("rotten_tomatoes", train=True)
    if name == "textcnn":
        model = flaxtrain.get_model("textcnn", train_data=data, maxlen=80, word_vectors="minilm")
        batch = 50
    else:
        model = flaxtrain.get_model("minilm", train_data=data, maxlen=64)
        batch = 32
    learner = flaxtrain.get_learner(model, batch_size=batch)
    learner.val_data = None  # steps only: no validation pass at the end of the timed run
    learner.fit_onecycle(1e-4, max_steps=10, verbose=0)  # compile and warm up
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    learner.fit_onecycle(1e-4, max_steps=steps, verbose=0)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    return {"step_s": wall / steps, "sys_s": (after.ru_stime - before.ru_stime) / steps,
            "faults": (after.ru_minflt - before.ru_minflt) / steps}


def measure(name: str, steps: int, tuned: bool) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(steps), *(["--tuned"] * tuned)],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: textcnn, minilm")
    parser.add_argument("--child")
    parser.add_argument("--tuned", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.tuned)))
        return
    print(describe())
    for name in args.models.split(","):
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for _ in range(args.rounds):
            for tuned in (False, True):
                runs[tuned].append(measure(name, args.steps, tuned))
        med = {t: {k: statistics.median(r[k] for r in runs[t]) for k in runs[t][0]} for t in runs}
        print(f"{name}: {args.steps} steps, median of {args.rounds} rounds")
        for tuned, label in ((False, "glibc default"), (True, "tune_allocator")):
            m = med[tuned]
            print(f"  {label:15s} step {m['step_s'] * 1e3:7.1f} ms  sys {m['sys_s'] * 1e3:6.1f} ms/step  "
                  f"faults {m['faults']:8.0f}/step")
        print(f"  speed-up {med[False]['step_s'] / med[True]['step_s']:.2f}x "
              f"(best rounds: {min(r['step_s'] for r in runs[False]) / min(r['step_s'] for r in runs[True]):.2f}x)")


if __name__ == "__main__":
    main()
