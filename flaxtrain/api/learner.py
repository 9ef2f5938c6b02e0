"""Learner: trains a Model on a train set and reports on a validation set (ktrain's vocabulary).

The Learner coordinates train/ functions; it holds only the train state and the history.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import models
from flaxtrain.api.model import Model
from flaxtrain.data import TextDataset, make_batches
from flaxtrain.data.entities import TaggedDataset
from flaxtrain.data.pipeline import num_batches
from flaxtrain.data.qa import QADataset
from flaxtrain.data.seq2seq import Seq2SeqDataset
from flaxtrain.errors import FlaxtrainError, nearest
from flaxtrain.eval import (
    classification_report,
    entity_metrics,
    regression_metrics,
    squad_metrics,
)
from flaxtrain.train import (
    TrainState,
    create_train_state,
    loop,
    make_optimizer,
    schedules,
    update_average,
)
from flaxtrain.train.checkpoint import Checkpointer, abstract_like, saving_on_sigterm
from flaxtrain.train.lr_find import LRFinderResult, lr_range_test
from flaxtrain.train.optim import is_frozen, param_path
from flaxtrain.train.partition import compile_steps, local_copy, logical_param_specs, make_strategy
from flaxtrain.train.plateau import Plateau, metric_mode
from flaxtrain.train.summaries import SummaryWriter

PRECISIONS = ("float32", "bfloat16")
DATASETS = (TextDataset, TaggedDataset, QADataset, Seq2SeqDataset)
ADAM_B1 = 0.9  # Adam's b1 outside the 1cycle policy
MAX_AUTOFIT_EPOCHS = 10_000  # autofit(epochs=None) runs until early stopping; this only bounds the loop


def with_compute_dtype(config: Any, dtype: str) -> Any:
    """A copy of a model config (or of the encoder config inside a head config) computing in `dtype`."""
    if not dataclasses.is_dataclass(config):
        return config
    names = {f.name for f in dataclasses.fields(config)}
    changes = {}
    if "dtype" in names:
        changes["dtype"] = dtype
    for name in names:
        value = getattr(config, name)
        if dataclasses.is_dataclass(value):
            changes[name] = with_compute_dtype(value, dtype)
    return dataclasses.replace(config, **changes)


class Learner:
    """Trains `model` on `train_data`, validating on `val_data` after every epoch.

    Training runs under a strategy (train/partition.py): 'auto' (default) is data parallel over
    every device of every process; 'spmd' with `mesh=(data, fsdp, tensor)` shards params and
    optimizer state too; 'pmap' is classic replicated data parallelism; 'single' one device.
    `batch_size` is the global batch (all devices, all processes).

    `skip_nonfinite=True` skips (and counts) a batch whose loss or updated weights are not finite instead
    of stopping; `log_dir` gets TensorBoard event files (loss, metrics, lr, throughput).

    Attributes:
      model: the Model; its params are updated at the end of every fit call.
      history: one dict per finished epoch (loss, acc, val_loss, val_acc, tokens/s, step time, MFU).
      strategy: the resolved `Strategy`.
      frozen: the param path prefixes `freeze` fixed.
    """

    def __init__(self, model: Model, train_data: TextDataset, val_data: TextDataset | None = None, *,
                 batch_size: int = 32, eval_batch_size: int | None = None, weight_decay: float = 0.0,
                 clip_norm: float | None = None, seed: int = 0, strategy: str = "auto",
                 mesh: tuple[int, int, int] | None = None, grad_accum_steps: int = 1, precision: str = "float32",
                 skip_nonfinite: bool = False, log_dir: str | os.PathLike | None = None):
        if not isinstance(train_data, DATASETS):
            raise FlaxtrainError(
                f"train_data must be a dataset from a flaxtrain.text loader, not {type(train_data).__name__}"
            )
        if len(train_data) == 0:
            raise FlaxtrainError("train_data is empty: pass at least one text per class")
        if train_data.labels is None:
            raise FlaxtrainError("train_data has no labels: build it with preproc.preprocess_train(texts, labels)")
        if val_data is not None and val_data.labels is None:
            raise FlaxtrainError("val_data has no labels: build it with preproc.preprocess_test(texts, labels)")
        for name, data in (("train_data", train_data), ("val_data", val_data)):
            if data is not None and data.preproc.class_names != model.preproc.class_names:
                raise FlaxtrainError(
                    f"{name} has classes {data.preproc.class_names} but the model predicts {model.preproc.class_names}: "
                    "encode it with the model's preprocessor"
                )
        for what, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
                raise FlaxtrainError(f"{what} must be a positive whole number of examples, got {size!r}")
        if precision not in PRECISIONS:
            raise FlaxtrainError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if grad_accum_steps < 1:
            raise FlaxtrainError(f"grad_accum_steps must be at least 1, got {grad_accum_steps}")
        self.strategy = make_strategy(strategy, mesh)
        parts = self.strategy.data_parallel * grad_accum_steps
        eval_size = eval_batch_size or batch_size
        for what, size, need in (("batch_size", batch_size, parts), ("eval_batch_size", eval_size, self.strategy.data_parallel)):
            if size % need:
                raise FlaxtrainError(
                    f"{what} {size} does not divide over {self.strategy.data_parallel} data-parallel devices"
                    + (f" x {grad_accum_steps} micro-batches" if what == "batch_size" and grad_accum_steps > 1 else "")
                    + f": use a multiple of {need}"
                )
        self.precision = precision
        self.grad_accum_steps = grad_accum_steps
        self.model = model
        self.train_data = train_data
        self.val_data = val_data
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.seed = seed
        self.history: list[dict[str, float]] = []
        self._optimizer = {"weight_decay": weight_decay, "clip_norm": clip_norm}
        self.frozen: tuple[str, ...] = ()
        self._tx = make_optimizer(model.default_lr, **self._optimizer)
        self._state: TrainState | None = None
        self._epochs_done = 0
        self._steps = None
        self.lr_trace: list[tuple[int, float]] = []  # (global step, learning rate) of every step trained
        self.lr_finder: LRFinderResult | None = None
        self.skip_nonfinite = skip_nonfinite
        self.log_dir = log_dir

    @property
    def steps(self) -> Any:
        """The train/eval steps compiled for this learner's strategy, precision and accumulation."""
        if self._steps is None:
            module = self.model.module
            if self.precision != "float32":  # compute in bf16; params and optimizer state stay float32
                module = models.build_model(self.model.name, with_compute_dtype(self.model.config, self.precision))
            sample = {"input_ids": jnp.zeros((1, 16), jnp.int32)}
            self._steps = compile_steps(module.apply, self.model.loss_fn, strategy=self.strategy,
                                        grad_accum_steps=self.grad_accum_steps, param_specs=logical_param_specs(module, sample),
                                        predict_fn=self.model.predict_fn, skip_nonfinite=self.skip_nonfinite)
        return self._steps

    def freeze(self, *names: str) -> None:
        """Keeps the params under these path prefixes fixed in the fits that follow (ktrain's `freeze`).

        Names are paths in the model's params: a top-level part ('encoder', 'shared', 'embedding')
        or anything below it ('encoder/layer_0', 'decoder/layer_1/cross_attention'). Frozen params
        get no updates, no weight decay and no optimizer state, and their gradients are not computed:
        e.g. `learner.freeze('encoder', 'shared')` trains a bert2bert decoder on a fixed pretrained
        encoder at a fraction of the step's cost. Changing what is frozen keeps the current weights
        and starts a fresh optimizer state.
        """
        if not names:
            raise FlaxtrainError("freeze needs at least one param path, e.g. learner.freeze('encoder')")
        paths = [param_path(path) for path, _ in jax.tree_util.tree_leaves_with_path(self.model.params)]
        for name in names:
            if not isinstance(name, str) or not any(is_frozen(path, (name.strip("/"),)) for path in paths):
                tops = sorted({path.split("/")[0] for path in paths})
                raise FlaxtrainError(f"no params under {name!r} to freeze{nearest(str(name), tops)}: name a top-level part "
                                     f"of the model's params or a path below one, such as '{tops[0]}/...'")
        frozen = tuple(dict.fromkeys((*self.frozen, *(name.strip("/") for name in names))))
        if all(is_frozen(path, frozen) for path in paths):
            raise FlaxtrainError(f"freezing {', '.join(frozen)} leaves no params to train: freeze fewer")
        self._set_frozen(frozen)

    def unfreeze(self, *names: str) -> None:
        """Trains the named frozen paths again (all of them when no name is given)."""
        thawed = {name.strip("/") for name in names}
        unknown = sorted(thawed - set(self.frozen))
        if unknown:
            raise FlaxtrainError(f"{unknown[0]!r} is not frozen; frozen: {', '.join(self.frozen) or 'nothing'}")
        self._set_frozen(tuple(name for name in self.frozen if names and name not in thawed))

    def _set_frozen(self, frozen: tuple[str, ...]) -> None:
        if frozen == self.frozen:
            return
        self.frozen = frozen
        self._tx = make_optimizer(self.model.default_lr, frozen=frozen, **self._optimizer)
        state = None if self._state is None else self.steps.unreplicated(self._state)
        self._steps = None  # the optimizer state's layout (and so its sharding) changed: compile anew
        if state is not None:
            self._state = self.steps.place_state(state.replace(tx=self._tx, opt_state=self._tx.init(state.params)))

    def _batches(self, data: Any, *, train: bool, epoch: int = 0, local: bool = False) -> tuple[Any, int]:
        """Batches for the compiled steps (this process's rows of each global batch), or with `local`
        every row, for the model's own one-device steps (top_losses, the SWA score)."""
        process_index, process_count = (0, 1) if local else (jax.process_index(), jax.process_count())
        if not isinstance(data, TextDataset):  # task datasets batch their own fields
            return data.batches(batch_size=self.batch_size if train else self.eval_batch_size, shuffle=train,
                                seed=self.seed, epoch=epoch, process_index=process_index, process_count=process_count)
        return make_batches(
            data.input_ids, data.labels, batch_size=self.batch_size if train else self.eval_batch_size,
            buckets=self.model.preproc.buckets, shuffle=train, seed=self.seed, epoch=epoch,
            pad_id=self.model.preproc.pad_id, process_index=process_index, process_count=process_count,
        )

    def _train_state(self) -> TrainState:
        if self._state is None:
            # The state owns a copy: the step donates its buffers, and model.params must stay valid.
            params = jax.tree.map(jnp.copy, self.model.params)
            state = create_train_state(self.model.module, params, self._tx)
            self._state = self.steps.place_state(state.replace(apply_fn=self.steps.apply_fn))
        return self._state

    def fit(self, lr: float, n_cycles: int, cycle_len: int | None = None, cycle_mult: int = 1, *,
            swa_from: int | None = None, verbose: int = 1, checkpoint_dir: str | os.PathLike | None = None,
            checkpoint_every: int | None = None, keep_checkpoints: int = 3, resume: bool = False) -> list[dict[str, float]]:
        """Trains at constant learning rate `lr` for `n_cycles` epochs, or with SGDR (Loshchilov &
        Hutter 2017) when `cycle_len` is set: `n_cycles` cosine cycles from lr down to 0, the first
        `cycle_len` epochs long, each next one `cycle_mult` times longer. Returns this call's history.

        Repeated calls continue from the current weights and optimizer state (ktrain's signature).

        Args:
          lr: (peak) learning rate.
          n_cycles: epochs at constant lr, or the number of SGDR cycles.
          cycle_len: epochs of the first SGDR cycle (None: constant lr).
          cycle_mult: growth factor of each next cycle's length.
          swa_from: when set, the model keeps the average of the weights at the end of epochs
            swa_from..epochs of this call (1-based), i.e. stochastic weight averaging (Izmailov et
            al. 2018); training itself continues from the last weights.
          verbose: print a line per epoch.
          checkpoint_dir: save checkpoints here (Orbax; at every epoch end and every
            `checkpoint_every` steps; the last `keep_checkpoints` are kept, plus the best by
            val_loss in best/). A SIGTERM then saves one before the process exits.
          resume: continue the run whose checkpoints are in `checkpoint_dir` (same call, same
            data and seed) exactly where it stopped; starts from the beginning when there are none.
        """
        if n_cycles < 1:
            raise FlaxtrainError(f"epochs (n_cycles) must be at least 1, got {n_cycles}")
        if not lr > 0:
            raise FlaxtrainError(f"lr must be positive, got {lr}")
        if cycle_len is not None and (cycle_len < 1 or cycle_mult < 1):
            raise FlaxtrainError(f"cycle_len and cycle_mult must be at least 1, got {cycle_len} and {cycle_mult}")
        plan = {"method": "fit", "lr": lr, "n_cycles": n_cycles, "cycle_len": cycle_len, "cycle_mult": cycle_mult,
                "swa_from": swa_from}

        def make(first_step: int) -> tuple[Any, int | None]:
            if cycle_len is None:
                return schedules.constant(lr), n_cycles
            return schedules.sgdr(lr, self._steps_per_epoch(), n_cycles=n_cycles, cycle_len=cycle_len,
                                  cycle_mult=cycle_mult, start_step=first_step)

        return self._fit(plan, make, swa_from=swa_from, verbose=verbose, checkpoint_dir=checkpoint_dir,
                         checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, resume=resume)

    def fit_onecycle(self, lr: float, epochs: int, *, swa_from: int | None = None, verbose: int = 1,
                     checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int | None = None,
                     keep_checkpoints: int = 3, resume: bool = False) -> list[dict[str, float]]:
        """Trains `epochs` epochs with the 1cycle policy peaking at `lr` (train/schedules.onecycle):
        warm-up then cosine annealing, Adam's b1 cycled inversely (0.95 -> 0.85 -> 0.95).
        Checkpoint arguments as for `fit`."""
        if epochs < 1:
            raise FlaxtrainError(f"epochs must be at least 1, got {epochs}")
        if not lr > 0:
            raise FlaxtrainError(f"lr must be positive, got {lr}")
        plan = {"method": "fit_onecycle", "lr": lr, "epochs": epochs, "swa_from": swa_from}

        def make(first_step: int) -> tuple[Any, int | None]:
            return schedules.onecycle(lr, epochs * self._steps_per_epoch(), start_step=first_step), epochs

        return self._fit(plan, make, swa_from=swa_from, verbose=verbose, checkpoint_dir=checkpoint_dir,
                         checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, resume=resume)

    def autofit(self, lr: float, epochs: int | None = None, early_stopping: int | None = 5,
                reduce_on_plateau: int | None = 2, reduce_factor: float = 2.0, monitor: str = "val_loss", *,
                verbose: int = 1, checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int | None = None,
                keep_checkpoints: int = 3, resume: bool = False) -> list[dict[str, float]]:
        """Trains with the triangular cyclical policy (one cycle per epoch between lr/10 and lr, Adam's
        b1 moved inversely), watching `monitor` after every epoch (ktrain's autofit):

        - reduce_on_plateau: after that many epochs without improvement, divide lr by reduce_factor;
        - early_stopping: after that many epochs without improvement, stop;
        - at the end the model (and the train state) get the best epoch's weights back.

        With `epochs=None` training runs until early stopping. Checkpoint arguments as for `fit`;
        a resumed autofit also continues its plateau counters and best weights.
        """
        if not lr > 0:
            raise FlaxtrainError(f"lr must be positive, got {lr}")
        if epochs is None and early_stopping is None:
            raise FlaxtrainError("autofit needs epochs or early_stopping: pass epochs=N or early_stopping=patience")
        if epochs is not None and epochs < 1:
            raise FlaxtrainError(f"epochs must be at least 1, got {epochs}")
        for name, value in (("early_stopping", early_stopping), ("reduce_on_plateau", reduce_on_plateau)):
            if value is not None and value < 1:
                raise FlaxtrainError(f"{name} must be at least 1 epoch (or None to turn it off), got {value}")
        if not reduce_factor > 1:
            raise FlaxtrainError(f"reduce_factor must be greater than 1, got {reduce_factor}")
        if monitor.startswith("val_") and self.val_data is None:
            raise FlaxtrainError(f"monitor {monitor!r} needs validation data: pass val_data to get_learner, or monitor='loss'")
        plan = {"method": "autofit", "lr": lr, "epochs": epochs, "early_stopping": early_stopping,
                "reduce_on_plateau": reduce_on_plateau, "reduce_factor": reduce_factor, "monitor": monitor}
        watch = Plateau(lr=lr, monitor=monitor, early_stopping=early_stopping, reduce_on_plateau=reduce_on_plateau,
                        reduce_factor=reduce_factor, verbose=bool(verbose))

        def make(first_step: int) -> tuple[Any, int | None]:
            return schedules.triangular(lambda: watch.lr, self._steps_per_epoch(), start_step=first_step), epochs

        history = self._fit(plan, make, swa_from=None, verbose=verbose, checkpoint_dir=checkpoint_dir,
                            checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, resume=resume,
                            monitor=monitor, plateau=watch)
        if watch.best_params is not None:
            self.model.params = local_copy(watch.best_params)
            state = self.steps.unreplicated(self._train_state())
            self._state = self.steps.place_state(state.replace(params=jax.tree.map(jnp.copy, self.model.params)))
            if verbose:
                print(f"restored the weights of epoch {watch.best_epoch} ({monitor} {watch.best:.4f})")
        return history

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100, *, stop_factor: float = 4.0,
                verbose: int = 1) -> float:
        """Learning-rate range test; returns the suggested lr (the curve's valley) and keeps the curve.

        Runs `num_steps` jitted steps on a device copy of the train state: the learner's weights and
        optimizer state are untouched, nothing goes to disk. Stops once the loss diverges
        (non-finite, or stop_factor x the best so far). `self.lr_finder` holds the curve and the
        steepest / valley / minimum-over-10 estimates; `lr_plot()` draws it.
        """
        if not 0 < start_lr < end_lr:
            raise FlaxtrainError(f"need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
        if num_steps < 5:
            raise FlaxtrainError(f"num_steps must be at least 5 for a curve, got {num_steps}")
        if jax.process_count() > 1:
            raise FlaxtrainError("lr_find runs on one process: find the lr on one host, then train on all of them")
        batches = self._first_batches(num_steps)
        state = self.steps.unreplicated(self._train_state())
        result = lr_range_test(state, batches, jax.random.key(self.seed), loss_fn=self.model.loss_fn,
                               start_lr=start_lr, end_lr=end_lr, stop_factor=stop_factor)
        self.lr_finder = result
        if verbose:
            print(f"lr_find: {len(result.losses)} of {num_steps} steps before the loss diverged; suggested lr "
                  f"{result.valley:.2e} (valley), steepest descent at {result.steepest:.2e}, "
                  f"minimum/10 {result.minimum_over_10:.2e}")
        return result.suggested

    def _first_batches(self, count: int) -> list[dict[str, np.ndarray]]:
        """The first `count` training batches, cycling epochs when one epoch has fewer."""
        collected: list[dict[str, np.ndarray]] = []
        epoch = 0
        while len(collected) < count:
            batches, _ = self._batches(self.train_data, train=True, epoch=epoch)
            collected.extend(batches)
            epoch += 1
        return collected[:count]

    def lr_plot(self, path: str | None = "lr_find.png", *, suggestion: bool = True) -> str | None:
        """Plots the lr_find curve (loss vs learning rate, log scale) with the suggestion marked.

        Saves a PNG to `path` (shown too in an interactive matplotlib session); returns the path.
        """
        if self.lr_finder is None:
            raise FlaxtrainError("no learning-rate curve yet: run learner.lr_find() first")
        import matplotlib.pyplot as plt

        result = self.lr_finder
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(result.lrs, result.losses, alpha=0.3, label="loss")
        ax.plot(result.lrs, result.smoothed, label="smoothed loss")
        if suggestion:
            for name, value, marker in (("valley", result.valley, "o"), ("steepest", result.steepest, "s")):
                index = int(np.argmin(np.abs(result.lrs - value)))
                ax.plot(value, result.smoothed[index], marker, label=f"{name} {value:.2e}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        ax.legend()
        return _finish_plot(fig, path)

    def plot(self, kind: str = "loss", path: str | None = None) -> str | None:
        """Training history: 'loss' (train and validation loss per epoch) or 'lr' (learning rate per step)."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        if kind == "loss":
            if not self.history:
                raise FlaxtrainError("no training history yet: fit first")
            epochs = [r["epoch"] for r in self.history]
            ax.plot(epochs, [r["loss"] for r in self.history], "o-", label="train")
            if "val_loss" in self.history[0]:
                ax.plot(epochs, [r["val_loss"] for r in self.history], "o-", label="validation")
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss")
            ax.legend()
        elif kind == "lr":
            if not self.lr_trace:
                raise FlaxtrainError("no training steps yet: fit first")
            steps, lrs = zip(*self.lr_trace)
            ax.plot(steps, lrs)
            ax.set_xlabel("step")
            ax.set_ylabel("learning rate")
        else:
            plt.close(fig)
            raise FlaxtrainError(f"unknown plot {kind!r}: use 'loss' or 'lr'")
        return _finish_plot(fig, path or f"{kind}.png")

    def _steps_per_epoch(self) -> int:
        if not isinstance(self.train_data, TextDataset):
            return self.train_data.num_batches(self.batch_size)
        lengths = np.fromiter((len(x) for x in self.train_data.input_ids), np.int64, count=len(self.train_data))
        return num_batches(lengths, batch_size=self.batch_size, buckets=self.model.preproc.buckets)

    def _global_step(self) -> int:
        return self.steps.step_of(self._train_state())

    def _fit(self, plan: dict[str, Any], make_schedule: Any, *, swa_from: int | None, verbose: int,
             checkpoint_dir: str | os.PathLike | None, checkpoint_every: int | None, keep_checkpoints: int,
             resume: bool, monitor: str = "val_loss", plateau: Plateau | None = None) -> list[dict[str, float]]:
        """One fit call: `make_schedule(first_step) -> (schedule, epochs or None)` gives the plan's
        schedule; checkpoints, resume, SIGTERM and TensorBoard are handled here."""
        if resume and checkpoint_dir is None:
            raise FlaxtrainError("resume=True needs checkpoint_dir: pass the directory the stopped run saved to")
        if checkpoint_every is not None and checkpoint_every < 1:
            raise FlaxtrainError(f"checkpoint_every must be at least 1 step, got {checkpoint_every}")
        plan = {**plan, "batch_size": self.batch_size, "seed": self.seed, "grad_accum_steps": self.grad_accum_steps,
                **_flat_config("model", {"name": self.model.name, **models.config_to_dict(self.model.config)})}
        if self.frozen:
            plan["frozen"] = list(self.frozen)
        ckpt = None
        if checkpoint_dir is not None:
            ckpt = Checkpointer(checkpoint_dir, keep=keep_checkpoints, mode=metric_mode(monitor),
                                monitor=monitor if monitor in self._epoch_keys() else None)
        if ckpt is not None and not resume and ckpt.last_step() is not None:
            raise FlaxtrainError(
                f"{ckpt.directory} already holds checkpoints (steps {ckpt.steps()}) of another run: pass resume=True to "
                "continue that run, or a new checkpoint_dir"
            )
        state = self._train_state()
        self._state = None  # donated to the step from here on
        position = {"first_epoch": self._epochs_done, "first_step": self.steps.step_of(state), "epoch": self._epochs_done,
                    "batch": 0}
        initial = None
        average: dict[str, Any] = {"params": None, "count": 0}
        if resume:
            restored = self._restore(ckpt, state, plan)
            if restored is None:
                if verbose:
                    print(f"no checkpoint in {ckpt.directory} yet: starting from the beginning")
            else:
                state, meta, tree = restored
                position = {k: meta[k] for k in position}
                initial = None if meta["sums"] is None else {k: np.float32(v) for k, v in meta["sums"].items()}
                self.history = meta["history"]
                self._epochs_done = meta["epoch"]
                average = {"params": tree.get("average"), "count": meta["swa_count"]}
                if plateau is not None:
                    plateau.load(meta["plateau"], tree.get("best"))
                if verbose:
                    print(f"resuming from checkpoint step {meta['step']} in {ckpt.directory}: epoch {meta['epoch'] + 1}, "
                          f"batch {meta['batch']}")
        first_epoch, first_step = position["first_epoch"], position["first_step"]
        schedule, epochs = make_schedule(first_step)
        if swa_from is not None and not 1 <= swa_from <= epochs:
            raise FlaxtrainError(f"swa_from must lie between 1 and epochs ({epochs}), got {swa_from}")
        trace = self.lr_trace
        resumed_step = self.steps.step_of(state)
        trace.extend((step, schedule(step)["learning_rate"]) for step in range(first_step, resumed_step))

        def traced(step: int) -> dict[str, float]:
            values = {"b1": ADAM_B1, **schedule(step)}
            trace.append((step, values["learning_rate"]))
            return values

        def accumulate(epoch: int, current: TrainState) -> None:
            if swa_from is None or epoch - first_epoch + 1 < swa_from:
                return
            if average["params"] is None:
                average["params"] = jax.tree.map(jnp.copy, self.steps.params_of(current))
            else:
                average["params"] = update_average(average["params"], self.steps.params_of(current),
                                                   jnp.asarray(average["count"]))
            average["count"] += 1

        def save(current: TrainState, epoch: int, batch: int, sums: Any, *, wait: bool = False) -> None:
            one = self.steps.unreplicated(current)
            tree = {"step": one.step, "params": one.params, "opt_state": one.opt_state}
            if average["params"] is not None:
                tree["average"] = average["params"]
            if plateau is not None and plateau.best_params is not None:
                tree["best"] = plateau.best_params
            meta = {"plan": plan, "items": sorted(set(tree) - {"step", "params", "opt_state"}),
                    **{k: position[k] for k in ("first_epoch", "first_step")}, "epoch": epoch,
                    "batch": batch, "sums": None if sums is None else {k: float(v) for k, v in jax.device_get(sums).items()},
                    "history": list(self.history), "swa_count": average["count"],
                    "plateau": None if plateau is None else plateau.dump()}
            ckpt.save(self.steps.step_of(current), tree, meta, wait=wait)

        stop_signal: dict[str, str] = {}
        tensorboard = self._summary_writer()
        traced_until = [len(trace)]

        def after_epoch(epoch: int, current: TrainState, record: dict[str, float]) -> str | None:
            self.history.append(record)
            self._epochs_done = epoch + 1
            step = self.steps.step_of(current)
            stop = None
            if plateau is not None:
                stop = plateau.update(record, epoch, self.steps.params_of(current))
            if tensorboard is not None:
                tensorboard.epoch(record, step)
                tensorboard.learning_rates(trace[traced_until[0]:])
                traced_until[0] = len(trace)
            if ckpt is not None:
                save(current, epoch + 1, 0, None)
                ckpt.save_best(step, self.steps.params_of(current), record)
            return stop

        val = self.val_data
        history_before = len(self.history)
        remaining = None if epochs is None else first_epoch + epochs - position["epoch"]
        try:
            with saving_on_sigterm(ckpt is not None, stop_signal):
                state, _, stop = loop.fit(
                    state,
                    epochs=MAX_AUTOFIT_EPOCHS if remaining is None else remaining,
                    train_batches=lambda epoch: self._batches(self.train_data, train=True, epoch=epoch),
                    val_batches=None if val is None else (lambda: self._batches(val, train=False)),
                    steps=self.steps,
                    rng=jax.random.key(self.seed),
                    start_epoch=position["epoch"],
                    verbose=bool(verbose),
                    on_epoch_end=accumulate,
                    precision=self.precision,
                    schedule=traced,
                    start_batch=position["batch"],
                    initial_sums=initial,
                    save_every=checkpoint_every,
                    save=None if ckpt is None else save,
                    should_stop=lambda: stop_signal.get("name"),
                    after_epoch=after_epoch,
                )
        finally:
            if ckpt is not None:
                ckpt.wait()
            if tensorboard is not None:
                tensorboard.close()
        # A non-finite step halted the state at the last finite weights (train/step.py); the next fit
        # (say with a lower lr) trains on from them.
        self._state = state.replace(halted=state.halted * 0)
        history = self.history[history_before:]
        final_params = self.steps.params_of(state)
        early_stop = plateau is not None and plateau.stopped
        if early_stop and verbose:
            print(stop)
        if stop and not early_stop:
            self.model.params = jax.tree.map(jnp.copy, local_copy(final_params))
            if stop_signal:
                step = self.steps.step_of(state)
                message = (f"received {stop_signal['name']} at step {step}: saved checkpoint step {step} to "
                           f"{ckpt.directory}; run the same fit with resume=True to continue")
                ckpt.close()
                print(message, file=sys.stderr, flush=True)
                signal.raise_signal(signal.Signals[stop_signal["name"]])  # exit as the signal asked
                raise FlaxtrainError(message)  # when the previous handler returns instead
            if ckpt is not None:
                last = ckpt.last_step()
                stop += (f"; the last good checkpoint is step {last} in {ckpt.directory} (resume=True continues "
                         "from it)" if last is not None else f"; no checkpoint was saved in {ckpt.directory} yet")
            raise FlaxtrainError(stop)
        if ckpt is not None:
            ckpt.close()
        if average["params"] is not None:
            self.model.params = local_copy(average["params"])
            if val is not None:  # scored on this process alone, as the predictor will be
                batches, count = self._batches(val, train=False, local=True)
                swa_state = state.replace(params=self.model.params, opt_state=None, step=jnp.zeros((), jnp.int32),
                                          apply_fn=self.model.module.apply, halted=0)
                record = loop.summarize(loop.evaluate(swa_state, batches, steps=self.model.steps, num_batches=count,
                                                      verbose=bool(verbose)), "val_")
                history[-1].update({f"swa_{k}": v for k, v in record.items()})
                if verbose:
                    print(f"weights averaged over epochs {first_epoch + swa_from}-{first_epoch + epochs}:  "
                          + "  ".join(f"{k} {v:.4f}" for k, v in record.items()))
        else:
            self.model.params = jax.tree.map(jnp.copy, local_copy(final_params))
        return history

    def _epoch_keys(self) -> set[str]:
        """Keys an epoch record will have (for checking a monitored metric up front)."""
        keys = {"loss", "mae" if self.model.preproc.regression else "acc"}
        if self.val_data is not None:
            keys |= {f"val_{k}" for k in keys}
        return keys

    def _restore(self, ckpt: Checkpointer, state: TrainState, plan: dict[str, Any]) -> tuple[TrainState, dict, dict] | None:
        """(state, meta, saved tree) from the newest readable checkpoint, placed for this learner's
        strategy (the device count may differ from the saving run's); None when there is none."""
        one = self.steps.unreplicated(state)
        base = {"step": one.step, "params": one.params, "opt_state": one.opt_state}
        params_target = abstract_like(one.params)

        def target(meta: dict[str, Any]) -> Any:
            saved = meta.get("plan", {})
            # Model keys are compared when the saving run recorded them (checkpoints of older flaxtrain did not).
            changed = sorted(k for k in set(saved) | set(plan) if saved.get(k) != plan.get(k)
                             and (not k.startswith("model.") or any(key.startswith("model.") for key in saved)))
            if changed:
                differences = ", ".join(f"{k} {saved.get(k)!r} there, {plan.get(k)!r} here" for k in changed)
                raise FlaxtrainError(
                    f"the checkpoints in {ckpt.directory} come from a different run ({differences}): "
                    "repeat the original call or use a new checkpoint_dir"
                )
            return {**abstract_like(base), **{name: params_target for name in meta.get("items", ())}}

        restored = ckpt.restore(target)
        if restored is None:
            return None
        tree, meta = restored
        restored_state = one.replace(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"])
        if self.strategy.kind == "pmap":
            restored_state = self.steps.place_state(restored_state)
        return restored_state, meta, tree

    def _summary_writer(self) -> SummaryWriter | None:
        return None if self.log_dir is None else SummaryWriter(self.log_dir, active=jax.process_index() == 0)

    def top_losses(self, n: int = 4, val_data: TextDataset | None = None) -> list[tuple[int, float, Any, Any]]:
        """The `n` validation examples with the highest loss, worst first, as
        (index, loss, true label, predicted label) — ktrain's top_losses. Per-example losses are the
        model's own loss function vmapped over rows on the device."""
        data = val_data or self.val_data
        if data is None or data.labels is None:
            raise FlaxtrainError("no labelled validation data: pass val_data to get_learner or to top_losses")
        if n < 1:
            raise FlaxtrainError(f"n must be at least 1, got {n}")
        steps = self.model.steps
        rows = len(data.windows.input_ids) if isinstance(data, QADataset) else len(data)
        losses = np.zeros(rows, np.float32)
        batches, _ = self._batches(data, train=False, local=True)
        pending = [(b["index"], b["weight"], steps.example_losses(self.model.params, b)) for b in batches]
        for index, weight, values in pending:
            keep = weight > 0
            losses[index[keep]] = np.asarray(values)[keep]
        from flaxtrain.api.predictor import get_predictor

        if isinstance(data, QADataset):  # a question's loss: its worst window's
            per_example = np.full(len(data), -np.inf, np.float32)
            np.maximum.at(per_example, data.windows.example, losses)
            order = np.argsort(-per_example, kind="stable")[:n]
            found = get_predictor(self.model, batch_size=self.eval_batch_size).answers(
                QADataset([data.examples[i] for i in order], data.preproc))
            return [(int(i), float(per_example[i]), (data.examples[i].answers or ("",))[0], a["answer"])
                    for i, a in zip(order, found)]
        order = np.argsort(-losses, kind="stable")[:n]
        preproc = self.model.preproc
        if isinstance(data, Seq2SeqDataset):  # (index, mean token loss, target, generated output)
            outputs = get_predictor(self.model, batch_size=self.eval_batch_size).predict([data.sources[i] for i in order])
            return [(int(i), float(losses[i]), data.targets[i], o) for i, o in zip(order, outputs)]
        if isinstance(data, TaggedDataset):  # (index, loss, true tags, predicted tags)
            predicted = get_predictor(self.model, batch_size=self.eval_batch_size).predict_words(
                [data.words[i] for i in order])
            return [(int(i), float(losses[i]), data.tags[i], p) for i, p in zip(order, predicted)]
        outputs = get_predictor(self.model, batch_size=self.eval_batch_size).log_probs(data.input_ids)
        if preproc.regression:
            return [(int(i), float(losses[i]), float(data.labels[i]), float(outputs[i])) for i in order]
        truth = preproc.decode_labels(data.labels[order])
        predicted = preproc.decode_labels(outputs[order].argmax(-1))
        return [(int(i), float(losses[i]), t, p) for i, t, p in zip(order, truth, predicted)]

    def view_top_losses(self, n: int = 4, preproc: Any = None, val_data: TextDataset | None = None) -> list[tuple]:
        """Prints the `n` worst validation examples (loss, true and predicted label, the text) and
        returns them as `top_losses` does. `preproc` is accepted for ktrain's signature; the texts
        come from the dataset itself."""
        data = val_data or self.val_data
        worst = self.top_losses(n, data)
        for index, loss, truth, predicted in worst:
            print("-" * 40)
            print(f"id {index} | loss {loss:.4f} | true {truth} | predicted {predicted}")
            print(data.texts[index])
        return worst

    def validate(self, val_data: TextDataset | None = None, class_names: list[Any] | None = None,
                 print_report: bool = True) -> Any:
        """Prints a per-class precision/recall/F1 report; returns the confusion matrix (rows true).

        For a regression model, prints and returns {'mae', 'mse', 'rmse', 'r2'}.
        """
        from flaxtrain.api.predictor import get_predictor

        data = val_data or self.val_data
        if data is None or data.labels is None:
            raise FlaxtrainError("no labelled validation data: pass val_data to get_learner or to validate")
        if isinstance(data, QADataset):  # SQuAD exact match and F1 of the decoded answers
            predicted = [a["answer"] for a in get_predictor(self.model, batch_size=self.eval_batch_size).answers(data)]
            metrics = squad_metrics(predicted, [list(e.answers) for e in data.examples])
            if print_report:
                print("  ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
            return metrics
        if isinstance(data, Seq2SeqDataset):  # BLEU/chrF or ROUGE of the generated outputs
            metrics = get_predictor(self.model, batch_size=self.eval_batch_size).scores(data)
            if print_report:
                print("  ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
            return metrics
        if isinstance(data, TaggedDataset):  # entity-level scores, as CoNLL reports them
            predicted = get_predictor(self.model, batch_size=self.eval_batch_size).predict_words(data.words)
            metrics = entity_metrics(data.tags, predicted, scheme=data.preproc.tag_scheme)
            if print_report:
                print(metrics["report"])
            return {k: v for k, v in metrics.items() if k != "report"}
        log_probs = get_predictor(self.model, batch_size=self.eval_batch_size).log_probs(data.input_ids)
        if self.model.preproc.regression:
            metrics = regression_metrics(data.labels, log_probs)
            if print_report:
                print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            return metrics
        names = class_names or self.model.preproc.class_names
        if len(names) != self.model.preproc.num_classes:
            raise FlaxtrainError(f"class_names has {len(names)} names but the model has {self.model.preproc.num_classes} classes")
        report, matrix = classification_report(data.labels, log_probs.argmax(-1), names)
        if print_report:
            print(report)
            print("confusion matrix (rows: true class, columns: predicted):")
            print(matrix)
        return matrix


def _flat_config(prefix: str, config: dict[str, Any]) -> dict[str, Any]:
    """{'model.name': ..., 'model.encoder.hidden_size': ...}: a config as run-plan entries, one per field."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat_config(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def _finish_plot(fig: Any, path: str | None) -> str | None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    if plt.isinteractive():
        plt.show()
    plt.close(fig)
    return path


def get_learner(model: Model, train_data: TextDataset | None = None, val_data: TextDataset | None = None,
                batch_size: int = 32, eval_batch_size: int | None = None, **kwargs: Any) -> Learner:
    """ktrain's `get_learner(model, train_data, val_data, batch_size)`."""
    if not isinstance(model, Model):
        raise FlaxtrainError(f"get_learner needs a flaxtrain model (from get_model or text_classifier), not {type(model).__name__}")
    if train_data is None:  # the data get_model was given
        train_data, val_data = model.train_data, val_data if val_data is not None else model.val_data
    if train_data is None:
        raise FlaxtrainError("no training data: pass train_data to get_learner")
    return Learner(model, train_data, val_data, batch_size=batch_size, eval_batch_size=eval_batch_size, **kwargs)
