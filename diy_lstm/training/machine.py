"""What a result was measured on: the CPU, its core count and the TensorFlow build.

Training is bit-for-bit repeatable on one machine only (code compiled for one CPU's instruction set
can round differently on another), so runs and benchmarks record this beside their numbers.
"""

from __future__ import annotations

import os
import platform

import tensorflow as tf


def cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux `/proc/cpuinfo`; elsewhere what `platform` knows)."""
    try:
        with open(cpuinfo_path) as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe() -> dict[str, object]:
    """`{"cpu": ..., "cores": ..., "tensorflow": ...}` for this process's machine."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "tensorflow": tf.__version__}
