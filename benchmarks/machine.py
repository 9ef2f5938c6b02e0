"""The machine a benchmark ran on: CPU model, vector ISA and core count (benchmarks print it first)."""

from __future__ import annotations

from flaxtrain.machine import cpu_info


def describe() -> str:
    """'CPU: <model>; ISA: avx512f, avx2, ...; <n> cores' (flaxtrain.machine.cpu_info: /proc/cpuinfo on Linux)."""
    info = cpu_info()
    return f"CPU: {info['model']}; ISA: {', '.join(info['isa']) or 'unknown'}; {info['cores']} cores"
