"""Compiled fusion programs kept on disk, so that a repeated ``ifcnn-fuse`` neither
traces nor compiles, and on CPU does not even import JAX.

The first untiled fusion of a window shape compiles :func:`ifcnn_jax.network.fuse_window`
ahead of time (``jax.jit(...).lower(...).compile()``), serializes the executable
(``Client.serialize_executable``, the format of ``jax.experimental.serialize_executable``)
and writes it to ``<compilation cache>/ifcnn-aot/<key>.xla``. A later call with the
same key loads that file and runs it. The weights are arguments of the program, not
constants in it, so one file serves every model of a fusion rule.

Nothing read from the cache is trusted blindly. The key is the SHA-256 of everything
the compiled code depends on: the program's source (``network.py``, ``tiling.py`` and
this module), the versions of jax and jaxlib, the CPU (model and instruction-set flags),
``XLA_FLAGS``, the window shape and dtype, the fusion rule, the method and block
settings. A file records that
key in full and the SHA-256 of the executable; it is used only when both match, and
only its output of the expected shape and type is taken. Anything else (a missing,
truncated, corrupted or foreign file, a failure to load or run it) falls back to
compiling, silently; a failure there falls back to the normal path
(:func:`ifcnn_jax.inference.forward`). A freshly compiled program is stored only after
it has been loaded back from its serialized form and has run (its output is the result).
One that JAX took from its own persistent cache does not load back whole; it is compiled
once more without that cache (and with JAX's in-memory caches cleared).
With the cache off (``set_cache_dir(None)``, the default for the library) this module
does nothing and writes nothing. The checksum
detects damage, not tampering: loading an executable runs its code, so a file is loaded
only when it and its folder belong to the user and no one else may write them (POSIX).

Served: a :class:`~ifcnn_jax.folded.FoldedIFCNN`, untiled fusions (``tile`` None below
the automatic threshold, or 0), on the CPU. A cache hit imports ``jaxlib`` only: it
builds its own CPU client and moves arrays with jaxlib's ``batched_device_put`` and
result handlers. Those are jaxlib internals (jaxlib 0.10); the jaxlib version is part
of the key, and any error on that path falls back as above. When JAX is already
imported, JAX's own CPU client and ``device_put`` are used instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import stat
import sys
from pathlib import Path

import numpy as np

from ifcnn_jax.folded import WEIGHT_NAMES, FoldedIFCNN

AOT_DIR = "ifcnn-aot"
FORMAT = 1
MAGIC = b"IFCNN-AOT\n"
# inference.AUTO_TILE_PIXELS and network._BLOCK/_PER_ITEM["matmul"] (not imported:
# both import JAX); a test checks they agree.
AUTO_TILE_PIXELS = 4096 * 4096
HALO = 5
MATMUL_BLOCK = (64, 128)
MATMUL_PER_ITEM = True

_state: dict = {"dir": None, "runtime": None, "digests": {}}


def set_cache_dir(folder: str | os.PathLike | None) -> None:
    """Where compiled programs are kept: ``folder / "ifcnn-aot"``; None turns it off.
    ``ifcnn-fuse`` passes its compilation-cache folder (``--compilation-cache``)."""
    _state["dir"] = None if folder is None else Path(folder) / AOT_DIR


def cache_dir() -> Path | None:
    """The folder of the compiled programs, or None when off."""
    return _state["dir"]


# ------------------------------------------------------------------------ the key


def _file_digest(name: str) -> str:
    """SHA-256 of a module's source file, found without importing it."""
    digests = _state["digests"]
    if name not in digests:
        spec = importlib.util.find_spec(name)
        digests[name] = hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()
    return digests[name]


def _versions() -> dict:
    """The versions of jax and jaxlib, without importing jax or scanning the installed
    distributions (``importlib.metadata`` took 0.1 s): jaxlib's ``version`` module, and
    the digest of jax's ``version.py`` read from its folder."""
    from jaxlib.version import __version__ as jaxlib_version  # noqa: PLC0415 - lazy: only the key needs it

    spec = importlib.util.find_spec("jax")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return {
        "jax": hashlib.sha256((folder / "version.py").read_bytes()).hexdigest(),
        "jaxlib": jaxlib_version,
    }


