"""Compiles the pure steps for a strategy: one device, `pmap` data parallelism, or `jit` over a Mesh.

Strategies (`make_strategy`):
  - 'single': one device, `jax.jit` with the state donated.
  - 'pmap': the classic replicated data-parallel step: state copied to every local device, the
    batch split over them, gradient and metric sums `psum`-ed over all devices of all processes.
  - 'spmd': `jax.jit` with `NamedSharding` over a `Mesh` with axes ('data', 'fsdp', 'tensor').
    Batch rows are spread over ('data', 'fsdp'); params follow their logical axis names through
    `DEFAULT_RULES` (FSDP: the embed axis over 'fsdp', so params and optimizer state are sharded;
    tensor parallelism: heads, MLP width and vocabulary over 'tensor'). A dimension that does not
    divide over its mesh axis stays whole. The optimizer state takes its params' shardings.
  - 'auto': 'spmd' data parallel over every device of every process ('single' on one device).

All give the numbers one device gives on the whole batch (tests/train/test_strategies.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from flax import jax_utils
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flaxtrain._xla_flags import compiler_options
from flaxtrain.errors import FlaxtrainError
from flaxtrain.layers import axes, sharding
from flaxtrain.train import step as step_lib
from flaxtrain.train.state import TrainState, create_train_state, init_params

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # batch rows are split over both
STRATEGIES = ("auto", "single", "pmap", "spmd")

# logical param axis -> mesh axis (None: never split)
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    (axes.EMBED, "fsdp"),
    (axes.VOCAB, "tensor"),
    (axes.MLP, "tensor"),
    (axes.HEADS, "tensor"),
    (axes.HEAD_DIM, None),
    (axes.CLASSES, None),
    (axes.KERNEL, None),
    (axes.BATCH, BATCH_AXES),
    (axes.LENGTH, None),
    (axes.ACT_EMBED, None),
)


@dataclasses.dataclass(frozen=True)
class Strategy:
    """How the steps are compiled: kind 'single' | 'pmap' | 'spmd', and the Mesh for 'spmd'."""

    kind: str
    mesh: Mesh | None = None
    rules: tuple[tuple[str, str | None], ...] = DEFAULT_RULES

    @property
    def data_parallel(self) -> int:
        """Devices (over all processes) that the rows of one global batch are spread over."""
        if self.kind == "pmap":
            return jax.device_count()
        if self.kind == "spmd":
            return self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        return 1

    def describe(self) -> str:
        if self.kind == "spmd":
            sizes = ", ".join(f"{name} {self.mesh.shape[name]}" for name in MESH_AXES)
            return f"spmd over {self.mesh.size} devices ({sizes})"
        if self.kind == "pmap":
            return f"pmap over {jax.device_count()} devices"
        return f"one device ({jax.devices()[0].platform})"


def make_strategy(
    strategy: str = "auto", mesh: Sequence[int] | Mesh | None = None, *, rules: Sequence[tuple[str, str | None]] | None = None
) -> Strategy:
    """Resolves a strategy name and mesh sizes (data, fsdp, tensor) against the devices present.

    Args:
      strategy: 'auto', 'single', 'pmap' or 'spmd'.
      mesh: for 'spmd', the sizes (data, fsdp, tensor), whose product must be the number of devices
        (default: all devices on 'data'), or a ready `jax.sharding.Mesh` with those axis names.
      rules: logical-axis -> mesh-axis table (default DEFAULT_RULES).
    """
    if strategy not in STRATEGIES:
        raise FlaxtrainError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    rules = tuple(rules) if rules is not None else DEFAULT_RULES
    if mesh is not None and strategy in ("single", "pmap"):
        raise FlaxtrainError(f"a mesh only applies to strategy 'spmd' (or 'auto'), not {strategy!r}")
    count = jax.device_count()
    if strategy == "auto":
        trivial = mesh is None or (not isinstance(mesh, Mesh) and all(int(n) == 1 for n in mesh))
        if count == 1 and trivial:
            return Strategy("single", rules=rules)
        strategy = "spmd"
    if strategy in ("single", "pmap"):
        return Strategy(strategy, rules=rules)
    if isinstance(mesh, Mesh):
        if tuple(mesh.axis_names) != MESH_AXES:
            raise FlaxtrainError(f"the mesh's axes are {tuple(mesh.axis_names)}: name them {MESH_AXES}")
        return Strategy("spmd", mesh, rules)
    shape = (count, 1, 1) if mesh is None else tuple(int(n) for n in mesh)
    if len(shape) != 3 or min(shape) < 1:
        raise FlaxtrainError(f"mesh must be three positive sizes (data, fsdp, tensor), got {mesh}")
    if math.prod(shape) != count:
        raise FlaxtrainError(
            f"mesh {shape} needs {math.prod(shape)} devices but {count} are present: choose sizes whose product is {count}"
        )
    # Auto axes: XLA's partitioner places the activations; only params and batches carry shardings.
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return Strategy("spmd", jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=jax.devices()), rules)


def logical_param_specs(module: nn.Module, sample_inputs: dict[str, jax.Array]) -> Any:
    """The params' logical axis names (a tree of PartitionSpec) from an abstract `init`."""
    boxed = jax.eval_shape(
        lambda rng: module.init({"params": rng, "dropout": rng}, **sample_inputs, deterministic=True), jax.random.key(0)
    )
    return nn.get_partition_spec(boxed["params"])


