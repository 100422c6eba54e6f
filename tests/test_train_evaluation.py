"""Validation scores and image grids of the training loop."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ifcnn_jax.figures import CAPTION_HEIGHT, PADDING, TITLE_HEIGHT
from train import evaluation


def luma(rgb):
    return np.asarray(rgb, np.float64) @ np.array([0.299, 0.587, 0.114])


def test_reference_scores_match_scikit_image():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    sources = np.clip(
        target[:, None].astype(np.int32) + rng.integers(-40, 41, (3, 2, 24, 24, 3)), 0, 255
    ).astype(np.uint8)
    fused = (np.clip(target + rng.normal(0, 5, target.shape), 0, 255) / 255).astype(np.float32)
    scores = evaluation.reference_scores(fused, sources, target)
    fused_8 = np.round(fused.astype(np.float64) * 255)
    average_8 = np.round(sources.astype(np.float64).mean(axis=1))
    for image, suffix in ((fused_8, ""), (average_8, "_average_baseline")):
        psnr = np.mean(
            [peak_signal_noise_ratio(luma(t), luma(f), data_range=255) for t, f in zip(target, image)]
        )
        ssim = np.mean(
            [
                structural_similarity(
                    luma(t),
                    luma(f),
                    data_range=255,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                )
                for t, f in zip(target, image)
            ]
        )
        # The tolerances of tests/test_metrics.py's scikit-image comparisons.
        assert abs(scores["psnr" + suffix] - psnr) <= 1e-6 * psnr
        assert abs(scores["ssim" + suffix] - ssim) <= 2e-6


def test_grid_shows_sources_average_fused_and_ground_truth(tmp_path):

    sources = np.zeros((2, 2, 8, 8, 3), np.uint8)
    sources[:, 1] = 200
    path = evaluation.write_grid(
        tmp_path / "g" / "grid.png",
        sources,
        np.full((2, 8, 8, 3), 50 / 255),
        np.full((2, 8, 8, 3), 60, np.uint8),
    )
    written = cv2.imread(str(path))[..., ::-1]
    h = evaluation.GRID_HEIGHT
    row = TITLE_HEIGHT + h + CAPTION_HEIGHT + PADDING
    assert written.shape == (PADDING + 2 * row, PADDING + 5 * (h + PADDING), 3)
    # Each cell, in order A, B, average, fused, ground truth, in both rows.
    for r in range(2):
        y = PADDING + r * row + TITLE_HEIGHT + h // 2
        for c, value in enumerate([0, 200, 100, 50, 60]):
            x = PADDING + c * (h + PADDING) + h // 2
            assert (written[y, x] == value).all(), (r, c)
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["grid.png"]
