"""``ifcnn-fuse`` as practitioners use it: released weights by name (downloaded once from
a server on 127.0.0.1, checked by SHA-256), the one grouping rule on the release's own
folders, ``--dry-run``, the persistent compilation cache, early checks and tile
progress."""

from __future__ import annotations

import functools
import hashlib
import http.server
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

import ifcnn_jax
from ifcnn_jax.cli import synth
from ifcnn_jax.cli.fuse import batch_groups
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io import model_files
from ifcnn_jax.io.images import read_image, write_image

REPO = Path(__file__).resolve().parents[1]


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture()
def weights_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving a folder; yields (base URL, folder, requests)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_CountingHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder, server.requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def cache_env(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("IFCNN_CACHE_DIR", str(cache))
    return cache


def _closed_port() -> int:
    """A local port with nothing listening (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _state(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.to_pure_dict(nnx.state(model)))]


class TestWeightsByName:
    def test_downloads_once_checks_and_reuses(self, release_dir, weights_server, cache_env, monkeypatch):
        url, folder, requests = weights_server
        shutil.copy(release_dir / "snapshots" / "IFCNN-MAX.pth", folder / "IFCNN-MAX.pth")
        monkeypatch.setenv("IFCNN_WEIGHTS_URL", url)
        first = ifcnn_jax.load("IFCNN-MAX")
        again = ifcnn_jax.load("ifcnn-max")
        assert requests == ["/IFCNN-MAX.pth"]  # fetched once, then read from the cache
        cached = cache_env / "weights" / "IFCNN-MAX.pth"
        released = release_dir / "snapshots" / "IFCNN-MAX.pth"
        assert cached.read_bytes() == released.read_bytes()
        # The recorded SHA-256 is that of the authors' file, computed here independently.
        assert model_files.RELEASED["IFCNN-MAX"][1] == hashlib.sha256(released.read_bytes()).hexdigest()
        direct = ifcnn_jax.load(str(released))
        for a, b, c in zip(_state(first), _state(again), _state(direct)):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, c)
        assert first.fuse_rule == "max"

    def test_a_download_with_another_hash_is_refused_and_not_kept(
        self, release_dir, weights_server, cache_env, monkeypatch
    ):
        url, folder, _ = weights_server
        data = bytearray((release_dir / "snapshots" / "IFCNN-SUM.pth").read_bytes())
        data[-1] ^= 1
        (folder / "IFCNN-SUM.pth").write_bytes(bytes(data))
        monkeypatch.setenv("IFCNN_WEIGHTS_URL", url)
        with pytest.raises(IFCNNError, match="has SHA-256 .* not the recorded") as info:
            ifcnn_jax.load("IFCNN-SUM")
        assert "\n" not in str(info.value)
        assert not (cache_env / "weights" / "IFCNN-SUM.pth").exists()

    def test_offline_says_where_to_put_the_file_in_one_line(self, cache_env, monkeypatch):
        monkeypatch.setenv("IFCNN_WEIGHTS_URL", f"http://127.0.0.1:{_closed_port()}")
        with pytest.raises(IFCNNError) as info:
            ifcnn_jax.load("IFCNN-MEAN")
        message = str(info.value)
        assert "\n" not in message and "cannot download IFCNN-MEAN" in message
        assert str(cache_env / "weights" / "IFCNN-MEAN.pth") in message

    def test_the_command_line_takes_the_name_and_defaults_to_the_tasks_model(
        self, release_dir, weights_server, cache_env, tmp_path
    ):
        url, folder, requests = weights_server
        shutil.copy(release_dir / "snapshots" / "IFCNN-MEAN.pth", folder / "IFCNN-MEAN.pth")
        cmf = release_dir / "datasets" / "CMFDataset"
        pair = [
            write_image(tmp_path / f"{s}.png", read_image(cmf / f"lytro-05-{s}.jpg")[:48, :56]) for s in "AB"
        ]
        env = dict(os.environ, IFCNN_WEIGHTS_URL=url, IFCNN_CACHE_DIR=str(cache_env))
        # No --model: exposure takes IFCNN-MEAN, by name.
        done = subprocess.run(
            [sys.executable, "-m", "ifcnn_jax.cli.fuse", "--task", "exposure", *map(str, pair),
             "-o", str(tmp_path / "e.png"), "-q"],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert requests == ["/IFCNN-MEAN.pth"]
        expected = ifcnn_jax.fuse(
            ifcnn_jax.load(str(release_dir / "snapshots" / "IFCNN-MEAN.pth")),
            [read_image(p) for p in pair],
            "exposure",
        )
        np.testing.assert_array_equal(read_image(tmp_path / "e.png"), expected)


class TestOneGroupingRule:
    def test_the_release_multifocus_folder_gives_20_pairs_and_4_triples(self, release_dir):
        groups, skipped = batch_groups(release_dir / "datasets" / "CMFDataset", "multifocus")
        sizes = sorted(len(g.sources) for g in groups)
        assert sizes == [2] * 20 + [3] * 4 and skipped == []
        triples = [g for g in groups if len(g.sources) == 3]
        for group in triples:  # each triple is one scene's -A/-B/-C shots
            stems = {p.stem.rsplit("-", 1)[0] for p in group.sources}
            assert len(stems) == 1 and group.name.startswith("Triple Series/")

    def test_the_release_medical_folder_gives_its_8_pairs_and_skips_010(self, release_dir):
        groups, skipped = batch_groups(release_dir / "datasets" / "MDDataset", "medical")
        assert [g.name for g in groups] == [f"c0{i}" for i in range(1, 9)]
        assert all(len(g.sources) == 2 for g in groups)
        assert sorted(p.name for p in skipped) == sorted(
            p.name for p in (release_dir / "datasets" / "MDDataset").glob("010_*")
        )

    def test_a_synthesised_dataset_gives_its_groups_without_gt_and_maps(self, tmp_path):
        assert synth.main(["--skimage", "--out", str(tmp_path / "syn"), "--count", "3", "--crop-size", "32",
                           "--quiet"]) == 0  # fmt: skip
        groups, _ = batch_groups(tmp_path / "syn", "multifocus")
        assert [g.name for g in groups] == ["000000", "000001", "000002"]
        for group in groups:
            assert [p.name for p in group.sources] == [f"{group.name}-A.png", f"{group.name}-B.png"]

    def test_dry_run_lists_the_groups_and_fuses_nothing(self, release_dir, tmp_path):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "ifcnn_jax.cli.fuse", "--task", "multifocus", "--model", "/nonexistent",
             "--batch", str(release_dir / "datasets" / "CMFDataset"), "--dry-run"],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert "Triple Series/lytro-01: Triple Series/lytro-01-A.jpg, Triple Series/lytro-01-B.jpg, " \
               "Triple Series/lytro-01-C.jpg" in lines  # fmt: skip
        assert lines[-1].startswith("24 groups")
        assert time.perf_counter() - start < 60  # no model was loaded


class TestCompilationCache:
    def _fuse(self, release_dir, tmp_path, env, out):
        cmf = release_dir / "datasets" / "CMFDataset"
        return subprocess.run(
            [sys.executable, "-m", "ifcnn_jax.cli.fuse", "--task", "multifocus", "--model",
             str(release_dir / "snapshots" / "IFCNN-MAX.pth"), str(cmf / "lytro-06-A.jpg"),
             str(cmf / "lytro-06-B.jpg"), "-o", str(out), "-q"],
            capture_output=True, text=True, cwd=REPO, env=dict(os.environ, **env), timeout=300,
        )  # fmt: skip

    def test_on_by_default_and_moved_by_the_environment(self, release_dir, tmp_path):
        cache = tmp_path / "xla-cache"
        done = self._fuse(release_dir, tmp_path, {"IFCNN_COMPILATION_CACHE": str(cache)}, tmp_path / "a.png")
        assert done.returncode == 0, done.stderr
        assert any(cache.iterdir())  # compiled programs were stored
        again = self._fuse(release_dir, tmp_path, {"IFCNN_COMPILATION_CACHE": str(cache)}, tmp_path / "b.png")
        assert again.returncode == 0, again.stderr
        np.testing.assert_array_equal(read_image(tmp_path / "a.png"), read_image(tmp_path / "b.png"))

    def test_an_unwritable_cache_is_a_warning_not_an_error(self, release_dir, tmp_path):
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        done = self._fuse(release_dir, tmp_path, {"IFCNN_COMPILATION_CACHE": str(blocker / "jax")},
                          tmp_path / "c.png")  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("warning: compilation cache"), done.stderr
        assert (tmp_path / "c.png").exists()

    def test_off_turns_it_off(self, release_dir, tmp_path, monkeypatch):
        monkeypatch.setenv("IFCNN_CACHE_DIR", str(tmp_path / "user-cache"))
        done = self._fuse(release_dir, tmp_path, {"IFCNN_COMPILATION_CACHE": "off",
                                                  "IFCNN_CACHE_DIR": str(tmp_path / "user-cache")},
                          tmp_path / "d.png")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert not (tmp_path / "user-cache" / "jax").exists()


def test_a_missing_output_folder_is_reported_before_any_work(release_dir, tmp_path):
    cmf = release_dir / "datasets" / "CMFDataset"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ifcnn_jax.cli.fuse", "--task", "multifocus", "--model", "/nonexistent.pth",
         str(cmf / "lytro-07-A.jpg"), str(cmf / "lytro-07-B.jpg"), "-o", str(tmp_path / "no" / "f.png")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"error: {tmp_path / 'no' / 'f.png'}: output folder {tmp_path / 'no'} does not exist"
    )
    assert time.perf_counter() - start < 60


def test_tile_progress_counts_every_tile_and_keeps_the_result(released_models, release_dir):
    model, _ = released_models["max"]
    cmf = release_dir / "datasets" / "CMFDataset"
    images = [read_image(cmf / f"lytro-08-{s}.jpg")[:150, :230] for s in "AB"]
    calls = []
    tiled = ifcnn_jax.fuse(model, images, "multifocus", tile=64, progress=lambda d, t: calls.append((d, t)))
    total = math.ceil(150 / 64) * math.ceil(230 / 64)  # tiles of 64 px cover 150 x 230
    assert calls == [(k, total) for k in range(1, total + 1)]
    np.testing.assert_array_equal(tiled, ifcnn_jax.fuse(model, images, "multifocus", tile=64))


@pytest.mark.parametrize(
    "module", ["ifcnn_jax.cli.fuse", "ifcnn_jax.cli.synth", "ifcnn_jax.cli.evaluate", "ifcnn_jax.cli.report"]
)
def test_command_modules_do_not_import_jax(module):
    # --help and the early checks run before JAX is imported (it takes about a second);
    # the fusion path imports it when it needs it.
    code = f"import sys, {module}; print(sorted(m for m in ('jax', 'flax', 'torch') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
