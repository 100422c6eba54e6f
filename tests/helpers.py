"""Small helpers shared by several test files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def random_sources(num_sources: int, batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Stacked float32 sources (N, B, H, W, 3) spanning the recipes' normalised range."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(num_sources, batch, height, width, 3)) * 1.5).astype(np.float32)


def max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def write_random_photos(
    folder: Path, count: int, size: tuple[int, int], *, prefix: str = "photo", seed: int = 0
) -> dict[str, np.ndarray]:
    """Writes ``count`` random RGB uint8 PNGs ``<prefix><i>.png`` of ``size`` (H, W) into
    ``folder`` (created); returns {stem: RGB array} in writing order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = {}
    for i in range(count):
        rgb = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        assert cv2.imwrite(str(folder / f"{prefix}{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        photos[f"{prefix}{i}"] = rgb
    return photos
