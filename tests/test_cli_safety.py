"""Data safety of the command-line tools: no input file is overwritten, a full disk or
an image that declares a huge size gives one line and exit 2, Ctrl-C gives one line,
exit 130 and no temporary files."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import read_image, write_image

REPO = Path(__file__).resolve().parents[1]


def _run(module: str, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def _one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.fixture(scope="module")
def small_pair(release_dir, tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pair")
    cmf = release_dir / "datasets" / "CMFDataset"
    return [write_image(folder / f"p-{s}.png", read_image(cmf / f"lytro-02-{s}.jpg")[:64, :80]) for s in "AB"]


def test_batch_never_overwrites_a_file_of_the_input_tree(release_dir, tmp_path):
    # The case: lytro-01.png is a source of group "lytro"; fusing group
    # lytro-01 into the same folder would replace it.
    cmf = release_dir / "datasets" / "CMFDataset"
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("lytro-01-A", "lytro-01-B"):
        write_image(folder / f"{name}.png", read_image(cmf / f"{name}.jpg")[:40, :48])
    write_image(folder / "lytro-01.png", read_image(cmf / "lytro-01-A.jpg")[:40, :48])
    write_image(folder / "lytro-02.png", read_image(cmf / "lytro-01-B.jpg")[:40, :48])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    proc = _run(
        "ifcnn_jax.cli.fuse",
        "--task",
        "multifocus",
        "--model",
        release_dir / "snapshots" / "IFCNN-MAX.pth",
        "--batch",
        folder,
        "-o",
        folder,
        "-q",
    )
    _one_line_error(proc, "refusing to overwrite input file", "lytro-01.png")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_full_disk_names_the_output_file(release_dir, small_pair, full_disk):
    filler = full_disk / "filler"
    filler.write_bytes(np.random.default_rng(0).bytes(250 << 10))  # leaves a few KiB
    out = full_disk / "fused.png"
    proc = _run(
        "ifcnn_jax.cli.fuse",
        "--task",
        "multifocus",
        "--model",
        release_dir / "snapshots" / "IFCNN-MAX.pth",
        *small_pair,
        "-o",
        out,
    )
    _one_line_error(proc, str(out), "No space left on device")
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_the_converter_on_a_full_disk_is_one_line(release_dir, full_disk):
    out = full_disk / "ifcnn-max"
    proc = _run("convert.from_torch", "ifcnn", release_dir / "snapshots" / "IFCNN-MAX.pth", out)
    _one_line_error(proc, str(out), "no space left on device")
    assert list(full_disk.iterdir()) == []


def test_the_converter_never_replaces_a_file_even_with_force(release_dir, tmp_path):
    target = tmp_path / "IFCNN-MAX.pth"
    target.write_bytes((release_dir / "snapshots" / "IFCNN-MAX.pth").read_bytes())
    proc = _run("convert.from_torch", "ifcnn", target, target, "--force")
    _one_line_error(proc, str(target), "not a folder; refusing")
    assert target.read_bytes() == (release_dir / "snapshots" / "IFCNN-MAX.pth").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IFCNN-MAX.pth"]


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A small PNG whose header declares ``width x height`` RGB pixels (the data is a
    few zero rows only: a decompression bomb in miniature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * 64) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_an_image_declaring_a_huge_size_is_refused_before_decoding(release_dir, tmp_path):
    # 200000 x 200000 RGB: 120 GB to decode, far more to fuse, on any machine.
    bombs = [_png_declaring(tmp_path / f"bomb-{s}.png", 200_000, 200_000) for s in "AB"]
    start = time.perf_counter()
    proc = _run(
        "ifcnn_jax.cli.fuse",
        "--task",
        "multifocus",
        "--model",
        release_dir / "snapshots" / "IFCNN-MAX.pth",
        *bombs,
        "-o",
        tmp_path / "f.png",
    )
    _one_line_error(proc, str(bombs[0]), "200000x200000", "GiB of memory")
    assert time.perf_counter() - start < 60  # refused from the header, not after decoding
    assert not (tmp_path / "f.png").exists()


def test_read_image_refuses_a_declared_size_beyond_memory(tmp_path):

    bomb = _png_declaring(tmp_path / "bomb.png", 200_000, 200_000)
    with pytest.raises(IFCNNError, match=r"200000x200000 pixels, which take 149\.0 GiB"):
        read_image(bomb)


def test_an_evaluation_manifest_cannot_write_outside_out(release_dir, small_pair, tmp_path):
    manifest = tmp_path / "set" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(
        json.dumps(
            {
                "groups": [
                    {"name": "../../escaped", "task": "multifocus", "sources": [str(p) for p in small_pair]}
                ]
            }
        )
    )
    proc = _run(
        "ifcnn_jax.cli.evaluate",
        manifest,
        "--model",
        release_dir / "snapshots" / "IFCNN-MAX.pth",
        "--out",
        tmp_path / "set" / "out",
        "-q",
    )
    _one_line_error(proc, "'../../escaped'", "relative name")
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path.parent / "escaped.png").exists()


@pytest.mark.parametrize("delay", [2.0, 4.0])
def test_ctrl_c_gives_one_line_130_and_no_temporary_files(release_dir, tmp_path, delay):
    # A pair large enough that fusion is still running when the signal arrives (or
    # the model is still compiling, for the shorter delay).
    cmf = release_dir / "datasets" / "CMFDataset"
    big = [
        write_image(tmp_path / f"big-{s}.png", np.tile(read_image(cmf / f"lytro-04-{s}.jpg"), (4, 4, 1)))
        for s in "AB"
    ]
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ifcnn_jax.cli.fuse",
            "--task",
            "multifocus",
            "--model",
            str(release_dir / "snapshots" / "IFCNN-MAX.pth"),
            *map(str, big),
            "-o",
            str(out / "fused.png"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the fusion finished before the signal; nothing interrupted")
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted"], err
    assert _hidden_leftovers(tmp_path) == [] and list(out.iterdir()) == []


@pytest.mark.parametrize("delay", [0.5, 2.0])
def test_ctrl_c_during_a_conversion_leaves_nothing(release_dir, tmp_path, delay):
    weights = release_dir / "snapshots" / "IFCNN-MAX.pth"
    proc = subprocess.Popen(
        [sys.executable, "-m", "convert.from_torch", "ifcnn", str(weights), str(tmp_path / "ifcnn-max")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the conversion finished before the signal; nothing interrupted")
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted; nothing written"], err
    assert list(tmp_path.iterdir()) == []