def mesh_spec(logical: PartitionSpec, shape: tuple[int, ...], mesh: Mesh, rules: Sequence[tuple[str, str | None]]) -> PartitionSpec:
    """Mesh axes for one param: each logical name through `rules`, kept only where the size divides."""
    table = dict(rules)
    names = tuple(logical) + (None,) * (len(shape) - len(logical))
    used: set[str] = set()
    out: list[str | None] = []
    for name, size in zip(names, shape):
        axis = table.get(name) if isinstance(name, str) else None
        if axis is None or axis in used or mesh.shape[axis] == 1 or size % mesh.shape[axis]:
            out.append(None)
        else:
            out.append(axis)
            used.add(axis)
    return PartitionSpec(*out)


class CompiledSteps:
    """The jitted train/eval/predict steps of one model under one strategy.

    Steps take host (numpy) batches of this process's rows and place them on the devices; the
    state must first go through `place_state`. Metric sums come back replicated (readable on
    every process).
    """

    def __init__(
        self,
        apply_fn: Callable,
        loss_fn: step_lib.LossFn,
        *,
        strategy: Strategy | None = None,
        grad_accum_steps: int = 1,
        param_specs: Any = None,
        predict_fn: Callable | None = None,
        skip_nonfinite: bool = False,
    ):
        if grad_accum_steps < 1:
            raise FlaxtrainError(f"grad_accum_steps must be at least 1, got {grad_accum_steps}")
        self.apply_fn = apply_fn
        self.loss_fn = loss_fn
        self.strategy = strategy or Strategy("single")
        self.grad_accum_steps = grad_accum_steps
        self.param_specs = param_specs
        self.skip_nonfinite = skip_nonfinite
        self._jitted: dict[str, Callable] = {}
        self._state_sharding: Any = None
        self._flops: dict[tuple, float | None] = {}
        train = self._train_fn()
        evaluate = functools.partial(step_lib.eval_step, loss_fn=loss_fn)
        kind = self.strategy.kind
        self._settle = kind == "pmap" and jax.local_devices()[0].platform == "cpu"
        if kind == "single":
            self._jitted["train"] = jax.jit(train, donate_argnums=0, compiler_options=compiler_options())
            self._jitted["eval"] = jax.jit(evaluate, compiler_options=compiler_options())
        elif kind == "pmap":
            self._jitted["train"] = jax.pmap(functools.partial(train, axis_name="data"), axis_name="data",
                                             in_axes=(0, 0, None), donate_argnums=0)
            self._jitted["eval"] = jax.pmap(functools.partial(evaluate, axis_name="data"), axis_name="data")
        if predict_fn is not None:
            self._jitted["predict"] = jax.jit(functools.partial(predict_fn, apply_fn), compiler_options=compiler_options())
        self._jitted["example_losses"] = jax.jit(functools.partial(step_lib.example_losses, apply_fn, loss_fn=loss_fn),
                                                 compiler_options=compiler_options())

    def _train_fn(self) -> Callable:
        return functools.partial(step_lib.train_step, loss_fn=self.loss_fn, grad_accum_steps=self.grad_accum_steps,
                                 skip_nonfinite=self.skip_nonfinite,
                                 unroll_micro_batches=jax.local_devices()[0].platform == "cpu")

    # --- placement -------------------------------------------------------------------------------
    def init_state(self, module: nn.Module, sample_inputs: dict[str, jax.Array], rng: jax.Array,
                   tx: optax.GradientTransformation) -> TrainState:
        """A fresh TrainState created on the devices: under spmd, `init` is jitted with the state's
        shardings as out_shardings (shapes from `jax.eval_shape`), so no device ever holds all params."""

        def init(key: jax.Array) -> TrainState:
            return create_train_state(module, init_params(module, sample_inputs, key), tx)

        if self.strategy.kind != "spmd":
            return self.place_state(jax.jit(init, compiler_options=compiler_options())(rng))
        sharding = self.state_sharding(jax.eval_shape(init, rng))
        return self._in_mesh(jax.jit(init, out_shardings=sharding, compiler_options=compiler_options()), rng)

    def place_state(self, state: TrainState) -> TrainState:
        """The state on this strategy's devices (replicated for pmap, sharded for spmd)."""
        kind = self.strategy.kind
        if kind == "pmap":
            return jax_utils.replicate(state, jax.local_devices())
        if kind == "single":
            return jax.device_put(state, jax.devices()[0])
        sharding = self.state_sharding(state)
        if self.strategy.mesh.is_multi_process:
            return jax.tree.map(lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda i: np.asarray(x)[i]),
                                state, sharding)
        return jax.device_put(state, sharding)

    def state_sharding(self, state: TrainState) -> Any:
        """NamedShardings of the state's leaves ('spmd' only): params by rule, optimizer state like its params."""
        if self._state_sharding is None:
            mesh = self.strategy.mesh
            replicated = NamedSharding(mesh, PartitionSpec())
            if self.param_specs is None:
                params = jax.tree.map(lambda _: replicated, state.params)
            else:
                params = jax.tree.map(
                    lambda spec, x: NamedSharding(mesh, mesh_spec(spec, np.shape(x), mesh, self.strategy.rules)),
                    self.param_specs, state.params, is_leaf=lambda x: isinstance(x, PartitionSpec),
                )
            masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731  (frozen params have no state)
            opt_state = optax.tree_map_params(
                state.tx, lambda x, sharding: x if masked(x) else sharding, state.opt_state, params,
                transform_non_params=lambda _: replicated, is_leaf=masked,
            )
            self._state_sharding = state.replace(step=replicated, params=params, opt_state=opt_state, halted=replicated)
        return self._state_sharding

    def place_batch(self, batch: dict[str, np.ndarray]) -> Any:
        """This process's rows of a global batch -> device arrays laid out for the step."""
        rows = len(next(iter(batch.values())))
        kind = self.strategy.kind
        parts = self.strategy.data_parallel * self.grad_accum_steps
        total = rows * (jax.process_count() if kind != "single" else 1)
        if total % parts:
            where = f"{self.strategy.data_parallel} data-parallel devices"
            if self.grad_accum_steps > 1:
                where += f" x {self.grad_accum_steps} micro-batches"
            raise FlaxtrainError(
                f"batch size {total} does not divide over {where}: use a batch size that is a multiple of {parts}"
            )
        if kind == "single":
            return batch
        if kind == "pmap":
            n = jax.local_device_count()
            return jax.tree.map(lambda x: np.reshape(x, (n, x.shape[0] // n, *x.shape[1:])), batch)
        sharding = NamedSharding(self.strategy.mesh, PartitionSpec(BATCH_AXES))
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)

    # --- steps -----------------------------------------------------------------------------------
    def _spmd(self, name: str, state: TrainState) -> Callable:
        if name not in self._jitted:
            mesh = self.strategy.mesh
            replicated = NamedSharding(mesh, PartitionSpec())
            batch = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
            sharding = self.state_sharding(state)
            if name == "train":
                fn = self._train_fn()
                self._jitted[name] = jax.jit(fn, in_shardings=(sharding, batch, replicated),
                                             out_shardings=(sharding, replicated), donate_argnums=0,
                                             compiler_options=compiler_options())
            else:
                fn = functools.partial(step_lib.eval_step, loss_fn=self.loss_fn)
                self._jitted[name] = jax.jit(fn, in_shardings=(sharding, batch), out_shardings=replicated,
                                             compiler_options=compiler_options())
        return self._jitted[name]

    def _in_mesh(self, fn: Callable, *args: Any) -> Any:
        """Calls (and so traces) `fn` with the mesh and the logical axis rules in scope."""
        with jax.set_mesh(self.strategy.mesh), sharding.activation_rules(self.strategy.rules):
            return fn(*args)

    def train(self, state: TrainState, batch: dict[str, np.ndarray], rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        """(state, this batch's metric sums); the state passed in is donated."""
        placed = self.place_batch(batch)
        if self.strategy.kind == "spmd":
            return self._in_mesh(self._spmd("train", state), state, placed, rng)
        state, sums = self._jitted["train"](state, placed, rng)
        if self.strategy.kind == "pmap":
            sums = jax.tree.map(lambda x: x[0], self._settled(sums))
        return state, sums

    def eval(self, state: TrainState, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Metric sums of the batch without dropout."""
        placed = self.place_batch(batch)
        if self.strategy.kind == "spmd":
            return self._in_mesh(self._spmd("eval", state), state, placed)
        sums = self._jitted["eval"](state, placed)
        return jax.tree.map(lambda x: x[0], self._settled(sums)) if self.strategy.kind == "pmap" else sums

    def _settled(self, outputs: Any) -> Any:
        """A pmap step's outputs, waited for on CPU devices. XLA's CPU client launches each device's part
        of a step from a shared worker pool and caps the steps in flight per device; with several steps
        queued, the pool's threads can all wait in one all-reduce while the part that would complete it
        waits for a slot on its device, and the process aborts after 40 s (seen under load with 8
        simulated devices: tests/test_cli_devices.py). One step in flight at a time cannot deadlock so."""
        return jax.block_until_ready(outputs) if self._settle else outputs

    def predict(self, params: Any, batch: dict[str, np.ndarray]) -> jax.Array:
        """The predict function's outputs for the batch's rows (params as `params_of` returns them)."""
        if "predict" not in self._jitted:
            raise FlaxtrainError("these steps were compiled without a predict function: pass predict_fn to compile_steps")
        return self._jitted["predict"](params, batch)

    def example_losses(self, params: Any, batch: dict[str, np.ndarray]) -> jax.Array:
        """Per-row losses [b] of a batch without dropout (params as `params_of` returns them)."""
        return self._jitted["example_losses"](params, batch)

    def with_hyperparams(self, state: TrainState, **values: float) -> TrainState:
        """The state with injected optimizer hyperparams (learning_rate, b1, ...) set to `values`."""
        from flaxtrain.train.optim import set_hyperparams

        if self.strategy.kind == "single":
            # Committed to the device like the step's outputs: an uncommitted value would give the
            # jitted step a different signature, and one more compilation, on the next call.
            placed = {k: jax.device_put(np.float32(v), jax.devices()[0]) for k, v in values.items()}
            return state.replace(opt_state=set_hyperparams(state.opt_state, **placed))
        if self.strategy.kind != "pmap":
            return state.replace(opt_state=set_hyperparams(state.opt_state, **values))
        hyper = dict(state.opt_state.hyperparams)
        for name, value in values.items():
            hyper[name] = jax_utils.replicate(np.float32(value), jax.local_devices())
        return state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))

    # --- reading back ----------------------------------------------------------------------------
    def params_of(self, state: TrainState) -> Any:
        """The state's params as arrays usable outside the step (one replica's under pmap)."""
        if self.strategy.kind == "pmap":
            return jax.tree.map(lambda x: x[0], state.params)
        return state.params

    def unreplicated(self, state: TrainState) -> TrainState:
        """The state as one copy (pmap keeps one per device; other strategies return it as is)."""
        if self.strategy.kind == "pmap":
            return jax.tree.map(lambda x: x[0], state)
        return state

    def step_of(self, state: TrainState) -> int:
        """The state's step counter as a Python int."""
        step = state.step
        if self.strategy.kind == "pmap":
            step = step[0]
        return int(host_value(step))

    def _lowered_train(self, state: TrainState, batch: dict[str, np.ndarray], rng: jax.Array) -> Any:
        """The train step lowered for this batch shape (as the strategy compiles it)."""
        placed = self.place_batch(batch)
        if self.strategy.kind == "spmd":
            return self._in_mesh(self._spmd("train", state).lower, state, placed, rng)
        return self._jitted["train"].lower(state, placed, rng)

    def flops(self, state: TrainState, batch: dict[str, np.ndarray], rng: jax.Array) -> float | None:
        """XLA's count of floating-point operations in one train step on this batch shape (all devices);
        None where the backend has no cost analysis."""
        key = tuple((k, np.shape(v)) for k, v in sorted(batch.items()))
        if key not in self._flops:
            lowered = self._lowered_train(state, batch, rng)
            try:
                cost = lowered.cost_analysis()
            except (NotImplementedError, jax.errors.JaxRuntimeError):  # backends without XLA's cost analysis
                cost = None
            cost = cost[0] if isinstance(cost, list) and cost else cost
            flops = float(cost["flops"]) if isinstance(cost, dict) and cost.get("flops", 0) > 0 else None
            if flops is not None and self.strategy.kind == "pmap":
                flops *= jax.device_count()  # the lowered program is one device's
            self._flops[key] = flops
        return self._flops[key]

    def memory(self, state: TrainState, batch: dict[str, np.ndarray], rng: jax.Array) -> dict[str, int] | None:
        """Bytes the compiled train step needs per device on this batch shape, from XLA's memory analysis:
        {'arguments', 'outputs', 'temporaries', 'aliased', 'peak'} (peak: arguments + outputs + temporaries
        - aliased, the donated state counted once); None where the backend gives no analysis."""
        lowered = self._lowered_train(state, batch, rng)
        # The same program under the same options compiles to the same memory: a second search (say
        # find_batch_size() and then find_batch_size(target)) does not compile it again.
        key = (hashlib.sha256(lowered.as_text().encode()).hexdigest(), repr(compiler_options()),
               tuple(str(d) for d in jax.devices()))
        if key not in _MEMORY_ANALYSES:
            try:
                analysis = lowered.compile().memory_analysis()
            except (NotImplementedError, jax.errors.JaxRuntimeError):  # not remembered: a failure may pass
                return None
            if analysis is None:
                return None
            sizes = {"arguments": int(analysis.argument_size_in_bytes), "outputs": int(analysis.output_size_in_bytes),
                     "temporaries": int(analysis.temp_size_in_bytes), "aliased": int(analysis.alias_size_in_bytes)}
            sizes["peak"] = sizes["arguments"] + sizes["outputs"] + sizes["temporaries"] - sizes["aliased"]
            if len(_MEMORY_ANALYSES) >= 256:  # a bounded cache: the oldest analysis goes first
                del _MEMORY_ANALYSES[next(iter(_MEMORY_ANALYSES))]
            _MEMORY_ANALYSES[key] = sizes
        return dict(_MEMORY_ANALYSES[key])


_MEMORY_ANALYSES: dict[tuple[Any, ...], dict[str, int]] = {}  # (program digest, options, devices) -> sizes


def _not_addressable(x: Any) -> bool:
    return isinstance(x, jax.Array) and not x.is_fully_addressable


def host_value(x: Any) -> np.ndarray:
    """A numpy copy of an array, also of one spread over several processes: a replicated array is read
    from this process's own copy; a sharded one is gathered (a collective all processes must join)."""
    if not _not_addressable(x):
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def local_copy(tree: Any) -> Any:
    """The tree with every array that spans several processes copied whole onto this process's first
    device (others are returned as they are): what a predictor, which runs on one device of each
    process, needs after a multi-host fit. A collective: every process must call it, in the same order."""
    if jax.process_count() == 1:
        return tree
    device = jax.local_devices()[0]
    return jax.tree.map(lambda x: jax.device_put(host_value(x), device) if _not_addressable(x) else x, tree)


def compile_steps(apply_fn: Callable, loss_fn: step_lib.LossFn, **options: Any) -> CompiledSteps:
    """Train/eval/predict steps for one model: one device by default; `options` as CompiledSteps takes
    them (strategy=make_strategy(...), grad_accum_steps, param_specs, predict_fn, skip_nonfinite)."""
    return CompiledSteps(apply_fn, loss_fn, **options)
