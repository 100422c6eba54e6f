"""Chen-Varshney's perceptual metric Qcv.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ifcnn_jax.metrics._common import (
    QCV_ALPHA,
    QCV_BLOCK,
    QCV_FREQ_SCALE,
    _as_group,
    _map_groups,
    _total,
)
from ifcnn_jax.metrics._information import _stretch_to_gray_levels


def _mannos_sakrison(h: int, w: int) -> np.ndarray:
    """The Mannos-Sakrison CSF ``2.6 (0.0192 + 0.144 r) exp(-(0.144 r)^1.1)`` for ``rfft2``.

    metricChen.m scales MATLAB's ``freqspace`` grid by W/8 and H/8, which leaves
    ``r = (distance from DC in FFT bins) / 4`` whatever the size. Rows in numpy FFT order,
    columns the ``w // 2 + 1`` non-negative frequencies (as for Qcb's filter).
    """
    fy = (np.arange(h) - h // 2) * (2.0 / h) * (h / QCV_FREQ_SCALE)
    fx = (np.arange(w) - w // 2) * (2.0 / w) * (w / QCV_FREQ_SCALE)
    r = np.sqrt(fx[None, :] ** 2 + fy[:, None] ** 2)
    csf = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))
    return np.fft.ifftshift(csf)[:, : w // 2 + 1]


def _sobel_magnitude_zero(x: jax.Array) -> jax.Array:
    """``sqrt(X^2 + Y^2)`` of ``filter2`` with the Sobel masks, 'same', zero padding."""
    p = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)])
    h, w = x.shape[-2:]

    def at(dy, dx):
        return p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    return jnp.sqrt(gx * gx + gy * gy)


def _block_sums(x: jax.Array) -> jax.Array:
    """Sums over ``QCV_BLOCK``-square blocks of ``(..., H, W)``, the image padded with zeros
    to a multiple of the block at the bottom and right (MATLAB ``blkproc``)."""
    h, w = x.shape[-2:]
    pad = [(0, 0)] * (x.ndim - 2) + [(0, -h % QCV_BLOCK), (0, -w % QCV_BLOCK)]
    x = jnp.pad(x, pad)
    hb, wb = x.shape[-2] // QCV_BLOCK, x.shape[-1] // QCV_BLOCK
    x = x.reshape(x.shape[:-2] + (hb, QCV_BLOCK, wb, QCV_BLOCK))
    return _total(jnp.swapaxes(x, -3, -2), 2)


def _qcv_core(srcs: jax.Array, fus: jax.Array) -> jax.Array:
    h, w = fus.shape
    stretched = jax.vmap(_stretch_to_gray_levels)(jnp.concatenate([srcs, fus[None]]))
    sources, fused = stretched[:-1], stretched[-1]
    saliency = _block_sums(_sobel_magnitude_zero(sources) ** QCV_ALPHA)  # (N, Hb, Wb)
    # CSF-filtered differences, in float64 as Qcb's filtering (the FFT's round-off is
    # absolute); real, since the filter is a real, even function of the FFT grid.
    with jax.enable_x64(True):
        spectrum = jnp.fft.rfft2((sources - fused[None]).astype(jnp.float64))
        csf = jnp.asarray(_mannos_sakrison(h, w), jnp.float64)
        filtered = jnp.fft.irfft2(spectrum * csf, s=(h, w)).astype(jnp.float32)
    distortion = _block_sums(filtered * filtered) / (QCV_BLOCK * QCV_BLOCK)
    return _total(jnp.sum(saliency * distortion, axis=0)) / _total(jnp.sum(saliency, axis=0))


@jax.jit
def qcv(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Qcv, Chen-Varshney's human-perception metric, >= 0, lower is better (0 when F
    equals every source).

    Each image is min-max stretched to 0..255 and rounded (as Qcb; a constant image
    becomes 0). Region saliency ``l_k(b) = sum_{p in b} g_k(p)^5`` over 16x16 blocks b,
    with ``g_k`` the Sobel gradient magnitude ('same', zero padding). The differences
    ``S_k - F`` are filtered in the frequency domain by the Mannos-Sakrison CSF
    ``2.6 (0.0192 + 0.144 r) exp(-(0.144 r)^1.1)`` (``r`` on metricChen.m's ``freqspace``
    grid scaled by size/8: FFT bins / 4), and ``D_k(b)`` is the block mean of the squared
    filtered difference. ``Qcv = sum_b sum_k l_k D_k / sum_b sum_k l_k``. Blocks at the
    bottom and right that the image does not fill are padded with zeros (``blkproc``), and
    their mean still divides by 256. The filtering is done in float64 (as Qcb's).
    NaN when every source is constant.
    Paper: H. Chen, P. K. Varshney, "A human perception inspired quality metric for image
    fusion based on regional information", Inf. Fusion 8 (2007). Agrees with Z. Liu's
    ``metricChen.m`` and VIFB's ``metricsQcv.m`` (alpha = 5, 16x16 windows, the
    Mannos-Sakrison filter); N sources extend the sums.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255 (scale-free).
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused)
    return _map_groups(_qcv_core, sources, fused)
