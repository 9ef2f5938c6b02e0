"""`flaxtrain.doctor()` / `flaxtrain doctor`: what this machine gives JAX, and the known traps with their fix.

The report: backend, device kinds and counts, memory per device, process count, the versions of the
stack, the XLA flags in effect, whether TensorFlow (for tf.data) imports, the CPU model and ISA, the
peak FLOP/s that MFU is measured against (a table for accelerators, measured on CPU) and the traps
found. Each trap is found by a pure function of the collected facts (`find_traps`), so each is tested
by simulating its condition (tests/test_doctor.py). Nothing here changes the process or its
environment; TensorFlow is imported in a child process only.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from typing import Any

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow", "tensorflow-cpu", "tensorflow-datasets",
            "transformers", "torch", "flaxtrain")
# JAX's accelerator plugins (the jax-* ones carry jaxlib's version).
PLUGIN_PATTERN = re.compile(r"^(jax-cuda\d+-(plugin|pjrt)|jax-rocm\d*-(plugin|pjrt)|libtpu(-nightly)?)$")
ENVIRONMENT = ("JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
               "XLA_PYTHON_CLIENT_ALLOCATOR", "CUDA_VISIBLE_DEVICES", "TPU_VISIBLE_CHIPS", "TF_CPP_MIN_LOG_LEVEL",
               "MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")
TPU_LOCKFILE = "/tmp/libtpu_lockfile"


def doctor(check_tensorflow: bool = True, measure_peak: bool = True) -> dict[str, Any]:
    """The machine's report as a dict: 'backend', 'devices', 'versions', ... and 'traps' (each with
    'name', 'severity' ('error': JAX does not use the machine as meant; 'warning'), 'problem', 'fix')."""
    facts = collect(check_tensorflow=check_tensorflow, measure_peak=measure_peak)
    facts["traps"] = find_traps(facts)
    return facts


def collect(check_tensorflow: bool = True, measure_peak: bool = True) -> dict[str, Any]:
    """The facts the report and the trap detectors read."""
    import jax

    from flaxtrain._xla_flags import compiler_options
    from flaxtrain.allocator import allocator_tuned

    devices = jax.devices()
    kinds: dict[tuple[str, str], dict[str, Any]] = {}
    for device in jax.local_devices():
        entry = kinds.setdefault((device.platform, device.device_kind),
                                 {"platform": device.platform, "kind": device.device_kind, "count": 0,
                                  "memory_bytes": _device_memory()})
        entry["count"] += 1
    facts: dict[str, Any] = {
        "backend": jax.default_backend(),
        "devices": list(kinds.values()),
        "device_count": len(devices),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "process_index": jax.process_index(),
        "versions": _versions(),
        "plugins": _plugins(),
        "backend_errors": _backend_errors(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compiler_options": compiler_options() or {},
        "environment": {name: os.environ[name] for name in ENVIRONMENT if name in os.environ},
        "cpu": cpu_info(),
        "colab": "google.colab" in sys.modules,
        "allocator_tuned": allocator_tuned(),
        "glibc": sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None,
        "tpu_lockfile": os.path.exists(TPU_LOCKFILE),
        "compilation_cache": jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR"),
        "tensorflow": _tensorflow() if check_tensorflow else None,
    }
    if measure_peak:
        from flaxtrain.train.throughput import peak_flops

        facts["peak_flops"] = {"float32": peak_flops("float32"), "bfloat16": peak_flops("bfloat16"),
                               "source": "measured float32 matmul" if facts["backend"] == "cpu" else "table"}
    return facts


def find_traps(facts: dict[str, Any]) -> list[dict[str, str]]:
    """The known traps the facts show, each with its fix."""
    traps = []

    def trap(name: str, severity: str, problem: str, fix: str) -> None:
        traps.append({"name": name, "severity": severity, "problem": problem, "fix": fix})

    backend, plugins, versions = facts["backend"], facts.get("plugins", {}), facts.get("versions", {})
    errors = facts.get("backend_errors", {})
    jaxlib = versions.get("jaxlib")
    for name, version in sorted(plugins.items()):  # libtpu has its own numbering
        if name.startswith("jax-") and jaxlib and version != jaxlib:
            trap("plugin_version", "error", f"{name} {version} does not match jaxlib {jaxlib}: JAX may not load it",
                 f"install matching versions, e.g. pip install -U 'jax[{_extra(name)}]=={jaxlib}'")
    if versions.get("jax") and jaxlib and versions["jax"] != jaxlib:
        trap("jax_version", "warning", f"jax {versions['jax']} runs with jaxlib {jaxlib}",
             f"install one version of both: pip install -U 'jax=={versions['jax']}' 'jaxlib=={versions['jax']}'")
    wants_gpu = any(name.startswith(("jax-cuda", "jax-rocm")) for name in plugins)
    if wants_gpu and backend != "gpu":
        error = _first_line(errors.get("cuda") or errors.get("rocm") or errors.get("gpu") or "no error recorded")
        trap("gpu_not_used", "error", f"a GPU plugin is installed but JAX runs on {backend}: {error}",
             "check `nvidia-smi`, the driver and that the plugin matches jaxlib; JAX_PLATFORMS must not exclude 'cuda'")
    wants_tpu = any(name.startswith("libtpu") for name in plugins)
    if wants_tpu and backend != "tpu":
        error = errors.get("tpu") or ""
        if facts.get("tpu_lockfile") or re.search(r"in use|busy|lock", error, re.IGNORECASE):
            trap("tpu_in_use", "error", f"the TPU is held by another process ({_first_line(error) or TPU_LOCKFILE + ' exists'})",
                 "stop the other process (another notebook kernel or script: `sudo lsof -w /dev/accel*`), "
                 f"or remove {TPU_LOCKFILE} when no process holds it")
        else:
            trap("tpu_not_used", "error", f"libtpu is installed but JAX runs on {backend}: {_first_line(error) or 'no error recorded'}",
                 "run on a TPU VM with a matching libtpu: pip install -U 'jax[tpu]'")
    env = facts.get("environment", {})
    if backend == "gpu" and env.get("XLA_PYTHON_CLIENT_PREALLOCATE", "").lower() not in ("false", "0") \
            and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in env and env.get("XLA_PYTHON_CLIENT_ALLOCATOR") != "platform":
        trap("gpu_preallocation", "warning",
             "JAX reserves 75% of each GPU's memory when it starts: PyTorch or a second JAX process on the same GPU "
             "runs out of memory, and memory use shows as 75% whatever the model needs",
             "set XLA_PYTHON_CLIENT_PREALLOCATE=false (or XLA_PYTHON_CLIENT_MEM_FRACTION=.5) before JAX starts")
    if "XLA_PYTHON_CLIENT_MEM_FRACTION" in env:
        try:
            fraction = float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"])
        except ValueError:
            fraction = -1.0
        if not 0 < fraction <= 1:
            trap("gpu_memory_fraction", "error", f"XLA_PYTHON_CLIENT_MEM_FRACTION={env['XLA_PYTHON_CLIENT_MEM_FRACTION']} "
                 "is not a fraction in (0, 1]", "set it to a number such as .5, or unset it")
    tensorflow = facts.get("tensorflow")
    if tensorflow is not None and not tensorflow.get("imports"):
        where = "Colab's TPU runtime ships without TensorFlow: " if facts.get("colab") else ""
        trap("no_tensorflow", "warning",
             f"TensorFlow does not import ({_first_line(tensorflow.get('error', ''))}): streamed corpora "
             "(lm_from_files), TFDS sets, TensorBoard logs and SavedModel/TFLite export need it; training on "
             "in-memory texts and arrays does not",
             f"{where}pip install tensorflow-cpu (tf.data only needs the CPU build)")
    if backend == "cpu" and facts.get("glibc") and not facts.get("allocator_tuned"):
        trap("cpu_allocator", "warning",
             "glibc hands XLA's large CPU step buffers back to the kernel after every step, which faults them in "
             "again (1.5x slower TextCNN steps, benchmarks/allocator.py)",
             "call flaxtrain.tune_allocator() first thing in the script (the `flaxtrain` command does), or start "
             "Python with MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776")
    return traps


def format_report(report: dict[str, Any]) -> str:
    """The report as the lines `flaxtrain doctor` prints."""
    lines = [f"backend      {report['backend']}, {report['device_count']} device(s) over "
             f"{report['process_count']} process(es) (this is process {report['process_index']})"]
    for entry in report["devices"]:
        memory = f", {entry['memory_bytes'] / 2**30:.1f} GiB available each" if entry.get("memory_bytes") else ""
        lines.append(f"devices      {entry['count']} x {entry['kind']} ({entry['platform']}){memory}")
    cpu = report.get("cpu") or {}
    if cpu:
        lines.append(f"cpu          {cpu.get('model', 'unknown')}, {cpu.get('cores')} cores, ISA {' '.join(cpu.get('isa', [])) or 'unknown'}")
    versions = "  ".join(f"{name} {version}" for name, version in report["versions"].items() if version)
    lines.append(f"versions     {versions}")
    if report.get("plugins"):
        lines.append("plugins      " + "  ".join(f"{name} {version}" for name, version in report["plugins"].items()))
    lines.append(f"XLA_FLAGS    {report['xla_flags'] or '(none)'}")
    if report.get("compiler_options"):
        lines.append(f"flaxtrain's compiler options  {json.dumps(report['compiler_options'])}")
    if report.get("environment"):
        lines.append("environment  " + "  ".join(f"{k}={v}" for k, v in report["environment"].items()))
    tensorflow = report.get("tensorflow")
    if tensorflow is not None:
        lines.append(f"tensorflow   {'imports (' + tensorflow['version'] + ')' if tensorflow['imports'] else 'does not import'}")
    peak = report.get("peak_flops")
    if peak:
        shown = ", ".join(f"{p} {v / 1e12:.3g} TFLOP/s" if v else f"{p} unknown" for p, v in peak.items() if p != "source")
        lines.append(f"MFU peak     {shown} ({peak['source']})")
    lines.append(f"allocator    {'tuned' if report.get('allocator_tuned') else 'glibc defaults'}")
    lines.append(f"compile cache {report.get('compilation_cache') or 'off (flaxtrain train turns it on)'}")
    if not report["traps"]:
        lines.append("traps        none found")
    for trap in report["traps"]:
        lines.append(f"{trap['severity']:<12} {trap['name']}: {trap['problem']}")
        lines.append(f"{'':<12} fix: {trap['fix']}")
    return "\n".join(lines)


def _versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _plugins() -> dict[str, str]:
    found = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if PLUGIN_PATTERN.match(name):
            found[name] = dist.version
    return found


def _backend_errors() -> dict[str, str]:
    try:
        from jax._src import xla_bridge
    except ImportError:
        return {}
    return dict(getattr(xla_bridge, "_backend_errors", {}) or {})


def _tensorflow() -> dict[str, Any]:
    """Whether `import tensorflow` works, tried in a fresh process (a broken install must not break this one, and
    an import here would claim accelerator memory); a process that already imported it has its answer."""
    loaded = sys.modules.get("tensorflow")
    if loaded is not None and getattr(loaded, "__version__", None):
        return {"imports": True, "version": loaded.__version__}
    code = "import tensorflow as tf; print(tf.__version__)"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    except subprocess.TimeoutExpired:
        return {"imports": False, "error": "import tensorflow did not finish in 300 s"}
    if done.returncode == 0:
        return {"imports": True, "version": done.stdout.strip().splitlines()[-1]}
    return {"imports": False, "error": _last_error(done.stderr)}


def _device_memory() -> int | None:
    """What `find_batch_size` counts on per device (flaxtrain/train/batch_size.py), None where unknown."""
    from flaxtrain.errors import FlaxtrainError
    from flaxtrain.train.batch_size import device_memory_limit

    try:
        return device_memory_limit()
    except FlaxtrainError:
        return None


def cpu_info() -> dict[str, Any]:
    """{'model', 'isa' (the vector extensions XLA's CPU code can use), 'cores'} from /proc/cpuinfo (Linux)."""
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(), "isa": [], "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return info
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    if model:
        info["model"] = model.group(1).strip()
    if flags:
        have = set(flags.group(1).split())
        info["isa"] = [isa for isa in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "avx2", "fma") if isa in have]
    return info


def _extra(plugin: str) -> str:
    match = re.match(r"jax-(cuda\d+|rocm\d*)", plugin)
    return match.group(1) if match else "tpu"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _last_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^\w*(Error|Exception)\b", line)]
    return (errors or lines or ["no output"])[-1]
