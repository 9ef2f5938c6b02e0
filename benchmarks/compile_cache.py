"""`flaxtrain train` with JAX's persistent compilation cache off, cold (empty folder) and warm (second run).

Run:  .venv/bin/python benchmarks/compile_cache.py [--configs textcnn_rotten_tomatoes.py:tiny minilm_rotten_tomatoes.py:tiny]

Each run is the `flaxtrain train` command in a child process (the same command a user runs), timed from
start to saved predictor; the epoch lines' first-step time is not separable from the Python start, so the
whole command is the measure. Order per config: off, cold, warm, off, warm (noise hits each setting).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(config: str, workdir: Path, cache: Path | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME")}
    overrides = []
    if cache is None:
        overrides.append("--config.train.compilation_cache=False")
    else:
        env["XDG_CACHE_HOME"] = str(cache)
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flaxtrain.cli", "train", "--config", f"{ROOT}/configs/{config}",
                           f"--config.train.workdir={workdir}", *overrides], capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", nargs="+", default=["textcnn_rotten_tomatoes.py:tiny", "minilm_rotten_tomatoes.py:tiny"])
    args = parser.parse_args()
    print(describe())
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            cache, work = Path(tmp) / f"cache-{len(results)}", Path(tmp) / "run"
            times = {"off": [run(config, work, None)], "cold": [run(config, work, cache)], "warm": [run(config, work, cache)]}
            times["off"].append(run(config, work, None))
            times["warm"].append(run(config, work, cache))
            files = sum(1 for _ in (cache / "flaxtrain" / "xla").iterdir())
            row = {name: statistics.median(values) for name, values in times.items()}
            row["warm_speedup"] = row["off"] / row["warm"]
            row["cache_files"] = files
            results[config] = row
            print(f"{config:<36} off {row['off']:6.1f} s  cold {row['cold']:6.1f} s  warm {row['warm']:6.1f} s  "
                  f"warm/off {row['warm_speedup']:.2f}x  ({files} cached programs)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
