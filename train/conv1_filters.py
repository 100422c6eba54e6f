"""A fixed conv1 filter bank for training without a pretrained ResNet-101.

The paper's conv1 is ImageNet ResNet-101's first layer: mostly smooth colour blobs and
oriented edge filters, frozen. Where those weights are not available (the offline
demo), a random frozen conv1 loses much of the input, and the network then learns
slowly. This bank is a deterministic stand-in with the same role, chosen so that no
information the later layers need is lost:

* 3 filters pass each colour channel of the centre pixel through (an identity);
* 49 filters are the complete 7x7 two-dimensional DCT-II basis on luminance (the local
  mean and every spatial frequency: the local sharpness a focus decision needs);
* 12 filters are the 6 lowest DCT frequencies of two colour-opponent channels
  (red-green and yellow-blue).

Every filter has unit L2 norm. This is this project's choice, not the paper's.
"""

from __future__ import annotations

import numpy as np

KERNEL_SIZE = 7
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601
OPPONENT_CHANNELS = (np.array([1.0, -1.0, 0.0]), np.array([1.0, 1.0, -2.0]))
OPPONENT_FREQUENCIES = ((0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (2, 0))


def dct_basis_1d(size: int = KERNEL_SIZE) -> np.ndarray:
    """Orthonormal DCT-II basis vectors as rows, ``(size, size)``: row u is frequency u."""
    n = np.arange(size)
    basis = np.cos(np.pi * (n[None, :] + 0.5) * n[:, None] / size)
    return basis / np.linalg.norm(basis, axis=1, keepdims=True)


def dct_filter_bank() -> np.ndarray:
    """The 64 conv1 filters described in the module docstring, HWIO ``(7, 7, 3, 64)``
    float32, for RGB inputs in the model's normalised space."""
    basis = dct_basis_1d()
    filters = []
    for channel in range(3):
        impulse = np.zeros((KERNEL_SIZE, KERNEL_SIZE, 3))
        impulse[KERNEL_SIZE // 2, KERNEL_SIZE // 2, channel] = 1.0
        filters.append(impulse)
    for u in range(KERNEL_SIZE):
        for v in range(KERNEL_SIZE):
            filters.append(np.outer(basis[u], basis[v])[:, :, None] * LUMA_WEIGHTS)
    for colour in OPPONENT_CHANNELS:
        for u, v in OPPONENT_FREQUENCIES:
            filters.append(np.outer(basis[u], basis[v])[:, :, None] * colour)
    bank = np.stack([f / np.linalg.norm(f) for f in filters], axis=-1)
    return bank.astype(np.float32)
