"""Decision-map fusion: the guided filter against a NumPy port of He et al.'s algorithm,
small-region removal on hand-made maps, the agreement labels on a known focus split,
and the whole mode through the public API and ``ifcnn-fuse`` on synthetic pairs with
ground truth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

import ifcnn_jax
from ifcnn_jax.data import synthesis
from ifcnn_jax.decision_map import (
    agreement_labels,
    guided_filter,
    remove_small_regions,
)
from ifcnn_jax.io.images import read_image, to_8bit, write_image
from ifcnn_jax.recipes import fuse_with_focus_map

REPO = Path(__file__).resolve().parents[1]


def _window_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over each (2r+1)^2 window, the border mirrored with its edge pixel repeated
    (OpenCV's BORDER_REFLECT is NumPy's 'symmetric'), by explicit loops."""
    padded = np.pad(image.astype(np.float64), radius, mode="symmetric")
    out = np.zeros(image.shape, np.float64)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out += padded[dy : dy + image.shape[0], dx : dx + image.shape[1]]
    return out / (2 * radius + 1) ** 2


def _reference_guided_filter(guide, source, radius, eps):
    """He, Sun, Tang (TPAMI 2013), Algorithm 1, in float64."""
    mean_i, mean_p = _window_mean(guide, radius), _window_mean(source, radius)
    var_i = _window_mean(guide * guide, radius) - mean_i**2
    cov_ip = _window_mean(guide * source, radius) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return _window_mean(a, radius) * guide + _window_mean(b, radius)


class TestGuidedFilter:
    @pytest.mark.parametrize("radius, eps", [(1, 0.01), (3, 0.001), (4, 0.1)])
    def test_matches_a_port_of_the_algorithm(self, radius, eps):
        rng = np.random.default_rng(radius)
        guide = rng.random((23, 31)).astype(np.float32)
        source = (rng.random((23, 31)) > 0.5).astype(np.float32)
        ours = guided_filter(guide, source, radius, eps)
        np.testing.assert_allclose(ours, _reference_guided_filter(guide, source, radius, eps), atol=2e-5)

    def test_a_guide_equal_to_the_input_keeps_its_edges(self):
        step = np.zeros((20, 20), np.float32)
        step[:, 10:] = 1
        # var(I) = cov(I, p) on every window, so a = var / (var + eps) ~ 1 where there is an edge.
        np.testing.assert_allclose(guided_filter(step, step, 2, 1e-6), step, atol=1e-3)

    def test_a_flat_guide_gives_the_double_box_mean(self):
        rng = np.random.default_rng(0)
        source = rng.random((16, 17)).astype(np.float32)
        flat = np.full_like(source, 0.5)
        expected = _window_mean(_window_mean(source, 2), 2)  # a = 0, b = mean(p)
        np.testing.assert_allclose(guided_filter(flat, source, 2, 0.01), expected, atol=1e-5)


class TestSmallRegions:
    def test_an_island_takes_the_label_around_it(self):
        labels = np.zeros((40, 40), np.int32)
        labels[:, 20:] = 1
        labels[5:8, 5:8] = 1  # 9 pixels of 1 inside the 0 half
        labels[30:33, 30:33] = 0  # 9 pixels of 0 inside the 1 half
        cleaned = remove_small_regions(labels, 2, min_pixels=20)
        expected = np.zeros((40, 40), np.int32)
        expected[:, 20:] = 1
        np.testing.assert_array_equal(cleaned, expected)

    def test_large_regions_and_the_majority_of_the_border(self):
        labels = np.zeros((30, 30), np.int32)
        labels[:, 15:] = 1
        labels[10:13, 13:16] = 2  # 9 pixels straddling the 0/1 boundary
        cleaned = remove_small_regions(labels, 3, min_pixels=20)
        border = np.zeros((30, 30), bool)
        border[9:14, 12:17] = True
        border[10:13, 13:16] = False
        expected_label = np.bincount(labels[border]).argmax()
        assert (cleaned[10:13, 13:16] == expected_label).all()
        assert (cleaned[:, :13] == 0).all() and (cleaned[:, 16:] == 1).all()


