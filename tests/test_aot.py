"""``ifcnn_jax.aot``: compiled fusion programs kept on disk. Cached and uncached results
are identical, a bad cache file falls back, the cache off writes nothing, and a
repeated ``ifcnn-fuse`` runs without importing JAX."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from ifcnn_jax import aot, inference, network, tiling
from ifcnn_jax.folded import load_folded
from tests.helpers import random_sources


@pytest.fixture()
def folded(release_dir):
    return load_folded(release_dir / "snapshots" / "IFCNN-MAX.pth")


@pytest.fixture()
def cache(tmp_path):
    aot.set_cache_dir(tmp_path)
    yield tmp_path / aot.AOT_DIR
    aot.set_cache_dir(None)


def _entries(folder):
    return sorted(folder.glob("*.xla")) if folder.is_dir() else []


def _no_compiling(monkeypatch):
    def fail(*_args, **_kwargs):
        raise AssertionError("compiled although the cache holds the program")

    monkeypatch.setattr(aot, "_compile", fail)


def test_constants_copied_to_avoid_importing_jax_agree():
    assert aot.AUTO_TILE_PIXELS == inference.AUTO_TILE_PIXELS
    assert aot.HALO == tiling.HALO
    assert aot.MATMUL_BLOCK == network._BLOCK["matmul"]
    assert aot.MATMUL_PER_ITEM == network._PER_ITEM["matmul"]


def test_cached_and_uncached_results_are_identical(folded, cache, monkeypatch):
    sources = random_sources(2, 1, 33, 47, seed=1)
    uncached = np.asarray(inference.forward(folded, sources, tile=0))
    first = aot.forward(folded, sources)  # compiles and stores
    assert len(_entries(cache)) == 1
    _no_compiling(monkeypatch)
    second = aot.forward(folded, sources)  # loads and runs the stored program
    np.testing.assert_array_equal(first, uncached)
    np.testing.assert_array_equal(second, uncached)
    # The runtime that does not import JAX (a repeated command) runs the same program.
    runtime = aot._JaxlibRuntime()
    window = np.pad(sources, ((0, 0), (0, 0), (5, 5), (5, 5), (0, 0)), mode="edge")
    args = [*(folded.weights[n] for n in aot.WEIGHT_NAMES), window, np.zeros(2, np.int32)]
    args.append(np.array([33, 47], np.int32))
    executable = aot.unpack(_entries(cache)[0].read_bytes(), aot.program_key(window.shape, "max"))
    np.testing.assert_array_equal(runtime.run(runtime.load(executable), args, (1, 33, 47, 3)), uncached)


def test_one_program_per_shape_and_rule_serves_every_model(release_dir, folded, cache, monkeypatch):
    sources = random_sources(3, 1, 20, 24, seed=2)
    aot.forward(folded, sources)
    aot.forward(folded, sources[:2])
    assert len(_entries(cache)) == 2  # N = 3 and N = 2
    # Another model of the same rule: its weights are arguments, the program is the same.
    other = load_folded(release_dir / "snapshots" / "IFCNN-SUM.pth", fuse_rule="max")
    _no_compiling(monkeypatch)
    np.testing.assert_array_equal(
        aot.forward(other, sources), np.asarray(inference.forward(other, sources, tile=0))
    )


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: data[:-100] + bytes(b ^ 0xFF for b in data[-100:]),  # executable corrupted
        lambda data: b"garbage",
        lambda data: b"",
        lambda data: data.replace(b'"rule":"max"', b'"rule":"sum"'),  # another key recorded
    ],
    ids=["truncated", "corrupted", "garbage", "empty", "foreign-key"],
)
def test_a_bad_cache_file_falls_back_and_is_replaced(folded, cache, damage):
    sources = random_sources(2, 1, 21, 19, seed=3)
    expected = aot.forward(folded, sources)
    (entry,) = _entries(cache)
    good = entry.read_bytes()
    entry.write_bytes(damage(good))
    np.testing.assert_array_equal(aot.forward(folded, sources), expected)
    assert aot.unpack(entry.read_bytes(), aot.program_key((2, 1, 31, 29, 3), "max")) is not None


def test_a_file_that_fails_to_load_falls_back(folded, cache, monkeypatch):
    sources = random_sources(2, 1, 17, 18, seed=4)
    expected = aot.forward(folded, sources)

    class Broken:
        def load(self, executable):
            raise RuntimeError("not an executable")

    monkeypatch.setitem(aot._state, "runtime", Broken())
    np.testing.assert_array_equal(aot.forward(folded, sources), expected)


def test_a_program_that_does_not_load_back_is_not_stored(folded, cache, monkeypatch):
    # As an executable that JAX took from its own persistent cache: it serializes, but
    # the bytes do not run. The result comes from the compiled program; nothing is kept.
    sources = random_sources(2, 1, 15, 22, seed=7)

    class Broken:
        def load(self, executable):
            raise RuntimeError("Function copy_bitcast_fusion not found")

    monkeypatch.setitem(aot._state, "runtime", Broken())
    np.testing.assert_array_equal(
        aot.forward(folded, sources), np.asarray(inference.forward(folded, sources, tile=0))
    )
    assert _entries(cache) == []


def test_a_program_already_in_jaxs_cache_is_compiled_again_and_stored(folded, cache, tmp_path, monkeypatch):
    import jax  # noqa: PLC0415 - only this test configures JAX's own cache
    from jax.experimental.compilation_cache import compilation_cache  # noqa: PLC0415

    from ifcnn_jax.cli.common import enable_compilation_cache  # noqa: PLC0415

    saved = jax.config.jax_compilation_cache_dir
    enable_compilation_cache(str(tmp_path / "jax"))
    compilation_cache.reset_cache()
    try:
        sources = random_sources(2, 1, 29, 31, seed=8)
        expected = np.asarray(inference.forward(folded, sources, tile=0))  # now in JAX's cache
        jax.clear_caches()
        np.testing.assert_array_equal(aot.forward(folded, sources), expected)
        assert len(_entries(cache)) == 1
        _no_compiling(monkeypatch)
        np.testing.assert_array_equal(aot.forward(folded, sources), expected)  # the stored program
    finally:
        jax.config.update("jax_compilation_cache_dir", saved)
        compilation_cache.reset_cache()


def test_cache_off_serves_nothing_and_writes_nothing(folded, tmp_path):
    aot.set_cache_dir(None)
    assert aot.forward(folded, random_sources(2, 1, 16, 16)) is None
    assert list(tmp_path.iterdir()) == []


def test_tiled_fusions_and_other_inputs_are_not_served(folded, cache, released_models):
    sources = random_sources(2, 1, 16, 16)
    assert aot.forward(folded, sources, tile=8) is None
    assert aot.forward(folded, sources, tile=True) is None
    assert aot.forward(folded, sources.astype(np.float64)) is None
    flax_model, _ = released_models["max"]
    assert aot.forward(flax_model, sources) is None
    assert _entries(cache) == []


def _fuse_command(release_dir, out, *extra):
    cmf = release_dir / "datasets" / "CMFDataset"
    return [
        "--task",
        "multifocus",
        "--model",
        str(release_dir / "snapshots" / "IFCNN-MAX.pth"),
        str(cmf / "lytro-03-A.jpg"),
        str(cmf / "lytro-03-B.jpg"),
        "-o",
        str(out),
        "-q",
        *extra,
    ]


def _run_fuse(args, env, *, silent=False):
    # Runs the command in a fresh interpreter and reports whether it imported JAX.
    # ``silent``: with -q nothing at all may reach stderr (jaxlib's own C++ log lines
    # included, which a client made without JAX prints unless told not to).
    code = (
        "import sys; from ifcnn_jax.cli.fuse import main; status = main(sys.argv[1:]); "
        "print('jax' in sys.modules, 'flax' in sys.modules); sys.exit(status)"
    )
    env = {k: v for k, v in env.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    if silent:
        assert done.stderr == ""
    return done.stdout.split()


def test_repeated_command_runs_the_stored_program_without_jax(release_dir, tmp_path):
    env = dict(os.environ, IFCNN_COMPILATION_CACHE=str(tmp_path / "cache"))
    assert _run_fuse(_fuse_command(release_dir, tmp_path / "first.png"), env) == ["True", "False"]
    assert len(_entries(tmp_path / "cache" / aot.AOT_DIR)) == 1
    assert _run_fuse(_fuse_command(release_dir, tmp_path / "again.png"), env, silent=True) == [
        "False",
        "False",
    ]
    off = dict(env, IFCNN_CACHE_DIR=str(tmp_path / "user-cache"))
    _run_fuse(_fuse_command(release_dir, tmp_path / "off.png", "--compilation-cache", "off"), off)
    assert not (tmp_path / "user-cache").exists() or list((tmp_path / "user-cache").rglob("*")) == []
    first = (tmp_path / "first.png").read_bytes()
    assert (tmp_path / "again.png").read_bytes() == first
    assert (tmp_path / "off.png").read_bytes() == first
    # A corrupted entry: the command falls back (compiles again), same output, no error.
    (entry,) = _entries(tmp_path / "cache" / aot.AOT_DIR)
    entry.write_bytes(entry.read_bytes()[:-10] + b"0123456789")
    assert _run_fuse(_fuse_command(release_dir, tmp_path / "fallback.png"), env) == ["True", "False"]
    assert (tmp_path / "fallback.png").read_bytes() == first


def test_weights_of_other_shapes_are_not_served(folded, cache):
    from ifcnn_jax.folded import FoldedIFCNN  # noqa: PLC0415 - only this test builds one by hand

    weights = dict(folded.weights, bias4=np.zeros(4, np.float32))
    odd = FoldedIFCNN("max", weights)
    assert aot.forward(odd, random_sources(2, 1, 16, 16)) is None
    assert _entries(cache) == []


def test_key_covers_program_sources_versions_cpu_and_shapes(monkeypatch):
    key = aot.program_key((2, 1, 30, 40, 3), "max")
    assert len(key["program"]) == 3 and key["jaxlib"] and key["cpu"]
    assert aot.program_key((2, 1, 30, 41, 3), "max") != key
    assert aot.program_key((2, 1, 30, 40, 3), "mean") != key
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
    assert aot.program_key((2, 1, 30, 40, 3), "max") != key


def test_repeated_batch_of_two_sizes_runs_without_jax(release_dir, tmp_path):
    import cv2  # noqa: PLC0415 - only this test writes images

    rng = np.random.default_rng(5)
    folder = tmp_path / "pairs"
    folder.mkdir()
    for name, size in (("small", (24, 30)), ("large", (40, 36))):
        for side in "AB":
            cv2.imwrite(str(folder / f"{name}-{side}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    env = dict(os.environ, IFCNN_COMPILATION_CACHE=str(tmp_path / "cache"))
    model = str(release_dir / "snapshots" / "IFCNN-MAX.pth")

    def batch(out):
        args = ["--task", "multifocus", "--model", model, "--batch", str(folder), "-o", str(out), "-q"]
        return _run_fuse(args, env)

    assert batch(tmp_path / "first") == ["True", "False"]
    assert len(_entries(tmp_path / "cache" / aot.AOT_DIR)) == 2
    assert batch(tmp_path / "again") == ["False", "False"]
    for name in ("small", "large"):
        assert (tmp_path / "again" / f"{name}.png").read_bytes() == (
            tmp_path / "first" / f"{name}.png"
        ).read_bytes()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_file_others_may_write_is_not_loaded(folded, cache, monkeypatch):
    # Loading an executable runs its code: one that another user could have written is
    # compiled afresh instead, whatever its content.
    sources = random_sources(2, 1, 21, 26, seed=5)
    expected = np.asarray(inference.forward(folded, sources, tile=0))
    aot.forward(folded, sources)
    (entry,) = _entries(cache)
    compiled = []
    real_compile = aot._compile
    monkeypatch.setattr(aot, "_compile", lambda *a, **k: compiled.append(1) or real_compile(*a, **k))
    for target, mode in ((cache, 0o777), (entry, 0o666)):
        original = target.stat().st_mode
        target.chmod(mode)
        try:
            np.testing.assert_array_equal(aot.forward(folded, sources), expected)
        finally:
            target.chmod(original)
    assert len(compiled) == 2
    np.testing.assert_array_equal(aot.forward(folded, sources), expected)
    assert len(compiled) == 2  # private again: served from the file
