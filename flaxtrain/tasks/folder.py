"""The saved-predictor folder: config.json (format, version, task, model config, preprocessor section and
the task's own keys), tokenizer.json and Orbax params. Written atomically; read with one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax

from flaxtrain._version import __version__
from flaxtrain.errors import FlaxtrainError
from flaxtrain.files import atomic_directory, written_by_main_process

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
FORMAT = "flaxtrain.predictor"
# Version 1: config.json {format, format_version, flaxtrain_version, task, model {name, config},
# preprocessor {kind, ...}, task keys (seq2seq: generation), caller's extra keys}, tokenizer.json, params/.
FORMAT_VERSION = 1


def write(directory: str | os.PathLike, model: Any, preproc: Any, host_params: Any, *, extra: dict[str, Any]) -> Path:
    """Writes a predictor folder (process 0 alone in a multi-host run; the others wait for it)."""

    def write_here() -> None:
        import orbax.checkpoint as ocp

        with atomic_directory(directory) as staging:
            config = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "flaxtrain_version": __version__,
                "task": model.task.family,
                "model": {"name": model.name, "config": model.folder_config()},
                "preprocessor": preproc.save(staging),
                **extra,
            }
            # Host copies, written by this process alone (in a multi-host run, process 0 only).
            checkpointer = ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=jax.process_index(), active_processes={jax.process_index()}))
            checkpointer.save(staging / PARAMS_DIR, host_params)
            checkpointer.wait_until_finished()
            (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))

    return written_by_main_process(directory, write_here)


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed config.json of a saved predictor, with one-line errors for every way it can be wrong."""
    path = Path(directory)
    if path.is_file():
        raise FlaxtrainError(f"{path} is a file, not a predictor directory: pass the folder that predictor.save() wrote")
    if not path.is_dir():
        raise FlaxtrainError(f"predictor directory {path} does not exist: save one with predictor.save({str(path)!r})")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise FlaxtrainError(f"{path} has no {CONFIG_FILE}: it is not a saved flaxtrain predictor (or the save was cut short)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FlaxtrainError(f"{config_path} is corrupt ({err}): save the predictor again") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise FlaxtrainError(f"{config_path} is not a flaxtrain predictor config: save the predictor again")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise FlaxtrainError(f"{path} was saved by a newer flaxtrain ({config.get('flaxtrain_version')}): upgrade flaxtrain")
    for key in ("model", "preprocessor"):
        if key not in config:
            raise FlaxtrainError(f"{config_path} lacks the {key!r} section: save the predictor again")
    return config


def read_params(directory: str | os.PathLike, abstract: Any) -> Any:
    """The Orbax params of a predictor folder, restored to the shapes and dtypes of `abstract`."""
    import orbax.checkpoint as ocp

    params_dir = Path(directory) / PARAMS_DIR
    if not params_dir.is_dir():
        raise FlaxtrainError(f"{directory} has no {PARAMS_DIR}/ folder: the predictor's weights are missing; save it again")
    try:
        return ocp.StandardCheckpointer().restore(params_dir, abstract)
    except Exception as err:  # Orbax and TensorStore raise many types for unreadable files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FlaxtrainError(f"the weights in {params_dir} are unreadable ({first[:200]}): save the predictor again") from None
