"""Photometric augmentation of synthetic multi-focus examples (this project's choice).

The same random colour transform is applied to every source and to the ground truth
of an example, after the sources are synthesised. Each transform is a per-pixel
affine map of the RGB values (channel permutation, saturation about the BT.601
luminance, gain), and the blur is linear and per channel, so transforming the
synthesised example equals synthesising from the transformed photo, up to the final
clipping to 0-1 (which then happens after the blur, as a sensor clips after the
optics). It widens the colours and brightnesses seen in training beyond those of a
small photo collection: without it, models trained on a few dozen photos shifted
saturated colours they had not seen (see docs/training_notes.md).
"""

from __future__ import annotations

import numpy as np

# BT.601 luma weights, the luminance the metrics use.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def colour_transform(
    rng: np.random.Generator,
    *,
    saturation: tuple[float, float] = (0.5, 1.6),
    gain: tuple[float, float] = (0.6, 1.4),
    permute: bool = True,
) -> np.ndarray:
    """A random 3x3 matrix M acting on RGB row vectors (``x @ M``): a channel
    permutation (uniform over the 6, when ``permute``), then saturation s (uniform in
    ``saturation``; s=0 gives gray, s=1 no change), then gain g (log-uniform in
    ``gain``)."""
    matrix = np.eye(3, dtype=np.float32)
    if permute:
        matrix = matrix[:, rng.permutation(3)]
    s = float(rng.uniform(*saturation))
    # y + s (x - y) with y = x . LUMA, as a matrix on row vectors: s I + (1 - s) LUMA^T 1.
    sat = s * np.eye(3, dtype=np.float32) + (1.0 - s) * np.outer(LUMA, np.ones(3, np.float32))
    g = float(np.exp(rng.uniform(np.log(gain[0]), np.log(gain[1]))))
    return (matrix @ sat * g).astype(np.float32)


def augment_example(
    sources: np.ndarray, target: np.ndarray, rng: np.random.Generator, probability: float = 0.8
) -> tuple[np.ndarray, np.ndarray]:
    """With ``probability``, applies one :func:`colour_transform` to ``sources``
    (N, h, w, 3) and ``target`` (h, w, 3), float 0-1, and clips to 0-1."""
    if rng.random() >= probability:
        return sources, target
    matrix = colour_transform(rng)
    apply = lambda x: np.clip(np.asarray(x, np.float32) @ matrix, 0.0, 1.0)
    return apply(sources), apply(target)
