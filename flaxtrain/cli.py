"""`flaxtrain train | evaluate | predict | export | verify`: the command line over the public API.

  flaxtrain train [--config configs/x.py[:variant]] [--config.section.key=value ...]
  flaxtrain evaluate --model DIR [--data NAME] [--data_dir DIR] [--download]
  flaxtrain predict --model DIR "text" ["text" ...]
  flaxtrain export --model DIR [--format jax|onnx|saved_model|tflite] [--quantize] [--ids-dtype int64] OUT
  flaxtrain verify OUT

Bad input ends with one line on stderr (`error: ...`) and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from flaxtrain.errors import FlaxtrainError

DEFAULT_CONFIG = "textcnn_rotten_tomatoes.py"


def default_config_path() -> Path:
    """configs/textcnn_rotten_tomatoes.py of the source tree this package runs from."""
    path = Path(__file__).resolve().parents[1] / "configs" / DEFAULT_CONFIG
    if not path.is_file():
        raise FlaxtrainError(f"default config {path} not found: pass --config path/to/config.py")
    return path


def _parse_config(argv: list[str]):
    """Parses --config FILE[:variant] and --config.x=y overrides with ml_collections' config flags."""
    from absl import flags
    from ml_collections import config_flags

    given = next((argv[i + 1] if a == "--config" and i + 1 < len(argv) else a[len("--config="):]
                  for i, a in enumerate(argv) if a == "--config" or a.startswith("--config=")), None)
    if given is not None and not Path(given.split(":", 1)[0]).is_file():
        raise FlaxtrainError(f"config file {given.split(':', 1)[0]} does not exist: pass --config path/to/config.py[:variant]")
    flag_values = flags.FlagValues()
    sys_argv = ["flaxtrain train", *argv]
    try:
        # config_flags applies the --config.x=y overrides while the flag is defined and parsed.
        config_flags.DEFINE_config_file(
            "config", None if given else str(default_config_path()), "experiment config file, FILE[:variant]",
            flag_values=flag_values, lock_config=True, sys_argv=sys_argv,
        )
        flag_values(sys_argv)
        config = flag_values.config
        config.keys()  # loads the file now, so its errors surface here
        return config
    except (flags.Error, KeyError, AttributeError, ValueError, TypeError, OSError) as err:
        raise FlaxtrainError(_config_error(err, argv)) from None


def _one_line(err: Exception) -> str:
    """The message of an error raised inside absl/ml_collections, reduced to its last meaningful line."""
    raw = str(err).replace("\\n", "\n").replace("\\'", "'")
    suggestion = re.search(r"'(\w+)'\W*Did you mean \"(\w+)\"", raw)
    if suggestion:  # ml_collections' KeyError for an unknown field
        return f"unknown key {suggestion[1]!r} (did you mean {suggestion[2]!r}?)"
    lines = [line.strip() for line in raw.splitlines() if line.strip()]
    text = lines[-1] if any("Traceback" in line for line in lines) else " ".join(lines)
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"" and text.count(text[0]) == 2:
        text = text[1:-1]
    return text[:300]


def _config_error(err: Exception, argv: list[str]) -> str:
    message = _one_line(err)
    overrides = [a for a in argv if a.startswith("--config.")]
    culprit = next((a for a in overrides if a[len("--config."):].split("=", 1)[0].split(".")[-1] in message), None)
    if culprit:
        return f"bad config override {culprit}: {message}"
    return f"bad config: {message}"


