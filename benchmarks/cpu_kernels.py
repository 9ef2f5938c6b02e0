"""Native CPU kernels through `jax.ffi` against XLA's own code (issue 20, routes 2 and 3), A/B in one process.

Run:  .venv/bin/python benchmarks/cpu_kernels.py [--rounds 5] [--lengths 128 256] [--skip-step]

Builds benchmarks/kernels/cpu_attention.cc and dense_grads.cc with the C++ compiler on PATH against
`jax.ffi.include_dir()` (into a temporary folder), hands them the sgemm of the BLAS scipy ships, and checks
and times:
  1. attention (route 2): the FFI kernel against `flaxtrain.ops.dot_product_attention(implementation='xla')`
     — values and q/k/v gradients with key-padding and packed-segment masks at odd sizes (within 1e-5), then
     the op alone (forward; forward + backward) at MiniLM's 32 x L x 12 heads x 32;
  2. the dense-layer GEMMs (route 3) on the step's shapes: XLA's dot against sgemm with transpose flags;
  3. the MiniLM-size train step (6 layers, width 384, 12 heads, dropout 0.1, AdamW, 2-class head, batch 32,
     padded tails) and its forward, compiled four times in this process — as flaxtrain builds it; with the
     attention kernel; with the weight gradients of the flax Dense/DenseGeneral layers (attention output,
     MLP) computed as x^T dy by sgemm reading x in place (XLA otherwise copies x into a transposed buffer
     first); with both — and timed interleaved (medians of `--rounds`).
The kernels are not part of the library: this script measures whether they would be worth building.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from flaxtrain import ops  # noqa: E402
from flaxtrain._xla_flags import compiler_options  # noqa: E402

KERNELS = Path(__file__).resolve().parent / "kernels"


def _sgemm_address() -> int:
    """The address of scipy's BLAS sgemm (the PyCapsule scipy.linalg.cython_blas exports)."""
    from scipy.linalg import cython_blas

    capsule = cython_blas.__pyx_capi__["sgemm"]
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype, api.PyCapsule_GetName.argtypes = ctypes.c_char_p, [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))


def build(out: Path) -> dict[str, ctypes.CDLL]:
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        sys.exit("no C++ compiler on PATH: the kernels cannot be built here")
    libs = {}
    for name in ("cpu_attention", "dense_grads"):
        target = out / f"lib{name}.so"
        subprocess.run([compiler, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w",
                        f"-I{jax.ffi.include_dir()}", str(KERNELS / f"{name}.cc"), "-o", str(target)], check=True)
        libs[name] = ctypes.cdll.LoadLibrary(str(target))
    sgemm = ctypes.c_void_p(_sgemm_address())
    libs["cpu_attention"].flaxtrain_attention_set_sgemm(sgemm)
    libs["dense_grads"].flaxtrain_dense_set_sgemm(sgemm)
    for symbol, target in (("FlaxtrainAttentionFwd", "attention_fwd"), ("FlaxtrainAttentionBwd", "attention_bwd")):
        jax.ffi.register_ffi_target(f"flaxtrain_{target}", jax.ffi.pycapsule(getattr(libs["cpu_attention"], symbol)),
                                    platform="cpu")
    for symbol, target in (("FlaxtrainDenseForward", "dense_forward"), ("FlaxtrainDenseInputGrad", "dense_input_grad"),
                           ("FlaxtrainDenseWeightGrad", "dense_weight_grad")):
        jax.ffi.register_ffi_target(f"flaxtrain_{target}", jax.ffi.pycapsule(getattr(libs["dense_grads"], symbol)),
                                    platform="cpu")
    return libs


def _attention_forward(q, k, v, mask, scale):
    b, t, h, _ = q.shape
    shapes = (jax.ShapeDtypeStruct(q.shape, jnp.float32), jax.ShapeDtypeStruct((b, h, t, k.shape[1]), jnp.float32))
    return jax.ffi.ffi_call("flaxtrain_attention_fwd", shapes)(q, k, v, mask, scale=np.float32(scale))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def kernel_attention(q, k, v, mask, scale):
    """softmax(scale q k^T, masked) v by the FFI kernel; mask [b, 1 | t, s] boolean."""
    return _attention_forward(q, k, v, mask, scale)[0]


def _kernel_attention_fwd(q, k, v, mask, scale):
    out, probs = _attention_forward(q, k, v, mask, scale)
    return out, (q, k, v, mask, probs)


