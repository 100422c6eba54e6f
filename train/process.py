"""Settings of the training process made before JAX starts.

CPU devices: a single-process run on CPUs (``XLA_FLAGS`` unset) gives XLA one CPU device
per core (``--xla_force_host_platform_device_count``, as many as divide
``config.batch_size``), so that the train step runs data-parallel over the cores like
over any other devices (same results up to float rounding: BatchNorm still uses the
statistics of the global batch). Measured on 2 cores: 0.42 s per step of the default
config instead of 0.47-0.62 s with one device whose operations are split between the
cores (bench/NOTES.md). Set ``XLA_FLAGS`` (even empty) to keep XLA's default.

Memory allocator: on Linux with glibc, this program asks malloc (through ``mallopt``)
to serve every thread from one arena, never to map large blocks separately and to keep
freed memory instead of returning it to the system. XLA allocates the train step's
working memory (about 0.5 GB for the default config) afresh at every step; served by
fresh memory maps, it was page-faulted in again each time, about a quarter of the
step's CPU time on two cores (bench/NOTES.md). The process keeps its peak memory
instead. It is skipped when the environment sets ``GLIBC_TUNABLES`` or any
``MALLOC_*`` variable (the user's own malloc settings) or ``IFCNN_DEFAULT_MALLOC=1``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> bool:
    """Applies the allocator settings of the module docstring to this process; returns
    whether they were applied. Call it before JAX starts its threads."""
    if (
        os.environ.get("IFCNN_DEFAULT_MALLOC") == "1"
        or "GLIBC_TUNABLES" in os.environ
        or any(name.startswith("MALLOC_") for name in os.environ)
    ):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)


def one_cpu_device_per_core(batch_size: int) -> int:
    """Sets ``XLA_FLAGS`` to give this process one CPU device per core (the largest count
    up to the number of usable cores that divides ``batch_size``), unless ``XLA_FLAGS``
    is already set; returns the device count chosen (1: nothing set). Call it before JAX
    starts; it only affects CPU devices."""
    if "XLA_FLAGS" in os.environ:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    count = max(d for d in range(1, max(1, min(cores, batch_size)) + 1) if batch_size % d == 0)
    if count > 1:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count}"
    return count