def _train(argv: list[str]) -> int:
    from flaxtrain.api.experiment import train_from_config

    config = _parse_config(argv)
    train_from_config(config)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from flaxtrain.api.predictor import load_predictor, read_predictor_config
    from flaxtrain.data import load_data

    saved = read_predictor_config(args.model)
    name = args.data or saved.get("data", {}).get("name")
    if not name:
        raise FlaxtrainError(f"{args.model} does not record its dataset: pass --data NAME")
    predictor = load_predictor(args.model)
    test = load_data(name, train=False, data_dir=args.data_dir, download=args.download)
    loss, metrics = predictor.evaluate(test.val_x, test.val_y)
    print(f"{name} test ({len(test.val_x)} texts)  loss {loss:.4f}  " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from flaxtrain.api.predictor import load_predictor

    predictor = load_predictor(args.model)
    texts = args.texts if args.texts else [line.rstrip("\n") for line in sys.stdin]
    for line in predictor.task.format_predictions(predictor, texts):
        print(line)
    return 0


def _export(args: argparse.Namespace) -> int:
    from flaxtrain.api.predictor import load_predictor

    out = load_predictor(args.model).export(args.out, format=args.format, quantize=args.quantize,
                                              ids_dtype=args.ids_dtype)
    folder = out.parent if out.is_file() else out
    report, spec = (json.loads((folder / name).read_text()) for name in ("parity.json", "export.json"))
    size = f"; {spec['bytes'] / 1e6:.2f} MB (float32 {spec['float32_bytes'] / 1e6:.2f} MB)" if "bytes" in spec else ""
    print(f"wrote {out} ({args.format}); parity with JAX: max |diff| {report['max_abs_diff']:.2e}{size}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from flaxtrain.export import verify_export

    report = verify_export(args.path)
    print(f"{args.path} ({report['format']}): max |diff| {report['max_abs_diff']:.2e} on {report['rows']} rows, "
          f"within {report['tolerance']:.0e}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from flaxtrain.machine import doctor, format_report

    report = doctor(check_tensorflow=not args.no_tensorflow)
    print(json.dumps(report, indent=1, default=str) if args.json else format_report(report))
    return 1 if any(trap["severity"] == "error" for trap in report["traps"]) else 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as the `flaxtrain` command: this process is ours (see flaxtrain/allocator.py)
        from flaxtrain.allocator import tune_allocator

        tune_allocator()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="flaxtrain", description="Train, evaluate and use flaxtrain text models.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("train", help="train from a config (default: TextCNN on rotten_tomatoes)", add_help=False)
    evaluate = commands.add_parser("evaluate", help="evaluate a saved predictor on its dataset's test split")
    evaluate.add_argument("--model", required=True, help="saved predictor directory")
    evaluate.add_argument("--data", help="dataset name (default: the one it was trained on)")
    evaluate.add_argument("--data_dir", help="TensorFlow Datasets data_dir")
    evaluate.add_argument("--download", action="store_true", help="let TensorFlow Datasets download a set missing from data_dir")
    predict = commands.add_parser("predict", help="print the prediction of each text (a classifier's: label and probability)")
    predict.add_argument("--model", required=True, help="saved predictor directory")
    predict.add_argument("texts", nargs="*", help="texts to classify (default: one per line on stdin)")
    export = commands.add_parser("export", help="export a saved predictor for serving, checked in its runtime")
    export.add_argument("--model", required=True, help="saved predictor directory")
    export.add_argument("--format", default="jax", help="'jax' (StableHLO for cpu, cuda and tpu), 'onnx', 'saved_model' or 'tflite'")
    export.add_argument("--quantize", action="store_true", help="int8 weights (tflite)")
    export.add_argument("--ids-dtype", default="int32", choices=("int32", "int64"),
                        help="integer type of the token-id inputs (onnx, saved_model, tflite)")
    export.add_argument("out", help="the export folder to write (for onnx, tflite also NAME.onnx, NAME.tflite)")
    verify = commands.add_parser("verify", help="re-run an export's parity check in its own runtime")
    verify.add_argument("path", help="the export folder (or .onnx, .tflite file)")
    doctor = commands.add_parser("doctor", help="backend, devices, versions and known traps of this machine "
                                                "(exit 1 when JAX does not use it as meant)")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument("--no-tensorflow", action="store_true", help="skip the TensorFlow import check (a child process)")
    try:
        if argv and argv[0] == "train":
            if any(a in ("-h", "--help") for a in argv[1:]):
                print(__doc__)
                return 0
            return _train(argv[1:])
        args = parser.parse_args(argv)
        return {"evaluate": _evaluate, "predict": _predict, "export": _export, "verify": _verify,
                "doctor": _doctor}[args.command](args)
    except FlaxtrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
