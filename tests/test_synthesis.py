"""Multi-focus pair synthesis, checked against formulas and filters written here."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage

from ifcnn_jax.data import synthesis
from ifcnn_jax.errors import IFCNNError


def paper_kernel(radius: int) -> np.ndarray:
    """Eq. (4) as corrected in the authors' README, written out independently."""
    ksize = 2 * radius + 1
    sigma = 0.6 * (ksize - 1) + 0.8
    values = np.array([np.exp(-((i - (ksize - 1) / 2) ** 2) / (2 * sigma**2)) for i in range(ksize)])
    return values / values.sum()


def reference_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """2-D convolution with the outer-product kernel; 'mirror' = reflect without edge repeat."""
    kernel2d = np.outer(paper_kernel(radius), paper_kernel(radius))
    image = np.asarray(image, np.float64)
    return np.stack(
        [ndimage.convolve(image[..., c], kernel2d, mode="mirror") for c in range(image.shape[-1])], axis=-1
    )


def random_photo(rng: np.random.Generator, height: int = 40, width: int = 56) -> np.ndarray:
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 8, 12])
def test_kernel_matches_corrected_eq4_and_sums_to_one(radius):
    kernel = synthesis.gaussian_kernel(radius)
    assert kernel.shape == (2 * radius + 1,)
    np.testing.assert_allclose(kernel, paper_kernel(radius), rtol=1e-12, atol=0)
    assert abs(kernel.sum() - 1.0) < 1e-12
    assert synthesis.gaussian_sigma(radius) == pytest.approx(0.6 * (2 * radius) + 0.8)


def test_kernel_is_not_opencv_default_sigma():

    # OpenCV's default sigma for ksize 5 is 0.3 * ((5 - 1) * 0.5 - 1) + 0.8 = 1.1; the paper's is 3.2.
    default = cv2.getGaussianKernel(5, 0).ravel()
    assert np.abs(synthesis.gaussian_kernel(2) - default).max() > 0.05


@pytest.mark.parametrize("radius", [1, 3, 6])
def test_blur_matches_reference_convolution(radius):
    image = random_photo(np.random.default_rng(radius)).astype(np.float32)
    np.testing.assert_allclose(synthesis.blur(image, radius), reference_blur(image, radius), atol=2e-3)


def test_ground_truth_is_the_sharp_crop():
    photo = random_photo(np.random.default_rng(0), 50, 70)
    seen_flip = set()
    for seed in range(8):
        example = synthesis.synthesize_example(
            photo, rng=np.random.default_rng(seed), crop_size=24, radius_range=(1, 4)
        )
        top, left, h, w = example.box
        crop = photo[top : top + h, left : left + w].astype(np.float32) / np.float32(255)  # 0-1 out
        expected = crop[:, ::-1] if example.flipped else crop
        np.testing.assert_array_equal(example.target, expected)
        assert example.target.dtype == np.float32
        seen_flip.add(example.flipped)
    assert seen_flip == {True, False}


@pytest.mark.parametrize(
    "num_sources,focus_map", [(2, "smooth"), (2, "shapes"), (2, "depth"), (3, "smooth"), (3, "depth")]
)
def test_each_source_is_blurred_exactly_outside_its_focus_region(num_sources, focus_map):
    rng = np.random.default_rng(7)
    photo = random_photo(rng, 60, 80)
    depth = np.add.outer(np.linspace(1, 5, 60), np.linspace(0, 2, 80)) + rng.uniform(0, 0.1, (60, 80))
    example = synthesis.synthesize_example(
        photo,
        depth if focus_map == "depth" else None,
        rng=np.random.default_rng(3),
        crop_size=32,
        num_sources=num_sources,
        radius_range=(2, 5),
        focus_map=focus_map,
        flip=False,
    )
    top, left, h, w = example.box
    assert example.sources.shape == (num_sources, 32, 32, 3)
    assert set(np.unique(example.labels)) <= set(range(num_sources))
    for k in range(num_sources):
        # The blur of the whole photo, cropped: the synthesis must see real context.
        blurred = reference_blur(photo, example.radii[k])[top : top + h, left : left + w] / 255
        in_focus = example.labels == k
        np.testing.assert_array_equal(example.sources[k][in_focus], example.target[in_focus])
        np.testing.assert_allclose(example.sources[k][~in_focus], blurred[~in_focus], atol=2e-3 / 255)
    assert all(2 <= r <= 5 for r in example.radii)


def test_depth_split_puts_near_in_plane_zero():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 10.0, (40, 40))
    depth[0, 0] = np.nan  # missing measurement: farthest
    for planes in (2, 3, 4):
        labels = synthesis.depth_focus_map(depth, planes, np.random.default_rng(planes))
        assert labels[0, 0] == planes - 1
        valid = np.isfinite(depth)
        for k in range(planes - 1):
            near, far = depth[valid & (labels == k)], depth[valid & (labels > k)]
            assert near.size and far.size and near.max() <= far.min()


def test_random_masks_use_every_plane_and_are_deterministic():
    for kind in (synthesis.smooth_focus_map, synthesis.shapes_focus_map):
        a = kind((48, 64), 2, np.random.default_rng(5))
        b = kind((48, 64), 2, np.random.default_rng(5))
        np.testing.assert_array_equal(a, b)
        assert a.shape == (48, 64) and a.dtype == np.uint8
        assert set(np.unique(a)) == {0, 1}
    smooth = synthesis.smooth_focus_map((48, 64), 3, np.random.default_rng(2))
    assert set(np.unique(smooth)) == {0, 1, 2}


def test_examples_are_deterministic_in_the_generator():
    photo = random_photo(np.random.default_rng(0))
    one = synthesis.synthesize_example(photo, rng=np.random.default_rng(11), crop_size=16)
    two = synthesis.synthesize_example(photo, rng=np.random.default_rng(11), crop_size=16)
    other = synthesis.synthesize_example(photo, rng=np.random.default_rng(12), crop_size=16)
    np.testing.assert_array_equal(one.sources, two.sources)
    assert one.box == two.box and one.radii == two.radii
    assert not np.array_equal(one.sources, other.sources)


def test_gray_and_rgba_photos_become_rgb():
    gray = np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)
    example = synthesis.synthesize_example(gray, rng=np.random.default_rng(0), crop_size=None)
    assert example.target.shape == (20, 30, 3)
    np.testing.assert_array_equal(example.target[..., 0], example.target[..., 2])
    rgba = np.dstack([np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 255, np.uint8)])
    assert synthesis.to_rgb(rgba).shape == (8, 8, 3)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"crop_size": 100}, "smaller than the crop size"),
        ({"num_sources": 1}, "num_sources"),
        ({"radius_range": (0, 3)}, "radius_range"),
        ({"radius_range": (5, 3)}, "radius_range"),
        ({"focus_map": "depth"}, "needs a depth map"),
        ({"focus_map": "stripes"}, "unknown focus map"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    photo = random_photo(np.random.default_rng(0))
    with pytest.raises(IFCNNError, match=message):
        synthesis.synthesize_example(photo, rng=np.random.default_rng(0), **kwargs)


def test_bad_depth_and_radius():
    photo = random_photo(np.random.default_rng(0))
    with pytest.raises(IFCNNError, match="does not match"):
        synthesis.synthesize_example(photo, np.ones((3, 3)), rng=np.random.default_rng(0))
    with pytest.raises(IFCNNError, match="no valid"):
        synthesis.depth_focus_map(np.full((4, 4), np.nan), 2, np.random.default_rng(0))
    with pytest.raises(IFCNNError, match="radius"):
        synthesis.gaussian_kernel(0)
