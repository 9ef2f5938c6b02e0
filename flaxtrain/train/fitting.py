"""One fit call as named steps: open checkpoints -> restore or start -> schedule -> train epochs -> finish.

`FitRun` holds what a call of `Learner.fit / fit_onecycle / autofit` does beyond the loop itself:
checkpoints and exact resume, the SIGTERM save, the learning-rate trace, stochastic weight averaging,
plateau watching (autofit) and TensorBoard summaries. It knows nothing of tasks or the API: the learner
hands it the compiled steps, the state, batch makers and two callbacks.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxtrain.errors import FlaxtrainError
from flaxtrain.train import loop
from flaxtrain.train.checkpoint import Checkpointer, abstract_like, saving_on_sigterm
from flaxtrain.train.partition import CompiledSteps, local_copy
from flaxtrain.train.plateau import Plateau, metric_mode
from flaxtrain.train.state import TrainState, copy_tree, update_average
from flaxtrain.train.summaries import SummaryWriter

ADAM_B1 = 0.9  # Adam's b1 outside the cyclical policies
MAX_AUTOFIT_EPOCHS = 10_000  # autofit(epochs=None) runs until early stopping; this only bounds the loop

Schedule = Callable[[int], dict[str, float]]


@dataclasses.dataclass
class Progress:
    """What a learner carries from one fit call to the next."""

    epochs_done: int = 0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)  # one record per finished epoch
    lr_trace: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (global step, lr) of every step
    evaluations: list[dict[str, float]] = dataclasses.field(default_factory=list)  # validation every N steps


@dataclasses.dataclass
class Checkpointing:
    """Where and how often a fit call saves (None: no checkpoints)."""

    directory: str | os.PathLike | None = None
    every: int | None = None  # steps between mid-epoch saves (epoch ends always save)
    keep: int = 3
    resume: bool = False


class FitRun:
    """One fit call. `run()` returns this call's history, or raises a one-line FlaxtrainError when
    training stopped on a non-finite loss or an interrupt (after handing the last weights over).

    Args:
      steps: the learner's compiled steps; state: its train state (donated from here on).
      progress: epochs done, history and lr trace, updated in place.
      plan: the call's arguments and the run's settings (a resumed run must repeat them).
      make_schedule: first global step -> (schedule, epochs or None for "until early stopping").
      train_batches: epoch -> (batches, count); val_batches: () -> (batches, count), or None.
      swa_from: average the weights of epochs swa_from.. of this call; swa_score(params) scores them.
      max_steps: end the call after this many optimizer steps (its last epoch cut short).
      evaluate_every: validate every N global steps as well as at epoch ends (records in
        `progress.evaluations`: step, the epoch's train loss so far, val_*).
      keep_state(state): receives the final state (halt flag cleared) before anything is raised.
      publish(params): receives the weights the model keeps (last, best or averaged).
    """

    def __init__(self, *, steps: CompiledSteps, state: TrainState, progress: Progress, plan: dict[str, Any],
                 make_schedule: Callable[[int], tuple[Schedule, int | None]], train_batches: Callable[[int], Any],
                 val_batches: Callable[[], Any] | None, seed: int, precision: str, swa_from: int | None,
                 swa_score: Callable[[Any, TrainState], dict[str, float]], keep_state: Callable[[TrainState | None], None],
                 publish: Callable[[Any], None], checkpointing: Checkpointing, monitor: str, epoch_keys: set[str],
                 plateau: Plateau | None, log_dir: str | os.PathLike | None, verbose: bool, max_steps: int | None = None,
                 evaluate_every: int | None = None):
        self.steps, self.state, self.progress, self.plan = steps, state, progress, plan
        self.make_schedule, self.train_batches, self.val_batches = make_schedule, train_batches, val_batches
        self.seed, self.precision, self.swa_from, self.swa_score = seed, precision, swa_from, swa_score
        self.keep_state, self.publish = keep_state, publish
        self.checkpointing, self.monitor, self.epoch_keys = checkpointing, monitor, epoch_keys
        self.plateau, self.log_dir, self.verbose = plateau, log_dir, verbose
        self.max_steps, self.evaluate_every = max_steps, evaluate_every
        self.ckpt: Checkpointer | None = None
        self.position = {"first_epoch": progress.epochs_done, "first_step": steps.step_of(state),
                         "epoch": progress.epochs_done, "batch": 0}
        self.initial_sums: dict[str, Any] | None = None
        self.average: dict[str, Any] = {"params": None, "count": 0}
        self.stop_signal: dict[str, str] = {}

    def run(self) -> list[dict[str, float]]:
        self.open_checkpoints()
        if self.checkpointing.resume:
            self.restore()
        schedule, epochs = self.schedule()
        history_before = len(self.progress.history)
        state, stop = self.train_epochs(schedule, epochs)
        # A non-finite step halted the state at the last finite weights (train/step.py); the next fit
        # (say with a lower lr) trains on from them.
        self.keep_state(state.replace(halted=state.halted * 0))
        history = self.progress.history[history_before:]
        self.finish(state, stop, history, epochs)
        return history

    # --- the steps, in order ------------------------------------------------------------------------
    def open_checkpoints(self) -> None:
        c = self.checkpointing
        if c.resume and c.directory is None:
            raise FlaxtrainError("resume=True needs checkpoint_dir: pass the directory the stopped run saved to")
        if c.every is not None and c.every < 1:
            raise FlaxtrainError(f"checkpoint_every must be at least 1 step, got {c.every}")
        if self.evaluate_every is not None:
            if self.evaluate_every < 1:
                raise FlaxtrainError(f"evaluate_every must be at least 1 step, got {self.evaluate_every}")
            if self.val_batches is None:
                raise FlaxtrainError("evaluate_every needs validation data: pass val_data to get_learner")
        if c.directory is None:
            return
        self.ckpt = Checkpointer(c.directory, keep=c.keep, mode=metric_mode(self.monitor),
                                 monitor=self.monitor if self.monitor in self.epoch_keys else None)
        if not c.resume and self.ckpt.last_step() is not None:
            raise FlaxtrainError(
                f"{self.ckpt.directory} already holds checkpoints (steps {self.ckpt.steps()}) of another run: pass "
                "resume=True to continue that run, or a new checkpoint_dir"
            )

    def restore(self) -> None:
        """Continues from the newest readable checkpoint, placed for this run's strategy (the device
        count may differ from the saving run's); starts from the beginning when there is none."""
        one = self.steps.unreplicated(self.state)
        base = {"step": one.step, "params": one.params, "opt_state": one.opt_state}
        params_target = abstract_like(one.params)

        def target(meta: dict[str, Any]) -> Any:
            self._check_same_run(meta.get("plan", {}))
            return {**abstract_like(base), **{name: params_target for name in meta.get("items", ())}}

        restored = self.ckpt.restore(target)
        if restored is None:
            if self.verbose:
                print(f"no checkpoint in {self.ckpt.directory} yet: starting from the beginning")
            return
        tree, meta = restored
        state = one.replace(step=tree["step"], params=tree["params"], opt_state=tree["opt_state"])
        self.state = self.steps.place_state(state) if self.steps.strategy.kind == "pmap" else state
        self.position = {k: meta[k] for k in self.position}
        self.initial_sums = None if meta["sums"] is None else {k: np.float32(v) for k, v in meta["sums"].items()}
        self.progress.history[:] = meta["history"]
        self.progress.evaluations[:] = meta.get("evaluations", [])
        self.progress.epochs_done = meta["epoch"]
        self.average = {"params": tree.get("average"), "count": meta["swa_count"]}
        if self.plateau is not None:
            self.plateau.load(meta["plateau"], tree.get("best"))
        if self.verbose:
            print(f"resuming from checkpoint step {meta['step']} in {self.ckpt.directory}: epoch {meta['epoch'] + 1}, "
                  f"batch {meta['batch']}")

    def _check_same_run(self, saved: dict[str, Any]) -> None:
        plan = self.plan
        # Model keys are compared when the saving run recorded them (checkpoints of older flaxtrain did not).
        changed = sorted(k for k in set(saved) | set(plan) if saved.get(k) != plan.get(k)
                         and (not k.startswith("model.") or any(key.startswith("model.") for key in saved)))
        if changed:
            differences = ", ".join(f"{k} {saved.get(k)!r} there, {plan.get(k)!r} here" for k in changed)
            raise FlaxtrainError(f"the checkpoints in {self.ckpt.directory} come from a different run ({differences}): "
                                 "repeat the original call or use a new checkpoint_dir")

    def schedule(self) -> tuple[Schedule, int | None]:
        """The call's schedule from its first global step; the lr trace is filled up to a resumed step."""
        first_step = self.position["first_step"]
        schedule, epochs = self.make_schedule(first_step)
        if self.swa_from is not None and not 1 <= self.swa_from <= epochs:
            raise FlaxtrainError(f"swa_from must lie between 1 and epochs ({epochs}), got {self.swa_from}")
        trace = self.progress.lr_trace
        trace.extend((step, schedule(step)["learning_rate"]) for step in range(first_step, self.steps.step_of(self.state)))

        def traced(step: int) -> dict[str, float]:
            values = {"b1": ADAM_B1, **schedule(step)}
            trace.append((step, values["learning_rate"]))
            return values

        return traced, epochs

    def train_epochs(self, schedule: Schedule, epochs: int | None) -> tuple[TrainState, str | None]:
        """The loop over the remaining epochs; checkpoints and summaries close whatever happens."""
        tensorboard = None if self.log_dir is None else SummaryWriter(self.log_dir, active=jax.process_index() == 0)
        traced_until = [len(self.progress.lr_trace)]

        def after_epoch(epoch: int, current: TrainState, record: dict[str, float]) -> str | None:
            self.progress.history.append(record)
            self.progress.epochs_done = epoch + 1
            step = self.steps.step_of(current)
            stop = None if self.plateau is None else self.plateau.update(record, epoch, self.steps.params_of(current))
            if tensorboard is not None:
                tensorboard.epoch(record, step)
                tensorboard.learning_rates(self.progress.lr_trace[traced_until[0]:])
                traced_until[0] = len(self.progress.lr_trace)
            if self.ckpt is not None:
                self.save(current, epoch + 1, 0, None)
                self.ckpt.save_best(step, self.steps.params_of(current), record)
            return stop

        def evaluated(current: TrainState, step: int, sums: Any) -> None:
            batches, count = self.val_batches()
            record = {"step": step, **loop.summarize(sums),
                      **loop.summarize(loop.evaluate(current, batches, steps=self.steps, num_batches=count, verbose=False),
                                       "val_")}
            self.progress.evaluations.append(record)
            if tensorboard is not None:
                tensorboard.epoch(record, step)
            if self.verbose:
                print(loop.format_record(record))

        state, self.state = self.state, None  # donated to the step from here on
        self.keep_state(None)
        position = self.position
        remaining = None if epochs is None else position["first_epoch"] + epochs - position["epoch"]
        try:
            with saving_on_sigterm(self.ckpt is not None, self.stop_signal):
                state, _, stop = loop.fit(
                    state,
                    epochs=MAX_AUTOFIT_EPOCHS if remaining is None else remaining,
                    train_batches=self.train_batches,
                    val_batches=self.val_batches,
                    steps=self.steps,
                    rng=jax.random.key(self.seed),
                    start_epoch=position["epoch"],
                    verbose=self.verbose,
                    on_epoch_end=self.accumulate_average,
                    precision=self.precision,
                    schedule=schedule,
                    start_batch=position["batch"],
                    initial_sums=self.initial_sums,
                    save_every=self.checkpointing.every,
                    save=None if self.ckpt is None else self.save,
                    should_stop=lambda: self.stop_signal.get("name"),
                    after_epoch=after_epoch,
                    last_step=None if self.max_steps is None else position["first_step"] + self.max_steps,
                    evaluate_every=self.evaluate_every, on_evaluate=evaluated,
                )
        finally:
            if self.ckpt is not None:
                self.ckpt.wait()
            if tensorboard is not None:
                tensorboard.close()
        return state, stop

    def finish(self, state: TrainState, stop: str | None, history: list[dict[str, float]], epochs: int | None) -> None:
        """Hands the weights over; raises on an interrupt or a non-finite loss; scores averaged weights."""
        final_params = self.steps.params_of(state)
        early_stop = self.plateau is not None and self.plateau.stopped
        if early_stop and self.verbose:
            print(stop)
        if stop and not early_stop:
            self.publish(copy_tree(local_copy(final_params)))
            if self.stop_signal:
                self.exit_on_signal(state)
            if self.ckpt is not None:
                last = self.ckpt.last_step()
                stop += (f"; the last good checkpoint is step {last} in {self.ckpt.directory} (resume=True continues "
                         "from it)" if last is not None else f"; no checkpoint was saved in {self.ckpt.directory} yet")
            raise FlaxtrainError(stop)
        if self.ckpt is not None:
            self.ckpt.close()
        if self.average["params"] is None:
            self.publish(copy_tree(local_copy(final_params)))
            return
        averaged = local_copy(self.average["params"])
        self.publish(averaged)
        if self.val_batches is not None:  # scored on this process alone, as the predictor will be
            record = self.swa_score(averaged, state)
            history[-1].update({f"swa_{k}": v for k, v in record.items()})
            if self.verbose:
                first = self.position["first_epoch"]
                print(f"weights averaged over epochs {first + self.swa_from}-{first + epochs}:  "
                      + "  ".join(f"{k} {v:.4f}" for k, v in record.items()))

    def exit_on_signal(self, state: TrainState) -> None:
        """After a SIGTERM's checkpoint: says where it is and exits as the signal asked."""
        step = self.steps.step_of(state)
        message = (f"received {self.stop_signal['name']} at step {step}: saved checkpoint step {step} to "
                   f"{self.ckpt.directory}; run the same fit with resume=True to continue")
        self.ckpt.close()
        print(message, file=sys.stderr, flush=True)
        signal.raise_signal(signal.Signals[self.stop_signal["name"]])
        raise FlaxtrainError(message)  # when the previous handler returns instead

    # --- callbacks of the loop ----------------------------------------------------------------------
    def accumulate_average(self, epoch: int, current: TrainState) -> None:
        """Adds the epoch's weights to the running average from epoch swa_from of this call."""
        if self.swa_from is None or epoch - self.position["first_epoch"] + 1 < self.swa_from:
            return
        average = self.average
        if average["params"] is None:
            average["params"] = copy_tree(self.steps.params_of(current))
        else:
            average["params"] = update_average(average["params"], self.steps.params_of(current),
                                               jnp.asarray(average["count"]))
        average["count"] += 1

    def save(self, current: TrainState, epoch: int, batch: int, sums: Any, *, wait: bool = False) -> None:
        """A checkpoint of the state, the average, the best weights and everything resume needs."""
        one = self.steps.unreplicated(current)
        tree = {"step": one.step, "params": one.params, "opt_state": one.opt_state}
        if self.average["params"] is not None:
            tree["average"] = self.average["params"]
        if self.plateau is not None and self.plateau.best_params is not None:
            tree["best"] = self.plateau.best_params
        meta = {"plan": self.plan, "items": sorted(set(tree) - {"step", "params", "opt_state"}),
                **{k: self.position[k] for k in ("first_epoch", "first_step")}, "epoch": epoch, "batch": batch,
                "sums": None if sums is None else {k: float(v) for k, v in jax.device_get(sums).items()},
                "history": list(self.progress.history), "evaluations": list(self.progress.evaluations),
                "swa_count": self.average["count"],
                "plateau": None if self.plateau is None else self.plateau.dump()}
        self.ckpt.save(self.steps.step_of(current), tree, meta, wait=wait)
