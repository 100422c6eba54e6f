"""The process settings of ``python -m train.main`` (train/main.py): one XLA CPU device
per core and malloc keeping freed memory, each skipped when the user set their own."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from train import process as train_process

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "cores,batch_size,expected",
    [(2, 8, 2), (4, 6, 3), (8, 16, 8), (3, 16, 2), (16, 4, 4), (2, 7, 1), (1, 8, 1)],
)
def test_one_device_per_core_divides_the_batch(monkeypatch, cores, batch_size, expected):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert train_process.one_cpu_device_per_core(batch_size) == expected
    if expected > 1:
        assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count={expected}"
    else:
        assert "XLA_FLAGS" not in os.environ


def test_users_xla_flags_are_kept(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert train_process.one_cpu_device_per_core(8) == 1
    assert os.environ["XLA_FLAGS"] == ""


# Page faults of re-allocating a freed 64 MB block: glibc serves it from a fresh memory
# map (about 16k faults) unless the settings keep freed memory.
REALLOCATION_FAULTS = textwrap.dedent("""
    import ctypes, ctypes.util, resource
    from train.process import keep_freed_memory

    applied = keep_freed_memory()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 * 2**20
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def reallocation_faults(**env_changes: str) -> tuple[bool, int]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "IFCNN_DEFAULT_MALLOC")
    }
    env.update(env_changes, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run(
        [sys.executable, "-c", REALLOCATION_FAULTS],
        check=False,
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    applied, faults = done.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the allocator settings are for glibc",
)
def test_freed_memory_is_reused_without_page_faults():
    applied, faults = reallocation_faults()
    assert applied and faults < 1000
    for opt_out in ({"IFCNN_DEFAULT_MALLOC": "1"}, {"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": ""}):
        applied, faults = reallocation_faults(**opt_out)
        assert not applied and faults > 10000, opt_out
