"""Orbax checkpoint directories: round trip, atomic replacement, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.checkpoints import (
    atomic_directory,
    load_params,
    read_metadata,
    save_params,
)


def test_round_trip_keeps_arrays_and_metadata(tmp_path):
    params = {
        "a": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4)},
        "b": np.array([1.5, -2.0], np.float32),
    }
    save_params(tmp_path / "ck", params, {"kind": "test", "note": "x"})
    loaded, metadata = load_params(tmp_path / "ck")
    np.testing.assert_array_equal(loaded["a"]["kernel"], params["a"]["kernel"])
    np.testing.assert_array_equal(loaded["b"], params["b"])
    assert metadata["kind"] == "test" and metadata["format_version"] == 1
    assert read_metadata(tmp_path / "ck") == metadata


def test_failure_inside_leaves_nothing_and_keeps_the_old_directory(tmp_path):
    target = tmp_path / "ck"
    save_params(target, {"w": np.ones(3, np.float32)}, {"kind": "old"})
    with pytest.raises(RuntimeError):
        with atomic_directory(target, force=True) as tmp:
            tmp.mkdir()
            (tmp / "partial").write_text("half")
            raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert load_params(target)[1]["kind"] == "old"


def test_existing_directory_needs_force(tmp_path):
    save_params(tmp_path / "ck", {"w": np.ones(1, np.float32)}, {"kind": "one"})
    with pytest.raises(IFCNNError, match="already exists"):
        save_params(tmp_path / "ck", {"w": np.ones(1, np.float32)}, {"kind": "two"})
    save_params(tmp_path / "ck", {"w": np.zeros(1, np.float32)}, {"kind": "two"}, force=True)
    loaded, metadata = load_params(tmp_path / "ck")
    assert metadata["kind"] == "two" and loaded["w"][0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(IFCNNError, match="no such checkpoint"):
        load_params(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(IFCNNError, match="not an ifcnn-jax checkpoint"):
        load_params(tmp_path / "plain")


class TestReplacingNeverDeletesOtherFiles:
    def test_a_file_is_never_replaced_even_with_force(self, tmp_path):
        target = tmp_path / "weights.pth"
        target.write_bytes(b"the user's original")
        with pytest.raises(IFCNNError, match="not a folder; refusing"):
            save_params(target, {"w": np.ones(1, np.float32)}, {"kind": "x"}, force=True)
        assert target.read_bytes() == b"the user's original"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pth"]

    def test_a_folder_of_other_files_is_never_replaced_even_with_force(self, tmp_path):
        (tmp_path / "photos").mkdir()
        (tmp_path / "photos" / "a.jpg").write_bytes(b"jpeg")
        with pytest.raises(IFCNNError, match="not an ifcnn-jax checkpoint; refusing"):
            save_params(tmp_path / "photos", {"w": np.ones(1, np.float32)}, {"kind": "x"}, force=True)
        assert [p.name for p in (tmp_path / "photos").iterdir()] == ["a.jpg"]

    def test_an_empty_folder_is_used(self, tmp_path):
        (tmp_path / "ck").mkdir()
        save_params(tmp_path / "ck", {"w": np.ones(1, np.float32)}, {"kind": "x"})
        assert load_params(tmp_path / "ck")[1]["kind"] == "x"

    def test_a_full_disk_is_one_error_naming_the_path_and_leaves_nothing(self, full_disk):
        target = full_disk / "ck"
        with pytest.raises(IFCNNError, match="no space left on device") as info:
            save_params(target, {"w": np.random.default_rng(0).random(1 << 20, np.float32)}, {"kind": "x"})
        assert str(target) in str(info.value) and "\n" not in str(info.value)
        assert list(full_disk.iterdir()) == []
