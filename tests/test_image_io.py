"""Image reading (RGB order, alpha, 16 bits, errors) and atomic writing."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import average_8bit, read_image, to_8bit, write_image


def test_reads_rgb_in_rgb_order_like_pil(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), rgb)


def test_alpha_is_dropped(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (5, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])
    la = np.random.default_rng(2).integers(0, 256, (5, 6, 2), dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), la[..., 0])


def test_sixteen_bit_tiff_stays_sixteen_bit(tmp_path):
    gray = np.random.default_rng(3).integers(0, 65536, (6, 8), dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "scan.tif")  # PIL writes I;16 TIFF
    got = read_image(tmp_path / "scan.tif")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, gray)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"", "not an image"),
        (b"GIF89a not really", "not an image"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(IFCNNError, match=message) as info:
        read_image(path)
    assert "bad.png" in str(info.value)


def test_write_is_atomic_and_round_trips(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    out = write_image(tmp_path / "o.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]
    assert (os.stat(out).st_mode & 0o777) == (0o666 & ~_umask())
    sixteen = np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000
    write_image(tmp_path / "s.tif", sixteen)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "s.tif"), cv2.IMREAD_UNCHANGED), sixteen)


def test_write_errors(tmp_path):
    with pytest.raises(IFCNNError, match="cannot hold 16-bit"):
        write_image(tmp_path / "x.jpg", np.zeros((2, 2), np.uint16))
    with pytest.raises(IFCNNError, match="unknown image type"):
        write_image(tmp_path / "x.txt", np.zeros((2, 2), np.uint8))
    with pytest.raises(IFCNNError, match="does not exist"):
        write_image(tmp_path / "missing" / "x.png", np.zeros((2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


class TestTo8bit:
    def test_each_sample_type(self):
        unit = np.array([0.0, 0.5 / 255, 1.5 / 255, 0.2, 1.0, 1.7, -0.3], np.float32)
        # round(255 x) with NumPy's half-to-even, after clipping to [0, 1].
        np.testing.assert_array_equal(to_8bit(unit), [0, 0, 2, 51, 255, 255, 0])
        samples = np.array([0, 128, 257 * 3, 65535], np.uint16)
        np.testing.assert_array_equal(to_8bit(samples), [0, 0, 3, 255])
        eight = np.array([7, 200], np.uint8)
        assert to_8bit(eight) is eight


class TestAverage8bit:
    def test_rounds_the_exact_mean_half_to_even(self):
        a = np.array([[0, 1, 2, 254]], np.uint8)
        b = np.array([[1, 2, 3, 255]], np.uint8)
        # Means 0.5, 1.5, 2.5, 254.5 round to the even neighbour.
        np.testing.assert_array_equal(average_8bit(np.stack([a, b])), [[0, 2, 2, 254]])

    def test_axis_and_three_sources(self):
        stack = np.array([[[10], [11], [13]]], np.uint8)  # (1, 3, 1): sources on axis 1
        np.testing.assert_array_equal(average_8bit(stack, axis=1), [[11]])  # 34 / 3 = 11.33
