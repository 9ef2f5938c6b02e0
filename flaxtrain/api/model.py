"""Model: a registered network, its params, its preprocessor and so its task; the seed's fit / evaluate / predict."""

from __future__ import annotations

from typing import Any

import math
import os
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flax import traverse_util

from flaxtrain import models, tasks
from flaxtrain.api.learner import get_learner
from flaxtrain.api.weights import init_model_params
from flaxtrain.errors import FlaxtrainError, nearest
from flaxtrain.hub import adapters
from flaxtrain.models import lora as lora_lib
from flaxtrain.train import CompiledSteps, compile_steps

# Top-level params that stay frozen under LoRA although no adapter sits in them: embedding tables
# shared by encoder and decoder, and a fixed logits bias (PEFT trains neither by default).
_LORA_BODY = ("shared", "final_logits_bias", "embedding")


class Model:
    """A network with its params and preprocessor; the seed's `fit / evaluate / predict` live here.

    Attributes:
      name: registry name ('textcnn', 'fasttext', 'transformer', 'sequence_tagger', 'qa', 'seq2seq').
      config: the model's frozen config dataclass.
      module: the linen module.
      params: current params (updated by every fit).
      preproc: the preprocessor that encodes its inputs.
      task: the `flaxtrain.tasks.Task` it is trained for (from its network and preprocessor).
      train_data, val_data: the data `get_model` was given (used by `fit`).
      label_smoothing: seq2seq: target smoothing of the training loss.
      generation: seq2seq: a checkpoint's decoding settings (transformers' names).
      lora: the LoRA adapters' `LoraConfig` (None without adapters); their params are params['lora'].
      pretrained_parts: top-level params that came from a checkpoint (a pretrained encoder, word vectors):
        `initial_params(seed)` keeps them and initialises the rest from the seed.
    """

    def __init__(self, name: str, config: Any, params: Any, preproc: Any, *, train_data: Any = None,
                 val_data: Any = None, module: Any = None):
        self.name = name
        self.config = config
        self.module = module if module is not None else models.build_model(name, config)
        self.params = params
        self.preproc = preproc
        self.train_data = train_data
        self.val_data = val_data
        self._steps: CompiledSteps | None = None
        self._learner: Any = None
        self.label_smoothing = 0.0
        self.generation: dict[str, Any] = {}
        self.lora: lora_lib.LoraConfig | None = None
        self.pretrained_parts: tuple[str, ...] = ("encoder",) if getattr(config, "encoder", None) is not None else ()

    def initial_params(self, seed: int) -> Any:
        """The params this model would start from with initialisation seed `seed`: its own initialiser for
        everything but `pretrained_parts`, which keep their current (checkpoint) values."""
        kept = {name: self.params[name] for name in self.pretrained_parts if name in self.params}
        fresh = jax.device_get(init_model_params(self.module, seed, skip=tuple(kept)))
        return {**fresh, **kept}

    def build(self, precision: str | None = None) -> Any:
        """The model's module computing in `precision` (default: its config's), with its LoRA adapters."""
        config = self.config if precision is None else models.with_compute_dtype(self.config, precision)
        module = models.build_model(self.name, config)
        return module if self.lora is None else lora_lib.LoraModule(module, self.lora)

    @property
    def sample_inputs(self) -> dict[str, jax.Array]:
        """Inputs of one row that `module.init` takes (for shapes and sharding specs)."""
        return {"input_ids": jnp.zeros((1, 16), jnp.int32)}

    def folder_config(self) -> dict[str, Any]:
        """The model's config as a saved predictor's config.json holds it."""
        return models.config_to_dict(self.config)

    # --- LoRA -------------------------------------------------------------------------------------
    def add_lora(self, rank: int = 8, alpha: float = 16, targets: str | Sequence[str] = ("query", "value"),
                 dropout: float = 0.0, seed: int = 0) -> lora_lib.LoraConfig:
        """Adds LoRA adapters (Hu et al. 2021) on the kernels `targets` names (models/lora.py): names match
        a module path or its last parts ('query', 'attention/out'), a single string is a regular expression
        over whole paths, as PEFT's target_modules. A starts Kaiming-uniform, B at zero, so the model's
        outputs are unchanged until it trains. Returns the resolved config (`self.lora`)."""
        if self.lora is not None:
            raise FlaxtrainError("this model already has LoRA adapters: merge_lora() them first, or keep training these")
        for what, value in (("rank", rank), ("alpha", alpha)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0:
                raise FlaxtrainError(f"LoRA {what} must be a positive number, got {value!r}")
        if rank != int(rank):
            raise FlaxtrainError(f"LoRA rank must be a whole number, got {rank!r}")
        if dropout:
            raise FlaxtrainError(f"lora dropout {dropout} is not available: flaxtrain adds the adapters to their kernels "
                                 "(models/lora.py), so there is no adapter input to drop; pass dropout=0.0 (the "
                                 "model's own dropout still applies)")
        if not targets:
            raise FlaxtrainError("targets is empty: name the kernels to adapt, e.g. targets=('query', 'value')")
        boxed = jax.eval_shape(lambda rng: self.module.init({"params": rng, "dropout": rng}, **self.sample_inputs,
                                                            deterministic=True), jax.random.key(0))["params"]
        kernels = lora_lib.kernel_paths(boxed)
        chosen = lora_lib.match_targets(list(kernels), targets)
        if not chosen:
            shown = sorted({path.split("/")[-1] for path in kernels})
            raise FlaxtrainError(f"targets {targets!r} match no kernel of this {self.name} model"
                                 f"{nearest(str(targets if isinstance(targets, str) else targets[0]), shown)}: "
                                 f"its kernels end in {', '.join(shown)}")
        stacked = [path for path in chosen if "layers" in path.split("/")]
        if stacked:
            raise FlaxtrainError(f"{stacked[0]} holds every block's kernel stacked (scan_layers): build the model "
                                 "with scan_layers=False to add LoRA adapters")
        config = lora_lib.LoraConfig(int(rank), float(alpha), tuple(chosen),
                                     tuple(lora_lib.input_axes(*kernels[path]) for path in chosen))
        adapters = lora_lib.init_adapters(kernels, config, jax.random.key(seed))
        self.params = {**self.params, lora_lib.LORA: jax.device_get(nn.meta.unbox(adapters))}
        self.lora = config
        self.module = lora_lib.LoraModule(self.module, config)
        self._steps = None
        return config

    def lora_trainable(self) -> tuple[str, ...]:
        """Top-level params that train beside the adapters (PEFT's modules_to_save): the task head, i.e. the
        parts no adapter sits in, less embedding tables and fixed biases."""
        if self.lora is None:
            raise FlaxtrainError("this model has no LoRA adapters: add them with add_lora(...)")
        adapted = {path.split("/")[0] for path in self.lora.targets}
        return tuple(name for name in self.params
                     if name != lora_lib.LORA and name not in adapted and name not in _LORA_BODY)

    def merge_lora(self) -> None:
        """Folds the adapters into their kernels (W + alpha/r A B) and drops them: a plain model again."""
        if self.lora is None:
            raise FlaxtrainError("this model has no LoRA adapters to merge")
        self.params = jax.device_get(jax.jit(lora_lib.merge, static_argnums=1)(self.params, self.lora))
        self.lora = None
        self.module = self.module.base
        self._steps = None

    def load_adapter(self, directory: str | os.PathLike) -> lora_lib.LoraConfig:
        """Adds the LoRA adapters of a PEFT adapter folder (`predictor.save_adapter`'s, or one PEFT trained on
        the PyTorch model of the same checkpoint), with the head it saved (modules_to_save)."""
        encoder, head_kind = getattr(self.config, "encoder", None), getattr(self.task.predictor, "hf_head", None)
        if encoder is None or head_kind is None:
            raise FlaxtrainError(f"PEFT adapters load onto pretrained-encoder models; this is a {self.name} model")
        peft_config, pairs, head = adapters.read_adapter(directory, encoder, task=head_kind)
        rank = int(peft_config.get("r", 0))
        config = self.add_lora(rank=rank, alpha=float(peft_config.get("lora_alpha", rank)), targets=sorted(pairs))
        flat = traverse_util.flatten_dict(self.params[lora_lib.LORA], sep="/")
        for target, (a, b) in pairs.items():
            a_shape, b_shape = flat[f"{target}/a"].shape, flat[f"{target}/b"].shape
            if a.shape != (rank, math.prod(a_shape[:-1])) or b.shape != (math.prod(b_shape[1:]), rank):
                self.lora, self.module = None, self.module.base
                self.params = {k: v for k, v in self.params.items() if k != lora_lib.LORA}
                raise FlaxtrainError(f"the adapter on {target} in {directory} has shapes {a.shape} and {b.shape}, this model "
                                     f"needs ({rank}, {math.prod(a_shape[:-1])}) and ({math.prod(b_shape[1:])}, {rank}): "
                                     "load it onto the checkpoint it was trained on")
            flat[f"{target}/a"] = a.T.reshape(a_shape)
            flat[f"{target}/b"] = b.T.reshape(b_shape)
        params = {**self.params, lora_lib.LORA: traverse_util.unflatten_dict(flat, sep="/")}
        for name, values in head.items():
            mine = jax.tree.map(np.shape, self.params.get(name))
            if mine != jax.tree.map(np.shape, values):
                print(f"the adapter's {name} head does not fit this model ({jax.tree.map(np.shape, values)} there, "
                      f"{mine} here): the model keeps its own")
                continue
            params[name] = values
        self.params = params
        return config

    def merged(self) -> Model:
        """This model with its adapters folded in (itself when it has none); this model is unchanged."""
        if self.lora is None:
            return self
        copy = Model(self.name, self.config, self.params, self.preproc)
        copy.label_smoothing, copy.generation = self.label_smoothing, dict(self.generation)
        copy.lora, copy.module = self.lora, self.module
        copy.merge_lora()
        return copy

    @property
    def task(self) -> tasks.Task:
        return tasks.for_model(self.name, self.preproc)

    @property
    def steps(self) -> CompiledSteps:
        """The jitted train/eval/predict steps, compiled once per model."""
        if self._steps is None:
            self._steps = compile_steps(self.module.apply, self.loss_fn, predict_fn=self.predict_fn)
        return self._steps

    @property
    def loss_fn(self) -> Any:
        """The task's train/eval loss (cross entropy per text or tagged word, the CRF likelihood, squared
        error, span or token cross entropy)."""
        return self.task.loss_fn(self)

    @property
    def predict_fn(self) -> Any:
        """The task's predict function (log-probabilities, values, tag ids, span logits, token ids)."""
        return self.task.predict_fn(self)

    @property
    def default_lr(self) -> float:
        if getattr(self.config, "encoder", None) is not None:  # fine-tuning a pretrained encoder
            return models.get_entry("transformer").default_lr
        return models.get_entry(self.name).default_lr

    def num_params(self) -> int:
        return int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.params)))

    # The seed's vocabulary: model.fit / model.evaluate / model.predict.
    def fit(self, epochs: int = 1, lr: float | None = None, batch_size: int = 32, verbose: int = 1) -> list[dict[str, float]]:
        """Trains on the data given to `get_model` (validating on its held-out part); returns the history."""
        if self.train_data is None:
            raise FlaxtrainError("this model has no training data: use flaxtrain.get_learner(model, train_data=...)")
        if self._learner is None or self._learner.batch_size != batch_size:
            self._learner = get_learner(self, self.train_data, self.val_data, batch_size=batch_size)
        return self._learner.fit(lr or self.default_lr, epochs, verbose=verbose)

    def evaluate(self, x: Any, y: Any, batch_size: int = 32) -> tuple[float, dict[str, float]]:
        """(loss, {'acc', 'precision', 'recall', 'f1'}) on raw texts and labels; for translation and
        summarization, (loss, BLEU/chrF or ROUGE) on sources and targets."""
        return self.task.predictor(self, batch_size=batch_size).evaluate(x, y)

    def predict(self, texts: str | list[str]) -> Any:
        """Class name of one text, or a list of class names for a list of texts (each task's outputs)."""
        return self.task.predictor(self).predict(texts)

    def predict_proba(self, texts: str | list[str]) -> np.ndarray:
        """Class probabilities [c] of one text or [n, c] of a list."""
        return self.task.predictor(self).predict_proba(texts)

    def __repr__(self) -> str:
        adapters = "" if self.lora is None else f", LoRA r={self.lora.rank} on {len(self.lora.targets)} kernels"
        return f"Model({self.name!r}, {self.num_params():,} params{adapters}, {self.preproc!r})"
