"""The machine a benchmark ran on: CPU model, vector ISA and core count (benchmarks print it first)."""

from __future__ import annotations

import os
import platform


def describe() -> str:
    """'CPU: <model>; ISA: avx512f, avx2, ...; <n> cores' from /proc/cpuinfo (Linux), else the platform's name."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    isa = [f for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "avx2", "fma") if f in flags]
    return f"CPU: {model}; ISA: {', '.join(isa) or 'unknown'}; {os.cpu_count()} cores"
