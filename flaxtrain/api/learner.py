"""Learner: trains a model on a train set and reports on a validation set (ktrain's vocabulary).

The Learner coordinates train/ functions (a fit call is a train.fitting.FitRun) and reaches the model's
task only through `model.task` (flaxtrain/tasks): its batches, report and top-loss view.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain import tasks
from flaxtrain.api.adapting import Adapters
from flaxtrain.api.reports import Reports
from flaxtrain.api.sizing import BatchSizing
from flaxtrain.errors import FlaxtrainError, nearest
from flaxtrain.tasks import TaskModel
from flaxtrain.train import TrainState, create_train_state, loop, make_optimizer, plots, schedules
from flaxtrain.train import seeds as seed_runs
from flaxtrain.train.fitting import Checkpointing, FitRun, Progress
from flaxtrain.train.lr_find import LRFinderResult, lr_range_test
from flaxtrain.train.optim import is_frozen, param_path
from flaxtrain.train.partition import compile_steps, local_copy, logical_param_specs, make_strategy
from flaxtrain.train.plateau import Plateau
from flaxtrain.train.state import copy_tree, init_opt_state

PRECISIONS = ("float32", "bfloat16")


class Learner(BatchSizing, Reports, Adapters):
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

    def __init__(self, model: TaskModel, train_data: Any, val_data: Any = None, *,
                 batch_size: int = 32, eval_batch_size: int | None = None, weight_decay: float = 0.0,
                 clip_norm: float | None = None, seed: int = 0, strategy: str = "auto",
                 mesh: tuple[int, int, int] | None = None, grad_accum_steps: int = 1, precision: str = "float32",
                 skip_nonfinite: bool = False, log_dir: str | os.PathLike | None = None):
        if not isinstance(train_data, tasks.dataset_types()):
            raise FlaxtrainError(
                f"train_data must be a dataset from a flaxtrain.text loader, not {type(train_data).__name__}"
            )
        if len(train_data) == 0:
            raise FlaxtrainError(f"train_data is empty: {train_data.empty_hint}")
        if not train_data.labelled:
            raise FlaxtrainError("train_data has no labels: build it with preproc.preprocess_train(texts, labels)")
        if val_data is not None and not val_data.labelled:
            raise FlaxtrainError("val_data has no labels: build it with preproc.preprocess_test(texts, labels)")
        for name, data in (("train_data", train_data), ("val_data", val_data)):
            if data is not None and data.preproc.class_names != model.preproc.class_names:
                raise FlaxtrainError(
                    f"{name} has classes {data.preproc.class_names} but the model predicts {model.preproc.class_names}: "
                    "encode it with the model's preprocessor"
                )
        auto = isinstance(batch_size, str) and batch_size == "auto"
        if auto:
            if grad_accum_steps != 1:
                raise FlaxtrainError("batch_size='auto' sets no gradient accumulation: for a global batch larger than "
                                     "fits, call learner.find_batch_size(target) instead")
        for what, size in (("batch_size", None if auto else batch_size), ("eval_batch_size", eval_batch_size)):
            if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
                raise FlaxtrainError(f"{what} must be a positive whole number of examples"
                                     + (" or 'auto'" if what == "batch_size" else "") + f", got {size!r}")
        if precision not in PRECISIONS:
            raise FlaxtrainError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if grad_accum_steps < 1:
            raise FlaxtrainError(f"grad_accum_steps must be at least 1, got {grad_accum_steps}")
        self.strategy = make_strategy(strategy, mesh)
        parts = self.strategy.data_parallel * grad_accum_steps
        if auto:
            batch_size = parts  # a placeholder: find_batch_size below chooses it once the learner is built
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
        self.progress = Progress()
        self._optimizer = {"weight_decay": weight_decay, "clip_norm": clip_norm}
        self.frozen: tuple[str, ...] = ()
        self._tx = make_optimizer(model.default_lr, **self._optimizer)
        self._state: TrainState | None = None
        self._steps = None
        self.lr_finder: LRFinderResult | None = None
        self.skip_nonfinite = skip_nonfinite
        self.log_dir = log_dir
        self._eval_follows = eval_batch_size is None
        self.runs: list[seed_runs.SeedRun] = []  # the runs of the last fit_onecycle(..., seeds=K)
        if getattr(model, "lora", None) is not None:  # get_model(..., lora=...), or a loaded LoRA predictor's model
            self._freeze_for_lora()
        if auto:
            self.find_batch_size()

    @property
    def history(self) -> list[dict[str, float]]:
        """One record per finished epoch (loss, metric, val_*, lr, tokens/s, step time, MFU)."""
        return self.progress.history

    @property
    def evaluations(self) -> list[dict[str, float]]:
        """Validation records of fit(..., evaluate_every=N): step, the epoch's train metrics so far, val_*."""
        return self.progress.evaluations

    @property
    def lr_trace(self) -> list[tuple[int, float]]:
        """(global step, learning rate) of every step trained."""
        return self.progress.lr_trace

    @property
    def task(self) -> tasks.Task:
        return self.model.task

    @property
    def steps(self) -> Any:
        """The train/eval steps compiled for this learner's strategy, precision and accumulation."""
        if self._steps is None:
            module = self.model.module
            if self.precision != "float32":  # compute in bf16; params and optimizer state stay float32
                module = self.model.build(self.precision)
            sample = self.model.sample_inputs
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
            self._state = self.steps.place_state(state.replace(tx=self._tx, opt_state=init_opt_state(self._tx, state.params)))

    def _batches(self, data: Any, *, train: bool, epoch: int = 0, local: bool = False) -> tuple[Any, int]:
        """Batches for the compiled steps (this process's rows of each global batch), or with `local`
        every row, for the model's own one-device steps (top_losses, the SWA score)."""
        process_index, process_count = (0, 1) if local else (jax.process_index(), jax.process_count())
        return self.task.batches(data, batch_size=self.batch_size if train else self.eval_batch_size, shuffle=train,
                                 seed=self.seed, epoch=epoch, process_index=process_index, process_count=process_count)

    def _train_state(self) -> TrainState:
        if self._state is None:
            # The state owns a copy: the step donates its buffers, and model.params must stay valid.
            params = copy_tree(self.model.params)
            state = create_train_state(self.model.module, params, self._tx)
            self._state = self.steps.place_state(state.replace(apply_fn=self.steps.apply_fn))
        return self._state

    def fit(self, lr: float, n_cycles: int, cycle_len: int | None = None, cycle_mult: int = 1, *,
            swa_from: int | None = None, verbose: int = 1, checkpoint_dir: str | os.PathLike | None = None,
            checkpoint_every: int | None = None, keep_checkpoints: int = 3, resume: bool = False,
            evaluate_every: int | None = None) -> list[dict[str, float]]:
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
          evaluate_every: also validate every N steps (records in `learner.evaluations`: step, the
            epoch's train metrics so far, val_*; in TensorBoard too).
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
                         checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, resume=resume,
                         evaluate_every=evaluate_every)

    def fit_onecycle(self, lr: float, epochs: int | None = None, *, max_steps: int | None = None,
                     swa_from: int | None = None, verbose: int = 1, checkpoint_dir: str | os.PathLike | None = None,
                     checkpoint_every: int | None = None, keep_checkpoints: int = 3,
                     resume: bool = False, evaluate_every: int | None = None, seeds: int | None = None) -> list[dict[str, float]]:
        """Trains `epochs` epochs (or `max_steps` optimizer steps, the last epoch cut short) with the 1cycle
        policy peaking at `lr` (train/schedules.onecycle): warm-up then cosine annealing, Adam's b1 cycled
        inversely (0.95 -> 0.85 -> 0.95). Checkpoint and evaluate_every arguments as for `fit`.

        With `seeds=K`, trains K runs at once (train/seeds.py): run i starts from the model's
        `initial_params(seed + i)` and has the data order and dropout keys of a learner with seed + i, all K
        in one vmapped step. `learner.runs[i]` keeps each run's seed, weights and history; the returned
        history has the mean of every metric over the runs and its standard deviation (`val_acc_std`, ...);
        the model takes run 0's weights, and the learner goes on as run 0's own learner would (its optimizer
        state, step, epoch count and learning rates: a next fit call continues run 0)."""
        epochs = self._epochs_for(epochs, max_steps)
        if not lr > 0:
            raise FlaxtrainError(f"lr must be positive, got {lr}")
        if seeds is not None:
            unused = {"max_steps": max_steps, "swa_from": swa_from, "checkpoint_dir": checkpoint_dir, "resume": resume,
                      "evaluate_every": evaluate_every}
            return self._fit_seeds(seeds, lambda total: schedules.onecycle(lr, total), epochs, verbose=verbose,
                                   unused=unused)
        plan = {"method": "fit_onecycle", "lr": lr, "epochs": epochs, "max_steps": max_steps, "swa_from": swa_from}

        def make(first_step: int) -> tuple[Any, int | None]:
            total = max_steps or epochs * self._steps_per_epoch()
            return schedules.onecycle(lr, total, start_step=first_step), epochs

        return self._fit(plan, make, swa_from=swa_from, verbose=verbose, checkpoint_dir=checkpoint_dir,
                         checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, resume=resume,
                         max_steps=max_steps, evaluate_every=evaluate_every)

    def _fit_seeds(self, count: int, make_schedule: Any, epochs: int, *, verbose: int, unused: dict[str, Any]) -> list[dict[str, float]]:
        """`count` runs in one vmapped job (train/seeds.py); sets `self.runs`, and run 0's weights and train state."""
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise FlaxtrainError(f"seeds must be a whole number of runs (at least 1), got {count!r}")
        given = [name for name, value in unused.items() if value]
        if given:
            raise FlaxtrainError(f"seeds= trains its runs together without {given[0]}: drop it, or train the seeds one by one")
        if self.strategy.kind != "single" or self.grad_accum_steps != 1 or self.precision != "float32" or self.skip_nonfinite:
            raise FlaxtrainError("seeds= vmaps its runs on one device in float32: use strategy='single', grad_accum_steps=1, "
                                 "precision='float32' and skip_nonfinite=False")
        seeds = [self.seed + i for i in range(int(count))]

        def batches(seed: int, epoch: int) -> Any:
            return self.task.batches(self.train_data, batch_size=self.batch_size, shuffle=True, seed=seed, epoch=epoch,
                                     process_index=0, process_count=1)[0]

        val = None if self.val_data is None else (lambda: self._batches(self.val_data, train=False, local=True)[0])
        runs, summary, first = seed_runs.fit_seeds(
            apply_fn=self.model.module.apply, loss_fn=self.model.loss_fn, tx=self._tx,
            params=[self.model.initial_params(seed) for seed in seeds], seeds=seeds,
            schedule=make_schedule(epochs * self._steps_per_epoch()), epochs=epochs, train_batches=batches, val_batches=val,
            pad_values={"input_ids": getattr(self.model.preproc, "pad_id", 0)}, progress=self.progress, verbose=bool(verbose))
        self.runs = runs
        self.model.params = runs[0].params
        self._state = self.steps.place_state(first.replace(apply_fn=self.steps.apply_fn))
        return summary

    def _epochs_for(self, epochs: int | None, max_steps: int | None) -> int:
        """The epochs a call runs: `epochs`, or as many as `max_steps` steps reach into."""
        if (epochs is None) == (max_steps is None):
            raise FlaxtrainError("pass epochs or max_steps (one of them): e.g. fit_onecycle(1e-3, 3) or max_steps=1000")
        if max_steps is None:
            if epochs < 1:
                raise FlaxtrainError(f"epochs must be at least 1, got {epochs}")
            return epochs
        if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
            raise FlaxtrainError(f"max_steps must be a positive whole number of steps, got {max_steps!r}")
        return -(-int(max_steps) // self._steps_per_epoch())

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
            self._state = self.steps.place_state(state.replace(params=copy_tree(self.model.params)))
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
        # A copy placed as the learner's state is: the range test runs fit's own compiled step on it.
        work = self.steps.place_state(copy_tree(self.steps.unreplicated(self._train_state())))
        result = lr_range_test(self.steps, work, batches, jax.random.key(self.seed), start_lr=start_lr, end_lr=end_lr,
                               stop_factor=stop_factor)
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
        return plots.lr_finder(self.lr_finder, path, suggestion=suggestion)

    def plot(self, kind: str = "loss", path: str | None = None) -> str | None:
        """Training history: 'loss' (train and validation loss per epoch) or 'lr' (learning rate per step)."""
        return plots.history(self.progress, kind, path or f"{kind}.png")

    def _steps_per_epoch(self) -> int:
        return self.train_data.num_batches(self.batch_size)

    def _global_step(self) -> int:
        return self.steps.step_of(self._train_state())

    def _fit(self, plan: dict[str, Any], make_schedule: Any, *, swa_from: int | None, verbose: int,
             checkpoint_dir: str | os.PathLike | None, checkpoint_every: int | None, keep_checkpoints: int,
             resume: bool, monitor: str = "val_loss", plateau: Plateau | None = None,
             max_steps: int | None = None, evaluate_every: int | None = None) -> list[dict[str, float]]:
        """One fit call (train/fitting.py): `make_schedule(first_step) -> (schedule, epochs or None)`
        gives the plan's schedule; checkpoints, resume, SIGTERM, SWA and TensorBoard are the run's."""
        plan = {**plan, "batch_size": self.batch_size, "seed": self.seed, "grad_accum_steps": self.grad_accum_steps,
                **_flat_config("model", {"name": self.model.name, **_plain_config(self.model)})}
        if self.frozen:
            plan["frozen"] = list(self.frozen)
        val = self.val_data
        run = FitRun(
            steps=self.steps, state=self._train_state(), progress=self.progress, plan=plan, make_schedule=make_schedule,
            train_batches=lambda epoch: self._batches(self.train_data, train=True, epoch=epoch),
            val_batches=None if val is None else (lambda: self._batches(val, train=False)),
            seed=self.seed, precision=self.precision, swa_from=swa_from, swa_score=self._score,
            keep_state=self._keep_state, publish=self._publish,
            checkpointing=Checkpointing(checkpoint_dir, checkpoint_every, keep_checkpoints, resume), monitor=monitor,
            epoch_keys=self._epoch_keys(), plateau=plateau, log_dir=self.log_dir, verbose=bool(verbose),
            max_steps=max_steps, evaluate_every=evaluate_every,
        )
        return run.run()

    def _keep_state(self, state: TrainState | None) -> None:
        self._state = state

    def _publish(self, params: Any) -> None:
        self.model.params = params

    def _score(self, params: Any, state: TrainState) -> dict[str, float]:
        """Validation metrics of `params` on this process alone, with the model's own one-device steps."""
        batches, count = self._batches(self.val_data, train=False, local=True)
        one = state.replace(params=params, opt_state=None, step=jnp.zeros((), jnp.int32), apply_fn=self.model.module.apply,
                            halted=0)
        return loop.summarize(loop.evaluate(one, batches, steps=self.model.steps, num_batches=count, verbose=False), "val_")

    def _epoch_keys(self) -> set[str]:
        """Keys an epoch record will have (for checking a monitored metric up front)."""
        keys = {"loss", self.task.metric}
        if self.val_data is not None:
            keys |= {f"val_{k}" for k in keys}
        return keys

def _plain_config(model: TaskModel) -> dict[str, Any]:
    """The model's config as a run plan records it (a custom module's as far as it can be named)."""
    try:
        return model.folder_config()
    except FlaxtrainError:
        return dict(model.config)


def _flat_config(prefix: str, config: dict[str, Any]) -> dict[str, Any]:
    """{'model.name': ..., 'model.encoder.hidden_size': ...}: a config as run-plan entries, one per field."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat_config(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def get_learner(model: TaskModel, train_data: Any = None, val_data: Any = None, batch_size: int | str = 32,
                eval_batch_size: int | None = None, **kwargs: Any) -> Learner:
    """ktrain's `get_learner(model, train_data, val_data, batch_size)`."""
    if not isinstance(model, TaskModel):
        raise FlaxtrainError(f"get_learner needs a flaxtrain model (from get_model or text_classifier), not {type(model).__name__}")
    if train_data is None:  # the data get_model was given
        train_data, val_data = model.train_data, val_data if val_data is not None else model.val_data
    if train_data is None:
        raise FlaxtrainError("no training data: pass train_data to get_learner")
    return Learner(model, train_data, val_data, batch_size=batch_size, eval_batch_size=eval_batch_size, **kwargs)