def _cpu() -> str:
    """The CPU the code is compiled for: model name and instruction-set flags."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                name = name.strip()
                if name in ("vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU part"):
                    fields.setdefault(name, value.strip())
                if not line.strip() and fields:
                    break  # the first processor's block is enough
    except OSError:
        pass
    text = json.dumps([platform.machine(), sorted(fields.items())])
    return hashlib.sha256(text.encode()).hexdigest()


def program_key(window_shape: tuple[int, ...], rule: str) -> dict:
    """Everything the compiled program depends on (see the module docstring)."""
    return {
        "format": FORMAT,
        "program": [_file_digest(f"ifcnn_jax.{name}") for name in ("network", "tiling", "aot")],
        **_versions(),
        "platform": "cpu",
        "cpu": _cpu(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "window": [int(d) for d in window_shape],
        "dtype": "float32",
        "weights": [[name, list(_WEIGHT_SHAPES[name])] for name in WEIGHT_NAMES],
        "rule": rule,
        "method": "matmul",
        "block": list(MATMUL_BLOCK),
        "per_item": MATMUL_PER_ITEM,
    }


_WEIGHT_SHAPES = {
    "bias2": (64,),
    "bias3": (64,),
    "bias4": (3,),
    "conv1": (7, 7, 3, 64),
    "conv2": (3, 3, 64, 64),
    "conv3": (3, 3, 64, 64),
    "conv4": (64, 3),
}


def _canonical(key: dict) -> bytes:
    return json.dumps(key, sort_keys=True, separators=(",", ":")).encode()


def entry_path(key: dict) -> Path | None:
    folder = cache_dir()
    if folder is None:
        return None
    return folder / f"{hashlib.sha256(_canonical(key)).hexdigest()[:40]}.xla"


# ------------------------------------------------------------------------ the file


def pack(key: dict, executable: bytes) -> bytes:
    """The cache file: magic, key length, key (JSON), SHA-256 of the executable, executable."""
    meta = _canonical(key)
    return MAGIC + len(meta).to_bytes(8, "little") + meta + hashlib.sha256(executable).digest() + executable


def unpack(data: bytes, key: dict) -> bytes | None:
    """The executable stored in ``data`` if the file is well formed, records exactly
    ``key`` and its executable has the recorded SHA-256; else None."""
    if not data.startswith(MAGIC):
        return None
    offset = len(MAGIC)
    size = int.from_bytes(data[offset : offset + 8], "little")
    offset += 8
    if size > len(data) - offset - 32:
        return None
    if data[offset : offset + size] != _canonical(key):
        return None
    offset += size
    digest, executable = data[offset : offset + 32], data[offset + 32 :]
    if not executable or hashlib.sha256(executable).digest() != digest:
        return None
    return executable


def _only_user_can_write(path: Path) -> bool:
    """Whether ``path`` and its folder belong to this user and no one else may write
    them (POSIX). Loading an executable runs its code, so a file that another user
    could have put or changed is not loaded; elsewhere (Windows) this is not checked."""
    if not hasattr(os, "getuid"):
        return True
    for item in (path, path.parent):
        info = item.stat()
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def _read(path: Path, key: dict) -> bytes | None:
    try:
        if not _only_user_can_write(path):
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return unpack(data, key)


def _write(path: Path, key: dict, executable: bytes) -> None:
    from ifcnn_jax.io.atomic import write_bytes_atomic  # noqa: PLC0415 - lazy: only a miss writes

    try:
        write_bytes_atomic(path, pack(key, executable))
    except Exception:  # noqa: BLE001 - a cache that cannot be written is no error
        pass


# ------------------------------------------------------------------------ running


class _JaxlibRuntime:
    """A CPU client of jaxlib's own, without importing JAX (see the module docstring)."""

    def __init__(self):
        # A client made without JAX logs its devices at INFO level on stderr, which JAX's
        # own start-up keeps quiet; warnings still show (a user's own setting wins).
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        from jaxlib import _jax, xla_client  # noqa: PLC0415 - lazy: only a cache hit needs them

        self._jax, self._xc = _jax, xla_client
        self.client = xla_client.make_cpu_client()
        self.device = self.client.local_devices()[0]
        sharding_type = _jax.SingleDeviceSharding
        if not hasattr(sharding_type, "_to_xla_hlo_sharding"):
            # What JAX's SingleDeviceSharding adds to this class on import; a single
            # device holds the whole array (replicated). JAX replaces it when imported.
            sharding_type._to_xla_hlo_sharding = lambda self, num_dimensions: (
                xla_client.HloSharding.replicate()
            )
        self.sharding = sharding_type(self.device)

    def load(self, executable: bytes):
        return self.client.deserialize_executable(
            executable, executable_devices=self._xc.DeviceList((self.device,))
        )

    def run(self, loaded, args: list[np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
        put = self._jax.batched_device_put
        zero_copy = self._jax.HostBufferSemantics.ZERO_COPY
        args = [np.ascontiguousarray(a) for a in args]
        buffers = [
            put(_Aval(a.shape, a.dtype), self.sharding, [a], [self.device], True, False, zero_copy, False)
            for a in args
        ]
        results = loaded.execute_sharded(buffers)
        handler = self._jax.array_result_handler(
            _Aval(out_shape, np.dtype(np.float32)), self.sharding, True, _skip_checks=True
        )
        (out,) = results.consume_with_handlers([handler])
        return np.asarray(out)


class _Aval:
    """The shape and dtype jaxlib asks of an array's abstract value."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype, self.weak_type = tuple(shape), np.dtype(dtype), False


class _JaxRuntime:
    """JAX's own CPU client (when JAX is imported already)."""

    def __init__(self):
        import jax  # noqa: PLC0415 - already imported when chosen
        from jax._src.lib import xla_client  # noqa: PLC0415 - the DeviceList of that jaxlib

        self._jax, self._xc = jax, xla_client
        self.device = jax.devices("cpu")[0]
        self.client = self.device.client

    def load(self, executable: bytes):
        return self.client.deserialize_executable(
            executable, executable_devices=self._xc.DeviceList((self.device,))
        )

    def run(self, loaded, args: list[np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
        buffers = [self._jax.device_put(a, self.device) for a in args]
        (out,) = loaded.execute_sharded(buffers).disassemble_into_single_device_arrays()
        return np.asarray(out[0])


def _runtime():
    if _state["runtime"] is None:
        _state["runtime"] = _JaxRuntime() if "jax" in sys.modules else _JaxlibRuntime()
    return _state["runtime"]


def _cpu_only() -> bool:
    """True when JAX would run on the CPU: ``JAX_PLATFORMS`` says so, or no accelerator
    plugin is installed (looked up without importing anything)."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0] == "cpu"
    plugins = ("jax_plugins", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm7_plugin", "libtpu")
    return all(importlib.util.find_spec(name) is None for name in plugins)


def _compile(args: list[np.ndarray], rule: str):
    """Compiles the program for ``args`` with JAX; returns ``(compiled, executable bytes)``."""
    import jax  # noqa: PLC0415 - lazy: only a miss compiles

    from ifcnn_jax import network  # noqa: PLC0415 - lazy: imports JAX

    if network._BLOCK["matmul"] != MATMUL_BLOCK or network._PER_ITEM["matmul"] != MATMUL_PER_ITEM:
        raise RuntimeError("block settings changed")
    weights = dict(zip(WEIGHT_NAMES, args[: len(WEIGHT_NAMES)]))
    window, origin, image_hw = args[len(WEIGHT_NAMES) :]
    leaves = jax.tree.leaves((weights, window, origin, image_hw))
    if len(leaves) != len(args) or any(a is not b for a, b in zip(leaves, args)):
        raise RuntimeError("argument order")  # the program's flat arguments must be ``args``
    fn = jax.jit(
        network._fuse_window.__wrapped__,
        static_argnames=("rule", "method", "block", "per_item"),
        keep_unused=True,
    )
    compiled = fn.lower(
        weights,
        window,
        origin,
        image_hw,
        rule=rule,
        method="matmul",
        block=MATMUL_BLOCK,
        per_item=MATMUL_PER_ITEM,
    ).compile()
    loaded = compiled._executable.xla_executable
    return compiled, loaded.client.serialize_executable(loaded)


def _compile_without_jax_cache(args: list[np.ndarray], rule: str):
    """:func:`_compile` once more, with JAX's persistent cache off and its in-memory
    caches cleared (then the persistent cache back as it was): an executable that JAX
    took from its persistent cache serializes without all of its kernels."""
    import jax  # noqa: PLC0415 - imported already by _compile
    from jax.experimental.compilation_cache import compilation_cache  # noqa: PLC0415 - lazy

    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    jax.clear_caches()
    try:
        return _compile(args, rule)
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)
        compilation_cache.reset_cache()


def _stored_output(executable: bytes, args: list[np.ndarray], out_shape) -> np.ndarray | None:
    """The output of ``executable`` loaded back from its bytes; None if it does not load
    or run, or gives an output of another shape or type."""
    try:
        runtime = _runtime()
        out = runtime.run(runtime.load(executable), args, out_shape)
    except Exception:  # noqa: BLE001 - not storable
        return None
    return out if out.shape == out_shape and out.dtype == np.float32 else None


def servable(model, sources: np.ndarray, tile) -> bool:
    """Whether :func:`forward` can serve this fusion (before looking at the cache)."""
    if cache_dir() is None or not isinstance(model, FoldedIFCNN) or not isinstance(sources, np.ndarray):
        return False
    if sources.ndim != 5 or sources.shape[0] < 2 or sources.shape[-1] != 3 or sources.dtype != np.float32:
        return False
    if any(
        model.weights[name].shape != _WEIGHT_SHAPES[name] or model.weights[name].dtype != np.float32
        for name in WEIGHT_NAMES
    ):
        return False
    if tile is None:
        untiled = sources.shape[2] * sources.shape[3] <= AUTO_TILE_PIXELS
    else:
        untiled = type(tile) is int and tile == 0
    return untiled and _cpu_only()


def forward(model: FoldedIFCNN, sources: np.ndarray, *, tile: int | None = None) -> np.ndarray | None:
    """The untiled fusion of stacked, normalised sources ``(N, B, H, W, 3)`` float32 as
    :func:`ifcnn_jax.inference.forward` computes it, ``(B, H, W, 3)``, by the compiled
    program of the cache (compiled and stored first on a miss). None when it cannot
    serve the call (see the module docstring): the caller then takes the normal path."""
    if not servable(model, sources, tile):
        return None
    _, batch, height, width, _ = sources.shape
    pad = ((0, 0), (0, 0), (HALO, HALO), (HALO, HALO), (0, 0))
    window = np.pad(sources, pad, mode="edge")
    args = [*(model.weights[name] for name in WEIGHT_NAMES), window]
    args += [np.zeros(2, np.int32), np.array([height, width], np.int32)]
    out_shape = (batch, height, width, 3)
    try:
        key = program_key(window.shape, model.fuse_rule)
        path = entry_path(key)
    except Exception:  # noqa: BLE001 - no key, no cache
        return None
    executable = _read(path, key)
    if executable is not None:
        try:
            runtime = _runtime()
            out = runtime.run(runtime.load(executable), args, out_shape)
            if out.shape == out_shape and out.dtype == np.float32:
                return out
        except Exception:  # noqa: BLE001 - a file that does not load or run is compiled again
            pass
    try:
        compiled, executable = _compile(args, model.fuse_rule)
    except Exception:  # noqa: BLE001 - the normal path compiles it its own way
        return None
    # The file is stored only once the serialized program has been loaded back and has
    # run. An executable that JAX took from its own persistent cache serializes without
    # all of its kernels ("Function ... not found" when run): it is compiled once more
    # without that cache.
    out = _stored_output(executable, args, out_shape)
    if out is None:
        try:
            compiled, executable = _compile_without_jax_cache(args, model.fuse_rule)
            out = _stored_output(executable, args, out_shape)
        except Exception:  # noqa: BLE001 - the first compiled program still runs
            out = None
    if out is not None:
        _write(path, key, executable)
        return out
    weights = dict(zip(WEIGHT_NAMES, args[: len(WEIGHT_NAMES)]))
    out = np.asarray(compiled(weights, *args[len(WEIGHT_NAMES) :]))
    return out if out.shape == out_shape else None
