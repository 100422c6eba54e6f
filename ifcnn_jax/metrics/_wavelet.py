"""Wang-Liu's multiscale metric Q_M on a two-level Haar wavelet pyramid.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ifcnn_jax.metrics._common import (
    QM_ALPHAS,
    QM_MIN_SIZE,
    _as_group,
    _map_groups,
    _total,
)


def _haar_level(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
    """One level of matlabPyrTools' ``buildWpyr(im, N, 'haar')`` on ``(..., H, W)``.

    The Haar filters ``[1 1] / sqrt(2)`` and ``[-1 1] / sqrt(2)`` (``modulateFlip``) are
    correlated with the pixel pairs (2k, 2k+1) of each axis (start 2, step 2: an odd last
    row or column is left out; the filter never leaves the image, so the 'reflect1' edges
    play no part), first down the columns, then along the rows. The two 1/sqrt(2)
    factors make 1/2, applied once at the end, so 0-255 integer images give exact
    coefficients in float32. Returns the low-pass image and the bands in the order
    ``buildWpyr`` stores them: (lohi, hilo, hihi), which metricPWW.m calls H, V, D."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    top, bottom = x[..., 0::2, :], x[..., 1::2, :]
    low, high = top + bottom, bottom - top  # down the columns (MATLAB's first dimension)

    def along_rows(y, sign):
        return (y[..., 1::2] + sign * y[..., 0::2]) / 2.0

    return along_rows(low, 1.0), (along_rows(high, 1.0), along_rows(low, -1.0), along_rows(high, -1.0))


def _qm_core(srcs: jax.Array, fus: jax.Array) -> jax.Array:
    low_s, low_f = srcs, fus
    value = 1.0
    for alpha in QM_ALPHAS:
        low_s, bands_s = _haar_level(low_s)
        low_f, bands_f = _haar_level(low_f)
        weight = sum(b * b for b in bands_s)  # (N, h, w)
        preserved = sum(jnp.exp(-jnp.abs(b - f[None])) for b, f in zip(bands_s, bands_f, strict=True))
        value = value * (jnp.sum(_total(preserved * weight)) / jnp.sum(_total(weight))) ** alpha
    return value


@jax.jit
def qm(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Q_M, Wang-Liu's multiscale edge-preservation metric (Haar, two levels), 0 to 3.

    On a two-level Haar wavelet decomposition (matlabPyrTools' ``buildWpyr``, see
    :func:`_haar_level`) of every image, with detail bands H, V, D per level s:
    weights ``W_k = H_k^2 + V_k^2 + D_k^2`` and edge preservation
    ``EP_k = exp(-|H_k - H_F|) + exp(-|V_k - V_F|) + exp(-|D_k - D_F|)`` per coefficient,
    ``Q_s = sum_k sum EP_k W_k / sum_k sum W_k`` and ``Q_M = Q_1^(2/3) Q_2^(1/3)``. The
    coefficients are in 0-255 units (no normalisation, as the code), so the value
    depends on the scale of the images; EP is a sum of three terms, so the maximum,
    reached when F's details equal every source's, is 3 (not 1).
    Paper: P.-W. Wang, B. Liu, "A novel image fusion metric based on multi-scale
    analysis", ICSP 2008. Agrees with Z. Liu's ``metricPWW.m`` (two sources, N = 2,
    alpha = (2/3, 1/3), Haar); N sources extend the sums. NaN when every source is
    constant (no weight).

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255, sides >= 4.
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, min_size=QM_MIN_SIZE)
    return _map_groups(_qm_core, sources, fused)
