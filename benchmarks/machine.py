"""What a benchmark ran on: the CPU model, its vector-instruction flags, the load average.

Timings on a shared machine mean little without these, so every benchmark records them with its
figures. benchmarks/ is a folder of scripts, not a package; a script imports this module as::

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/machine.py, also when loaded by path
    from machine import cpu_model, loadavg  # noqa: E402

(run as ``python3 benchmarks/x.py`` the folder is on ``sys.path`` already; the line is for a test that
loads a script by its path).
"""

from __future__ import annotations

import platform
from pathlib import Path


def _cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` line of /proc/cpuinfo (Linux), or ``None`` where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name, e.g. ``AMD EPYC 9654 96-Core Processor``; off Linux what ``platform`` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> list[str]:
    """The CPU's AVX2 / AVX-512 / AMX flags, sorted (they decide how fast the numeric kernels are)."""
    flags = _cpuinfo_field("flags")
    return sorted(f for f in set(flags.split()) if f.startswith(("avx512f", "avx2", "amx"))) if flags else []


def loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages (Linux), or ``None`` where /proc is not there."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None
