"""LoRA (Hu et al. 2021): low-rank updates W + (alpha / r) A B on named kernels of any flaxtrain network.

The adapters live beside the network's own params, under params['lora'] at the kernel's module path
({'lora': {'encoder': {'layer_0': {'attention': {'query': {'a': [m, r], 'b': [r, h, d]}}}}}}), and
`LoraModule.apply` adds each product to its kernel before the network runs. Merging the update into
the weight, rather than intercepting the layer's matmul, is what lets one mechanism cover every
kernel layout here: the fused query/key/value projection reads its three kernels as params and runs
them as one einsum, so there is no per-projection matmul to wrap, and a [m, h, d] or [h, d, m] kernel
takes its update as one tensordot. The cost is an [in, r] x [r, out] product per adapted kernel per
step, small beside the activations; the function is the same as PEFT's at lora_dropout 0.

A = kernel's input axes + [r] (PEFT's Kaiming-uniform start), B = [r] + its output axes (zeros, so a
new adapter changes nothing); both carry the kernel's logical axis names on their kernel axes, so
adapters shard as their kernels do under every strategy.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from flaxtrain.layers import axes

LORA = "lora"  # the top-level params key of the adapters
LORA_RANK = "lora_rank"  # logical axis of the rank (no mesh rule: never sharded)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Which kernels get adapters and how large.

    Attributes:
      rank: r, the adapters' inner width.
      alpha: the update is scaled by alpha / r (PEFT's lora_alpha).
      targets: module paths ('encoder/layer_0/attention/query') of the adapted kernels, resolved.
      input_axes: per target, how many leading kernel axes are its input ([m, h, d]: 1; [h, d, m]: 2;
        [width, in, out] convolutions: 2).
    """

    rank: int
    alpha: float
    targets: tuple[str, ...]
    input_axes: tuple[int, ...]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets), "input_axes": list(self.input_axes)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LoraConfig:
        return cls(int(values["rank"]), float(values["alpha"]), tuple(values["targets"]), tuple(values["input_axes"]))


def kernel_paths(boxed_params: Any) -> dict[str, tuple[tuple[int, ...], tuple[Any, ...] | None]]:
    """{module path: (kernel shape, logical axis names or None)} of every kernel of rank 2 or more."""
    out = {}
    flat = traverse_util.flatten_dict(boxed_params, sep="/")
    for path, leaf in flat.items():
        if not path.endswith("/kernel") or path.startswith(LORA + "/"):
            continue
        names = tuple(leaf.names) if isinstance(leaf, nn.Partitioned) else None
        shape = tuple(nn.meta.unbox(leaf).shape)
        if len(shape) >= 2:
            out[path[: -len("/kernel")]] = (shape, names)
    return out


def match_targets(modules: Sequence[str], targets: str | Sequence[str]) -> list[str]:
    """The module paths `targets` selects, as PEFT's target_modules does: a string is a regular
    expression that must match a whole path; a list of names matches a path equal to a name or
    ending in '/' + name ('query' matches 'encoder/layer_3/attention/query')."""
    if isinstance(targets, str):
        pattern = re.compile(targets)
        return [m for m in modules if pattern.fullmatch(m)]
    names = [t.strip("/") for t in targets]
    return [m for m in modules if any(m == t or m.endswith("/" + t) for t in names)]


def input_axes(shape: tuple[int, ...], names: tuple[Any, ...] | None) -> int:
    """Leading kernel axes that are the layer's input: all but the output features, which are the last
    axis ([in, out] dense, [width, in, out] convolution, [h, d, m] attention output) or the last two for
    a projection into heads ([m, h, d])."""
    if len(shape) >= 3 and names is not None and tuple(names[-2:]) == (axes.HEADS, axes.HEAD_DIM):
        return len(shape) - 2
    return len(shape) - 1


def init_adapters(kernels: Mapping[str, tuple[tuple[int, ...], Any]], config: LoraConfig, key: jax.Array) -> dict[str, Any]:
    """Boxed adapter params for `config`'s targets: A Kaiming-uniform (bound 1/sqrt(fan in), as PEFT's
    kaiming_uniform_(a=sqrt(5)) gives), B zeros."""
    flat: dict[tuple[str, ...], Any] = {}
    for i, (target, n_in) in enumerate(zip(config.targets, config.input_axes)):
        shape, names = kernels[target]
        fan_in = math.prod(shape[:n_in])
        bound = 1.0 / math.sqrt(fan_in)
        a = jax.random.uniform(jax.random.fold_in(key, i), (*shape[:n_in], config.rank), jnp.float32, -bound, bound)
        b = jnp.zeros((config.rank, *shape[n_in:]), jnp.float32)
        names = names or (None,) * len(shape)
        path = tuple(target.split("/"))
        flat[path + ("a",)] = nn.Partitioned(a, names=(*names[:n_in], LORA_RANK))
        flat[path + ("b",)] = nn.Partitioned(b, names=(LORA_RANK, *names[n_in:]))
    return traverse_util.unflatten_dict(flat)


def delta(a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """The kernel update scale * A B, in the kernel's own shape (input axes + output axes)."""
    return scale * jnp.tensordot(a, b, axes=1)


def merge(params: Mapping[str, Any], config: LoraConfig) -> dict[str, Any]:
    """The network's params with every adapter added to its kernel, 'lora' removed."""
    adapters = params[LORA]
    flat = traverse_util.flatten_dict({k: v for k, v in params.items() if k != LORA})
    for target in config.targets:
        path = tuple(target.split("/"))
        pair = adapters
        for key in path:
            pair = pair[key]
        kernel = flat[path + ("kernel",)]
        flat[path + ("kernel",)] = kernel + delta(pair["a"], pair["b"], config.scale).astype(kernel.dtype)
    return traverse_util.unflatten_dict(flat)


class LoraModule:
    """A linen network with LoRA adapters: `init` adds params['lora'], `apply` merges them first.

    It stands where the network's module stands (train steps, predictors, decoding and export call
    `apply`, with any `method=`); other attributes are the network's.
    """

    def __init__(self, base: nn.Module, config: LoraConfig):
        self.base = base
        self.config = config

    def init(self, rngs: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        variables = dict(self.base.init(rngs, *args, **kwargs))
        key = rngs["params"] if isinstance(rngs, Mapping) else rngs
        params = dict(variables["params"])
        params[LORA] = init_adapters(kernel_paths(params), self.config, jax.random.fold_in(key, 0x10A))
        variables["params"] = params
        return variables

    def apply(self, variables: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        return self.base.apply({**variables, "params": merge(variables["params"], self.config)}, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)
