"""Serving speed of exported models: each export format against flaxtrain's predictor and PyTorch eager.

Run:  .venv/bin/python benchmarks/serving.py [--rounds 5] [--model textcnn|minilm|both]

For the default TextCNN (all-MiniLM-L6-v2's word-piece vectors, maxlen 80) and the MiniLM classifier,
on rotten_tomatoes test texts: batch-1 latency (ms, median over rounds of 50 calls) and batch-32
throughput (texts/s) of
  - predictor.predict_proba(texts)   flaxtrain, tokenization included
  - jit                               the predictor's jitted serving function on token ids (no tokenization)
  - export 'jax'                      jax.export's StableHLO through serve.py's loader
  - export 'onnx'                     onnxruntime (CPU provider) on the .onnx file
  - export 'saved_model' ids / texts  TensorFlow on the SavedModel: its `serve_ids` signature, and its
                                      `serving_default` one on raw strings (tensorflow-text tokenizes in
                                      the graph; compare with predictor.predict_proba)
  - export 'tflite' / int8            TFLite's interpreter (rows padded to maxlen; float32, and int8
                                      weights from quantize=True)
  - PyTorch eager                     the same weights in torch (BertForSequenceClassification from
                                      save_pretrained; an equivalent TextCNN for the TextCNN), no_grad
All but the first and the texts signature take the same padded token ids. The script first checks that
every runtime gives the same probabilities (max |diff| printed), then times them in interleaved rounds;
it prints the machine, artifact sizes and ratios to PyTorch (above 1: faster than PyTorch). The TextCNN
first trains one epoch on rotten_tomatoes so that the int8 model's accuracy change on the test set means
something; the MiniLM head stays as initialised (speed does not depend on it) and reports how many test
labels int8 changes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import torch
from torch import nn as tnn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

import flaxtrain  # noqa: E402
import flaxtrain.text  # noqa: E402
from flaxtrain.export import pad_rows, runtime  # noqa: E402


class TorchTextCNN(tnn.Module):
    """flaxtrain's TextCNN in PyTorch: zero-padded windows, masked max pooling, weights copied in."""

    def __init__(self, params: dict, widths: tuple[int, ...]):
        super().__init__()
        table = np.asarray(params["embed"]["embedding"])
        self.widths = widths
        self.embed = tnn.Embedding.from_pretrained(torch.tensor(table), freeze=True)
        self.convs = tnn.ModuleList()
        for w in widths:
            kernel = np.asarray(params[f"conv{w}"]["kernel"])  # [w, in, out]
            conv = tnn.Conv1d(kernel.shape[1], kernel.shape[2], w)
            conv.weight.data = torch.tensor(kernel.transpose(2, 1, 0).copy())
            conv.bias.data = torch.tensor(np.asarray(params[f"conv{w}"]["bias"]))
            self.convs.append(conv)
        head = np.asarray(params["head"]["kernel"])
        self.head = tnn.Linear(head.shape[0], head.shape[1])
        self.head.weight.data = torch.tensor(head.T.copy())
        self.head.bias.data = torch.tensor(np.asarray(params["head"]["bias"]))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != 0
        x = (self.embed(ids) * mask[..., None]).transpose(1, 2)  # [b, m, t]
        pooled = []
        for width, conv in zip(self.widths, self.convs):
            h = torch.relu(conv(tnn.functional.pad(x, (0, width - 1))))  # [b, f, t]
            starts = mask.clone()
            starts[:, 0] = True
            pooled.append(h.masked_fill(~starts[:, None, :], float("-inf")).amax(-1))
        return torch.softmax(self.head(torch.cat(pooled, -1)), -1)


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def _median_seconds(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(name: str, predictor, torch_model, texts: list[str], rounds: int, workdir: Path,
          test: tuple[list[str], list[str]]) -> None:
    import onnxruntime

    ids = {n: pad_rows(predictor.preproc.encode(texts[:n]), predictor.preproc.pad_id) for n in (1, 32)}
    serving, _ = predictor.task.export_outputs(predictor.model)
    jitted = jax.jit(serving)
    params = predictor.model.params
    jax_dir = predictor.export(workdir / f"{name}.jax", format="jax", texts=texts[:8])
    onnx_file = predictor.export(workdir / f"{name}_onnx" / "model.onnx", format="onnx", texts=texts[:8])
    saved_dir = predictor.export(workdir / f"{name}_sm", format="saved_model", texts=texts[:8])
    lite_file = predictor.export(workdir / f"{name}_tflite" / "model.tflite", format="tflite", texts=texts[:8])
    int8_file = predictor.export(workdir / f"{name}_int8" / "model.tflite", format="tflite", quantize=True,
                                 texts=texts[:32])
    served = runtime.load(jax_dir)
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    saved, lite, int8 = runtime.load(saved_dir), runtime.load(lite_file), runtime.load(int8_file)

    def run_torch(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch_model(torch.tensor(x, dtype=torch.long)).numpy()

    runners = {
        "predictor.predict_proba": lambda n: predictor.predict_proba(texts[:n]),
        "jit (ids in)": lambda n: np.asarray(jitted(params, ids[n])[0]),
        "export 'jax'": lambda n: served({"input_ids": ids[n]})["probabilities"],
        "export 'onnx'": lambda n: session.run(["probabilities"], {"input_ids": ids[n]})[0],
        "export 'saved_model' ids": lambda n: saved({"input_ids": ids[n]})["probabilities"],
        "export 'saved_model' texts": lambda n: saved.texts(texts[:n])["probabilities"],
        "export 'tflite'": lambda n: lite({"input_ids": ids[n]})["probabilities"],
        "export 'tflite' int8": lambda n: int8({"input_ids": ids[n]})["probabilities"],
        "PyTorch eager": lambda n: run_torch(ids[n]),
    }
    reference = runners["jit (ids in)"](32)
    sizes = {"jax": jax_dir, "onnx": onnx_file, "saved_model": saved_dir / "saved_model",
             "tflite": lite_file, "tflite int8": int8_file}
    print(f"\n== {name}: {predictor.model}   sizes (MiB): "
          + ", ".join(f"{k} {_size_mb(v):.1f}" for k, v in sizes.items()))
    test_texts, test_labels = test
    names = list(predictor.preproc.class_names)
    float_labels = predictor.predict(test_texts)
    int8_probs = np.concatenate([int8({"input_ids": pad_rows(predictor.preproc.encode(test_texts[i:i + 256]),
                                                             predictor.preproc.pad_id)})["probabilities"]
                                 for i in range(0, len(test_texts), 256)])
    int8_labels = [names[i] for i in int8_probs.argmax(-1)]
    truth = np.asarray([str(x) for x in test_labels])
    print(f"  int8 on the {len(test_texts)} test texts: accuracy {np.mean(np.asarray(int8_labels) == truth):.4f} "
          f"(float32 {np.mean(np.asarray(float_labels, str) == truth):.4f}); labels changed on "
          f"{np.mean(np.asarray(int8_labels) != np.asarray(float_labels, str)):.2%} of the texts")
    for label, fn in runners.items():
        print(f"  {label:26s} max |diff| to jit at batch 32: {np.max(np.abs(np.asarray(fn(32)) - reference)):.2e}")
    latency = {label: [] for label in runners}
    throughput = {label: [] for label in runners}
    for _ in range(rounds):  # interleaved: machine noise hits every runtime alike
        for label, fn in runners.items():
            fn(1), fn(32)  # warm (the first call of a shape compiles)
            latency[label].append(1e3 * _median_seconds(lambda: fn(1), 50))
            throughput[label].append(32 / _median_seconds(lambda: fn(32), 10))
    torch_lat, torch_thr = statistics.median(latency["PyTorch eager"]), statistics.median(throughput["PyTorch eager"])
    print(f"  {'':26s} {'batch 1 ms':>11s} {'x PyTorch':>10s} {'batch 32 texts/s':>17s} {'x PyTorch':>10s}")
    for label in runners:
        lat, thr = statistics.median(latency[label]), statistics.median(throughput[label])
        print(f"  {label:26s} {lat:11.2f} {torch_lat / lat:10.2f} {thr:17.0f} {thr / torch_thr:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", choices=("textcnn", "minilm", "both"), default="both")
    args = parser.parse_args()
    print(describe())
    print(f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    test = flaxtrain.text.load_data("rotten_tomatoes", train=False)
    texts = [str(t) for t in test.val_x[:64]]
    test_set = ([str(t) for t in test.val_x], list(test.val_y))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.model in ("textcnn", "both"):
            data = flaxtrain.text.load_data("rotten_tomatoes", train=True)
            model = flaxtrain.get_model("textcnn", train_data=data, maxlen=80, word_vectors="minilm")
            flaxtrain.get_learner(model, batch_size=50).fit_onecycle(1e-3, 1, verbose=0)
            predictor = flaxtrain.get_predictor(model)
            torch_model = TorchTextCNN(jax.device_get(model.params), tuple(model.config.kernel_sizes)).eval()
            bench("textcnn", predictor, torch_model, texts, args.rounds, workdir, test_set)
        if args.model in ("minilm", "both"):
            import transformers

            t = flaxtrain.text.Transformer("minilm", maxlen=128, class_names=["rotten", "fresh"])
            predictor = flaxtrain.get_predictor(t.get_classifier(verbose=0), preproc=t)
            folder = predictor.save_pretrained(workdir / "minilm_hf")
            reference = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()

            class Probabilities(tnn.Module):
                def forward(self, ids: torch.Tensor) -> torch.Tensor:
                    return torch.softmax(reference(input_ids=ids, attention_mask=(ids != 0).long()).logits, -1)

            bench("minilm", predictor, Probabilities(), texts, args.rounds, workdir, test_set)


if __name__ == "__main__":
    main()
