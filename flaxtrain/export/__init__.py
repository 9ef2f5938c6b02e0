"""Export for serving (`predictor.export(path, format=...)`, `flaxtrain.verify_export(path)`): see artifact.py."""

from flaxtrain.export.artifact import FORMATS, export, verify_export

__all__ = ["FORMATS", "export", "verify_export"]
