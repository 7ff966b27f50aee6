"""What benchmarks need of the machine they run on: the description every one prints (CPUs differ between
machines, AVX-512 with bf16 and AMX on some, AVX2 only on others, and the numbers with them), and free ports
for the servers they start."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8")
"""The instruction-set extensions that change CPU matmul speed."""


def cpu_description() -> str:
    """e.g. "Intel Xeon ..., 2 cores (avx2 avx512f avx512_bf16), Linux 6.1"."""
    name, flags = platform.processor() or platform.machine() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = [f for f in FLAGS if f in flags]
    return f"{name}, {os.cpu_count()} cores ({' '.join(wanted) or 'no AVX2'}), {platform.system()} {platform.release()}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