def _kernel_attention_bwd(scale, residuals, d_out):
    q, k, v, mask, probs = residuals
    shapes = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v))
    dq, dk, dv = jax.ffi.ffi_call("flaxtrain_attention_bwd", shapes)(q, k, v, mask, probs, d_out, scale=np.float32(scale))
    return dq, dk, dv, None


kernel_attention.defvjp(_kernel_attention_fwd, _kernel_attention_bwd)


def attention_with_kernel(query, key, value, *, mask=None, bias=None, scale=None, implementation="xla"):
    """`ops.dot_product_attention` for float32 inputs with a [b, 1, t | 1, s] mask, through the kernel."""
    if bias is not None or query.dtype != jnp.float32:
        return ops.attention.dot_product_attention(query, key, value, mask=mask, bias=bias, scale=scale,
                                                   implementation=implementation)
    b, s = query.shape[0], key.shape[1]
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    mask = jnp.ones((b, 1, s), bool) if mask is None else jnp.broadcast_to(mask, (b, 1, *mask.shape[2:]))[:, 0]
    return kernel_attention(query, key, value, mask, scale)


def _weight_grad(x, dy):
    return jax.ffi.ffi_call("flaxtrain_dense_weight_grad", jax.ShapeDtypeStruct((x.shape[1], dy.shape[1]), jnp.float32))(x, dy)


@jax.custom_vjp
def sgemm_weight_grad_matmul(x, w):
    """x [n, k] @ w [k, m] by XLA; in the backward pass dx = dy w^T by XLA, dw = x^T dy by sgemm (transa)."""
    return x @ w


sgemm_weight_grad_matmul.defvjp(lambda x, w: (x @ w, (x, w)), lambda res, dy: (dy @ res[1].T, _weight_grad(res[0], dy)))


class _LaxWithSgemmWeightGrads:
    """`jax.lax` for flax.linen.linear (Dense, DenseGeneral): float32 contractions of the input's trailing axes
    with the kernel's leading axes go through `sgemm_weight_grad_matmul`; everything else is jax.lax."""

    def __getattr__(self, name):
        return getattr(jax.lax, name)

    @staticmethod
    def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
        (lhs_contract, rhs_contract), batch = dimension_numbers
        n = len(lhs_contract)
        if (any(batch) or lhs.dtype != jnp.float32 or rhs.dtype != jnp.float32
                or tuple(lhs_contract) != tuple(range(lhs.ndim - n, lhs.ndim)) or tuple(rhs_contract) != tuple(range(n))):
            return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                       preferred_element_type=preferred_element_type)
        inner = int(np.prod(lhs.shape[lhs.ndim - n:]))
        out = sgemm_weight_grad_matmul(lhs.reshape(-1, inner), rhs.reshape(inner, -1))
        return out.reshape(lhs.shape[:lhs.ndim - n] + rhs.shape[n:])


def _best_ms(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def check_attention_parity() -> float:
    rng = np.random.default_rng(0)
    worst = 0.0
    for b, t, h, d in ((2, 7, 3, 5), (3, 33, 4, 16)):
        q, k, v, w = (jnp.asarray(rng.standard_normal((b, t, h, d)), jnp.float32) for _ in range(4))
        valid = jnp.asarray(np.arange(t)[None] < np.array([t, 3, 1][:b])[:, None])
        segments = jnp.where(valid, jnp.asarray(rng.integers(1, 3, (b, t))), 0)
        for mask in (ops.make_key_padding_mask(valid, t), ops.make_segment_mask(segments)):
            ref = functools.partial(ops.dot_product_attention, mask=mask, implementation="xla")
            new = functools.partial(attention_with_kernel, mask=mask)
            outs = [jax.jit(f)(q, k, v) for f in (ref, new)]
            grads = [jax.jit(jax.grad(lambda *a, f=f: jnp.sum(f(*a) * w), argnums=(0, 1, 2)))(q, k, v) for f in (ref, new)]
            diffs = [jnp.max(jnp.abs(outs[0] - outs[1]))] + [jnp.max(jnp.abs(x - y)) for x, y in zip(*grads)]
            worst = max(worst, *map(float, diffs))
    assert worst < 1e-5, worst
    return worst


def check_dense_parity() -> float:
    """Gradients of a Dense and a DenseGeneral (contracting two axes) with the sgemm weight gradient."""
    import flax.linen as nn
    import flax.linen.linear

    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((3, 17, 4, 6)), jnp.float32)
    modules = (nn.Dense(13), nn.DenseGeneral(11, axis=(-2, -1)))
    worst, original = 0.0, flax.linen.linear.lax
    for module in modules:
        params = module.init(jax.random.key(0), x)
        loss = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(module.apply(p, x))), argnums=(0, 1)))
        reference = loss(params, x)
        try:
            flax.linen.linear.lax = _LaxWithSgemmWeightGrads()
            new = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(module.apply(p, x))), argnums=(0, 1)))(params, x)
        finally:
            flax.linen.linear.lax = original
        worst = max(worst, *(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(new))))
    assert worst < 1e-5, worst
    return worst


