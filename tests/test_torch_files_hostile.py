"""Hostile and corrupt ``.pth`` files: no code runs, no memory outside the file is read,
and every failure is one ``IFCNNError``.

All hostile files are built here from the released file or from pickles made on the
spot; no binary blob is committed.
"""

from __future__ import annotations

import builtins
import io
import pickle
import pickletools
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import ifcnn_jax
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.torch_files import read_state_dict

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _RunsCode:
    """Pickles as ``eval(expression)``: what a trojaned file would contain."""

    def __init__(self, expression: str):
        self.expression = expression

    def __reduce__(self):
        return (builtins.eval, (self.expression,))


def _touch(marker: Path, value: object) -> str:
    # Creates ``marker`` and evaluates to ``value``, so the trojan is otherwise invisible.
    return f"(open({str(marker)!r}, 'w').close(), {value!r})[1]"


def _legacy_records(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte ranges of the five pickles that open a legacy file."""
    stream, ranges = io.BytesIO(data), []
    for _ in range(5):
        start = stream.tell()
        _skip_pickle(stream)
        ranges.append((start, stream.tell()))
    return ranges


def _skip_pickle(stream: io.BytesIO) -> None:

    for opcode, _arg, _pos in pickletools.genops(stream):
        if opcode.name == "STOP":
            return


def _trojan_legacy(release_file: Path, record: int, marker: Path) -> bytes:
    """The released file with pickle number ``record`` (0 magic, 1 protocol, 2 system
    info, 4 storage keys) replaced by one that gives the same value and runs code."""
    data = release_file.read_bytes()
    ranges = _legacy_records(data)
    start, end = ranges[record]
    value = pickle.loads(data[start:end]) if record != 3 else None
    evil = pickle.dumps(_RunsCode(_touch(marker, value)), protocol=2)
    return data[:start] + evil + data[end:]


@pytest.fixture()
def released_max(release_dir) -> Path:
    return release_dir / "snapshots" / "IFCNN-MAX.pth"


class TestTrojanedReleaseFiles:
    @pytest.mark.parametrize("record", [0, 1, 2, 4])
    def test_a_legacy_header_record_cannot_run_code(self, released_max, tmp_path, record):
        marker = tmp_path / "ran"
        path = tmp_path / "IFCNN-MAX.pth"
        path.write_bytes(_trojan_legacy(released_max, record, marker))
        # The trojan is real: an unrestricted reader of that record runs it.
        start, end = _legacy_records(path.read_bytes())[record]
        pickle.loads(path.read_bytes()[start:end])
        assert marker.exists()
        marker.unlink()
        with pytest.raises(IFCNNError, match="is not allowed"):
            read_state_dict(path)
        with pytest.raises(IFCNNError):
            ifcnn_jax.load(str(path))
        assert not marker.exists()

    def test_the_command_line_refuses_it_in_one_line(self, released_max, release_dir, tmp_path):
        marker = tmp_path / "ran"
        model = tmp_path / "IFCNN-MAX.pth"
        model.write_bytes(_trojan_legacy(released_max, 0, marker))
        pair = release_dir / "datasets" / "CMFDataset"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ifcnn_jax.cli.fuse",
                "--task",
                "multifocus",
                "--model",
                str(model),
                str(pair / "lytro-01-A.jpg"),
                str(pair / "lytro-01-B.jpg"),
                "-o",
                str(tmp_path / "f.png"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 2
        assert result.stderr.strip().count("\n") == 0 and str(model) in result.stderr
        assert not marker.exists() and not (tmp_path / "f.png").exists()

    def test_zip_main_pickle_cannot_run_code(self, tmp_path):
        marker = tmp_path / "ran"
        path = tmp_path / "evil.pth"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", pickle.dumps(OrderedDict(w=_RunsCode(_touch(marker, 0)))))
        with pytest.raises(IFCNNError, match="is not allowed"):
            read_state_dict(path)
        assert not marker.exists()


# ------------------------------------------------------------------ hand-made views


class _Storage:
    """Pickled as the persistent id of a float32 (or other) storage of ``numel``."""

    def __init__(self, key: str, numel: int, storage_type=torch.FloatStorage):
        self.key, self.numel, self.storage_type = key, numel, storage_type


class _View:
    def __init__(self, storage: _Storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _TorchLikePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def _zip_file(path: Path, views: dict, storages: dict[str, bytes]) -> Path:
    buffer = io.BytesIO()
    _TorchLikePickler(buffer, protocol=2).dump(OrderedDict(views))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
    return path


_TWELVE = np.arange(12, dtype=np.float32)


class TestTensorViews:
    def test_a_valid_strided_view_matches_numpy(self, tmp_path):
        storage = _Storage("0", 12)
        path = _zip_file(
            tmp_path / "ok.pth", {"w": _View(storage, 1, (2, 3), (4, 1))}, {"0": _TWELVE.tobytes()}
        )
        expected = np.array([[1, 2, 3], [5, 6, 7]], np.float32)  # storage[1 + 4i + j]
        np.testing.assert_array_equal(read_state_dict(path)["w"], expected)

    @pytest.mark.parametrize(
        "offset, size, stride, message",
        [
            (0, (4, 4), (4, 1), "reaches past its storage"),  # 16 elements from 12
            (11, (2,), (1,), "reaches past its storage"),  # ends one past the end
            (0, (3, 4), (4, 1 << 40), "reaches past its storage"),  # huge stride
            (-1, (2,), (1,), "offset"),
            (0, (2, 2), (-1, 1), "negative"),
            (0, (-2, 2), (1, 1), "negative"),
            (0, (1 << 20, 1 << 20), (0, 0), "larger than its storage"),  # stride-0 blow-up
            (0, (2, 2), (1,), "differ in length"),
            (0, (2.5,), (1,), "not a tuple of integers"),
            ("0", (2,), (1,), "offset"),
        ],
    )
    def test_views_outside_the_storage_are_refused(self, tmp_path, offset, size, stride, message):
        path = _zip_file(
            tmp_path / "bad.pth",
            {"w": _View(_Storage("0", 12), offset, size, stride)},
            {"0": _TWELVE.tobytes()},
        )
        with pytest.raises(IFCNNError, match=message):
            read_state_dict(path)

    def test_a_storage_declared_larger_than_its_bytes_is_refused(self, tmp_path):
        path = _zip_file(
            tmp_path / "short.pth", {"w": _View(_Storage("0", 13), 0, (13,), (1,))}, {"0": _TWELVE.tobytes()}
        )
        with pytest.raises(IFCNNError, match="holds 48 bytes, expected 52"):
            read_state_dict(path)

    def test_a_storage_declaring_gigabytes_is_refused_before_allocating(self, tmp_path):
        path = _zip_file(
            tmp_path / "huge.pth",
            {"w": _View(_Storage("0", 1 << 40), 0, (2,), (1,))},
            {"0": _TWELVE.tobytes()},
        )
        with pytest.raises(IFCNNError, match="declares"):
            read_state_dict(path)

    def test_one_storage_key_with_two_dtypes_is_refused(self, tmp_path):
        views = {
            "a": _View(_Storage("0", 12), 0, (12,), (1,)),
            "b": _View(_Storage("0", 6, torch.DoubleStorage), 0, (6,), (1,)),
        }
        path = _zip_file(tmp_path / "alias.pth", views, {"0": _TWELVE.tobytes()})
        with pytest.raises(IFCNNError, match="two types or sizes"):
            read_state_dict(path)

    def test_a_deflate_bomb_is_refused_before_inflating(self, tmp_path):
        path = tmp_path / "bomb.pth"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("archive/data.pkl", b"\0" * (64 << 20))
        with pytest.raises(IFCNNError, match="uncompressed"):
            read_state_dict(path)


# ---------------------------------------------------------------------- fuzzing


def _zip_copy(release_file: Path, folder: Path) -> Path:
    path = folder / "zip.pth"
    torch.save(torch.load(release_file, map_location="cpu", weights_only=True), path)
    return path


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_truncations_and_bit_flips_only_ever_give_ifcnn_error(released_max, tmp_path, layout):
    original = (released_max if layout == "legacy" else _zip_copy(released_max, tmp_path)).read_bytes()
    rng = np.random.default_rng(13)
    work = tmp_path / "fuzz"
    work.mkdir()
    path = work / "x.pth"
    outcomes = {"refused": 0, "read": 0}
    # Mutations near the start hit the pickles (the interesting part); the rest the data.
    for trial in range(150):
        data = bytearray(original)
        if trial % 3 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            head = trial % 3 == 1
            for _ in range(int(rng.integers(1, 8))):
                where = int(rng.integers(0, min(len(data), 4096) if head else len(data)))
                data[where] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data))
        try:
            state = read_state_dict(path)
        except IFCNNError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            outcomes["refused"] += 1
        else:
            outcomes["read"] += 1  # a flip in the weights' bytes: still plain arrays
            assert all(isinstance(v, np.ndarray) for v in state.values())
    assert sorted(p.name for p in work.iterdir()) == ["x.pth"]  # no side effects
    assert outcomes["refused"] > 0
