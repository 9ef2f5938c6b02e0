"""Export for serving (`predictor.export(path, format=...)`, `flaxtrain.verify_export(path)`): see artifact.py."""

from flaxtrain.export.artifact import FORMATS, export, pad_rows, sample_inputs, verify_export

__all__ = ["FORMATS", "export", "pad_rows", "sample_inputs", "verify_export"]