def attention_op(length: int) -> None:
    rng = np.random.default_rng(1)
    b, h, d = 32, 12, 32
    q, k, v, w = (jnp.asarray(rng.standard_normal((b, length, h, d)), jnp.float32) for _ in range(4))
    valid = jnp.asarray(np.arange(length)[None] < rng.integers(length // 2, length + 1, b)[:, None])
    mask = ops.make_key_padding_mask(valid, length)
    for name, fn in (("xla", functools.partial(ops.dot_product_attention, mask=mask, implementation="xla")),
                     ("kernel", functools.partial(attention_with_kernel, mask=mask))):
        forward = jax.jit(fn, compiler_options=compiler_options())
        grad = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) * w), argnums=(0, 1, 2)), compiler_options=compiler_options())
        t_forward = _best_ms(lambda: forward(q, k, v).block_until_ready())
        t_grad = _best_ms(lambda: jax.block_until_ready(grad(q, k, v)))
        print(f"  attention alone, 32 x {length}, {name:6s}: forward {t_forward:6.1f} ms   forward + backward {t_grad:6.1f} ms")


def train_step(length: int, rounds: int, peak: float) -> None:
    from flaxtrain import models
    from flaxtrain.models.encoder import EncoderConfig
    from flaxtrain.tasks.classification import classification_loss, predict_log_probs
    from flaxtrain.train import compile_steps, create_train_state, init_params, make_optimizer

    sizes = dict(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12, mlp_dim=1536)
    module = models.build_model("transformer", models.HeadConfig(EncoderConfig(**sizes, dropout_rate=0.1, attention="xla"),
                                                                 num_classes=2))
    params = init_params(module, {"input_ids": jnp.zeros((1, 16), jnp.int32)}, jax.random.key(0))
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, sizes["vocab_size"], size=(32, length)).astype(np.int32)
    ids[:, 0] = 101
    ids[np.arange(length)[None, :] >= rng.integers(length // 2, length + 1, 32)[:, None]] = 0
    batch = {"input_ids": jnp.asarray(ids), "label": jnp.asarray(rng.integers(0, 2, 32).astype(np.int32)),
             "weight": jnp.ones(32, jnp.float32)}
    key, tx = jax.random.key(0), make_optimizer(5e-5, weight_decay=0.01)

    def fresh_state():
        return create_train_state(module, jax.tree.map(jnp.copy, params), tx)

    import flax.linen.linear

    held, original_attention, original_lax = {}, ops.dot_product_attention, flax.linen.linear.lax
    variants = {"xla": (False, False), "attention": (True, False), "dw sgemm": (False, True), "both": (True, True)}
    try:
        for name, (attention, gemm) in variants.items():  # the layers look both up when they are traced
            ops.dot_product_attention = attention_with_kernel if attention else original_attention
            flax.linen.linear.lax = _LaxWithSgemmWeightGrads() if gemm else original_lax
            steps = compile_steps(module.apply, classification_loss, predict_fn=predict_log_probs)
            start = time.perf_counter()
            train = steps._jitted["train"].lower(fresh_state(), batch, key).compile()
            predict = steps._jitted["predict"].lower(params, batch).compile()
            held[name] = [train, predict, fresh_state(), time.perf_counter() - start]
    finally:
        ops.dot_product_attention, flax.linen.linear.lax = original_attention, original_lax
    first = {name: h[0](fresh_state(), batch, key)[1] for name, h in held.items()}
    reference = held["xla"][1](params, batch)
    loss_diff = max(abs(float(first["xla"]["loss_sum"]) - float(f["loss_sum"])) for f in first.values())
    prob_diff = max(float(jnp.max(jnp.abs(reference - h[1](params, batch)))) for h in held.values())
    times: dict[str, list[float]] = {f"{n} {k}": [] for n in held for k in ("train", "forward")}
    for _ in range(rounds):
        for name, h in held.items():
            start = time.perf_counter()
            for _ in range(3):
                h[2], out = h[0](h[2], batch, key)
            jax.block_until_ready(out)
            times[f"{name} train"].append((time.perf_counter() - start) / 3)
            start = time.perf_counter()
            for _ in range(3):
                out = h[1](h[2].params, batch)
            jax.block_until_ready(out)
            times[f"{name} forward"].append((time.perf_counter() - start) / 3)
    m, f, layers = 384, 1536, 6
    forward_flop = 32 * length * layers * (2 * (4 * m * m + 2 * m * f) + 4 * length * m)
    print(f"  train step 32 x {length}: first-step loss differs by at most {loss_diff:.1e}, log-probs by {prob_diff:.1e}; "
          "compile (train + forward) " + ", ".join(f"{n} {h[3]:.1f} s" for n, h in held.items()))
    for name, values in times.items():
        kind = name.rsplit(" ", 1)[1]
        flop = forward_flop * (3 if kind == "train" else 1)
        speed = statistics.median(times[f"xla {kind}"]) / statistics.median(values)
        print(f"    {name:18s} median {1000 * statistics.median(values):7.1f} ms  min {1000 * min(values):7.1f} ms"
              f"   {100 * flop / statistics.median(values) / 1e9 / peak:4.1f}% of the XLA peak   {speed:.3f}x xla")


def dense_gemms(tokens: int = 4096) -> None:
    rng = np.random.default_rng(2)
    opts = compiler_options()
    for k, m in ((384, 384), (384, 1536), (1536, 384)):
        x, w, dy = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((tokens, k), (k, m), (tokens, m)))
        gflop = 2 * tokens * k * m / 1e9
        cases = (("y = x w", lambda a, b: a @ b, "dense_forward", (x, w), (tokens, m)),
                 ("dx = dy w^T", lambda g, b: g @ b.T, "dense_input_grad", (dy, w), (tokens, k)),
                 ("dw = x^T dy", lambda a, g: a.T @ g, "dense_weight_grad", (x, dy), (k, m)))
        for label, xla_fn, target, args, shape in cases:
            xla = jax.jit(xla_fn, compiler_options=opts)
            blas = jax.jit(jax.ffi.ffi_call(f"flaxtrain_{target}", jax.ShapeDtypeStruct(shape, jnp.float32)))
            diff = float(jnp.max(jnp.abs(xla(*args) - blas(*args))) / jnp.max(jnp.abs(xla(*args))))
            t_xla = _best_ms(lambda: xla(*args).block_until_ready())
            t_blas = _best_ms(lambda: blas(*args).block_until_ready())
            print(f"  [{tokens}, {k}] x [{k}, {m}] {label:12s}: XLA {gflop / t_xla * 1000:6.1f} GFLOP/s, "
                  f"sgemm {gflop / t_blas * 1000:6.1f} GFLOP/s (relative difference {diff:.0e})")


def matmul_peak() -> float:
    a = jnp.asarray(np.random.default_rng(3).standard_normal((2048, 2048)), jnp.float32)
    f = jax.jit(lambda x: x @ x, compiler_options=compiler_options())
    return 2 * 2048**3 / 1e9 / (_best_ms(lambda: f(a).block_until_ready()) / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--skip-step", action="store_true", help="only the parity check, the op and the GEMMs")
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory(prefix="flaxtrain-kernels-") as tmp:
        build(Path(tmp))
        peak = matmul_peak()
        print(f"XLA float32 matmul peak {peak:.0f} GFLOP/s (2048 x 2048)")
        print(f"attention kernel parity against ops.dot_product_attention: max difference {check_attention_parity():.1e}")
        print(f"Dense/DenseGeneral gradients with the sgemm weight gradient: max difference {check_dense_parity():.1e}")
        for length in args.lengths:
            attention_op(length)
        dense_gemms()
        if not args.skip_step:
            for length in args.lengths:
                train_step(length, args.rounds, peak)


if __name__ == "__main__":
    main()