def test_agreement_labels_find_the_sharp_source():
    sharp = synthesis.to_rgb(skimage.data.astronaut()).astype(np.float32)[:128, :128] / 255
    blurred = synthesis.blur(sharp * 255, 6) / 255
    left = np.concatenate([sharp[:, :64], blurred[:, 64:]], axis=1)
    right = np.concatenate([blurred[:, :64], sharp[:, 64:]], axis=1)
    labels = agreement_labels(sharp, [left, right], window=2)
    # Away from the split (where both are blurred by the kernel's reach), and on texture.
    assert (labels[:, :48] == 0).mean() > 0.9 and (labels[:, 80:] == 1).mean() > 0.9


def _synthetic_group(photo: np.ndarray, num_sources: int, seed: int):
    example = synthesis.synthesize_example(
        photo, rng=np.random.default_rng(seed), crop_size=192, num_sources=num_sources, radius_range=(3, 8)
    )
    return (
        [to_8bit(s) for s in example.sources],
        to_8bit(example.target),
        example.labels,
    )


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def _interior_accuracy(labels: np.ndarray, truth: np.ndarray, margin: int = 10) -> float:
    """Agreement with the true map at pixels farther than ``margin`` from its boundary."""
    boundary = np.zeros(truth.shape, np.uint8)
    boundary[:-1][truth[:-1] != truth[1:]] = 1
    boundary[:, :-1][truth[:, :-1] != truth[:, 1:]] = 1
    far = cv2.distanceTransform(1 - boundary, cv2.DIST_L2, 5) > margin
    return float((labels[far] == truth[far]).mean())


@pytest.mark.parametrize("num_sources", [2, 3])
def test_decision_map_fusion_beats_the_network_on_ground_truth(released_models, num_sources):
    model, _ = released_models["max"]
    # chelsea is not among the photos the settings were chosen on.
    sources, target, truth = _synthetic_group(skimage.data.chelsea(), num_sources, seed=3)
    fused, labels = fuse_with_focus_map(model, sources)
    network = ifcnn_jax.fuse(model, sources, "multifocus")
    assert fused.dtype == np.uint8 and fused.shape == target.shape
    assert set(np.unique(labels)) <= set(range(num_sources))
    assert _psnr(fused, target) > _psnr(network, target) + 3
    assert _interior_accuracy(labels, truth) > 0.95
    # decision_map=True of the public fuse is the same result.
    np.testing.assert_array_equal(ifcnn_jax.fuse(model, sources, "multifocus", decision_map=True), fused)


def test_tiled_and_untiled_maps_agree(released_models):
    model, _ = released_models["max"]
    sources, _, _ = _synthetic_group(skimage.data.coffee(), 2, seed=5)
    whole, whole_labels = fuse_with_focus_map(model, sources, tile=0)
    tiled, tiled_labels = fuse_with_focus_map(model, sources, tile=64)
    # The network's output agrees to float rounding under tiling; the map may flip only
    # where two sources agree with it equally well (flat areas), and the result with it.
    assert (whole_labels == tiled_labels).mean() > 0.999
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 2


def test_the_command_line_writes_the_result_and_the_map(release_dir, tmp_path):
    sources, _, truth = _synthetic_group(skimage.data.chelsea(), 2, seed=3)
    paths = [write_image(tmp_path / f"s{k}.png", s) for k, s in enumerate(sources)]
    command = [sys.executable, "-m", "ifcnn_jax.cli.fuse", "--task", "multifocus", "--model",
               str(release_dir / "snapshots" / "IFCNN-MAX.pth"), *map(str, paths), "-q"]  # fmt: skip
    done = subprocess.run(
        [*command, "-o", str(tmp_path / "f.png"), "--decision-map", "--focus-map", str(tmp_path / "map.png")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    focus_map = read_image(tmp_path / "map.png")
    assert set(np.unique(focus_map)) <= {0, 255}
    model = ifcnn_jax.load(str(release_dir / "snapshots" / "IFCNN-MAX.pth"))
    expected, labels = fuse_with_focus_map(model, sources)
    np.testing.assert_array_equal(read_image(tmp_path / "f.png"), expected)
    np.testing.assert_array_equal(focus_map, (labels * 255).astype(np.uint8))
    wrong = subprocess.run(
        [*command[:4], "infrared", *command[5:], "-o", str(tmp_path / "g.png"), "--decision-map"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert (
        wrong.returncode == 2
        and wrong.stderr.strip() == "error: --decision-map is for --task multifocus, not infrared"
    )
