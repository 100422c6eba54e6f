"""Chen-Blum's perceptual metric Qcb.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ifcnn_jax.metrics._common import (
    QCB_A,
    QCB_F0,
    QCB_F1,
    QCB_FREQ_SCALE,
    QCB_P,
    QCB_Q,
    QCB_RADIUS,
    QCB_SIGMAS,
    QCB_Z,
    _as_group,
    _filter_same_zero,
    _map_groups,
    _mean,
    _safe_divide,
)
from ifcnn_jax.metrics._information import _stretch_to_gray_levels


def _qcb_csf(h: int, w: int) -> np.ndarray:
    """Chen-Blum's DoG contrast sensitivity filter for ``rfft2``, float64.

    metricChenBlum.m scales MATLAB's ``freqspace`` grid by W/30 and H/30, which leaves
    ``r = (distance from DC in FFT bins) / 15`` whatever the image size. Rows in numpy
    FFT order; columns the ``w // 2 + 1`` non-negative frequencies of ``rfft2`` (for
    even W the last is the Nyquist bin, ``freqspace``'s unpaired -W/2, the same value).
    """
    fy = (np.arange(h) - h // 2) * (2.0 / h) * (h / QCB_FREQ_SCALE)
    fx = (np.arange(w) - w // 2) * (2.0 / w) * (w / QCB_FREQ_SCALE)
    r = np.sqrt(fx[None, :] ** 2 + fy[:, None] ** 2)
    csf = np.exp(-((r / QCB_F0) ** 2)) - QCB_A * np.exp(-((r / QCB_F1) ** 2))
    return np.fft.ifftshift(csf)[:, : w // 2 + 1]


def _csf_filtered(images: jax.Array) -> jax.Array:
    """``ifft2(fft2(I) * S)`` of ``(M, H, W)`` images, computed in float64, as float32.

    The result is real: S is a real function of ``u^2 + v^2`` on a grid that is
    symmetric modulo the size (``freqspace``'s unpaired -N/2 is its own mirror image),
    so ``rfft2``/``irfft2`` give it exactly, without the round-off imaginary part of a
    complex ``ifft2``. Float64 because the FFT's round-off is absolute, about
    ``eps * max|I|`` at every pixel: where a scan has a zero background the filtered
    values fall far below float32's 1e-5 (in 0-255 units) and the local contrast
    ``G_2 * I / G_4 * I`` becomes a ratio of round-off; in float32 that moved Qcb by up
    to 6% on the release's MDDataset. Float32 is enough for the blurs that follow,
    since those sum small values with small weights (errors relative, not absolute).
    """
    h, w = images.shape[-2:]
    with jax.enable_x64(True):
        spectrum = jnp.fft.rfft2(images.astype(jnp.float64))
        filtered = jnp.fft.irfft2(spectrum * jnp.asarray(_qcb_csf(h, w), jnp.float64), s=(h, w))
        return filtered.astype(jnp.float32)


def _qcb_gaussian(sigma: float) -> np.ndarray:
    """1-D factor of metricChenBlum.m's unnormalised 31x31 Gaussian (sum ~1, not 1)."""
    x = np.arange(-QCB_RADIUS, QCB_RADIUS + 1, dtype=np.float64)
    return np.exp(-(x * x) / (2 * sigma * sigma)) / math.sqrt(2 * math.pi * sigma * sigma)


def _qcb_core(srcs: jax.Array, fus: jax.Array) -> jax.Array:
    images = jnp.concatenate([srcs, fus[None]], axis=0)
    images = jax.vmap(_stretch_to_gray_levels)(images)
    filtered = _csf_filtered(images)
    narrow = _filter_same_zero(filtered, _qcb_gaussian(QCB_SIGMAS[0]))
    wide = _filter_same_zero(filtered, _qcb_gaussian(QCB_SIGMAS[1]))
    contrast = jnp.abs(narrow / wide - 1.0)
    masked = contrast**QCB_P / (contrast**QCB_Q + QCB_Z)
    c_src, c_fus = masked[:-1], masked[-1][None]
    preservation = jnp.where(
        c_src < c_fus, c_src / jnp.where(c_fus > 0, c_fus, 1.0), _safe_divide(c_fus, c_src, 1.0)
    )
    saliency = c_src * c_src
    total = jnp.sum(saliency, axis=0, keepdims=True)
    weights = _safe_divide(saliency, total, 1.0 / srcs.shape[0])
    return _mean(jnp.sum(weights * preservation, axis=0))


@jax.jit
def qcb(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Qcb, Chen-Blum human-perception fusion metric, 0 to 1 (1 when all images equal).

    Each image is min-max stretched to 0..255 and rounded; filtered in the frequency
    domain by the DoG contrast sensitivity function ``S(r) = exp(-(r/f0)^2) -
    a exp(-(r/f1)^2)`` (f0=15.3870, f1=1.3456, a=0.7622; ``r`` as in metricChenBlum.m's
    ``freqspace`` grid scaled by size/30; this filtering in float64, see
    :func:`_csf_filtered`); local contrast ``C = |G_2 * I / G_4 * I - 1|`` with 31x31
    Gaussians (sigma 2 and 4, unnormalised, zero padding; the filtered image is real,
    where the MATLAB code carries a round-off imaginary part); masked contrast
    ``C' = C^3 / (C^2 + 1e-4)``; preservation ``Q_kF = min(C'_k, C'_F) / max(...)``;
    saliency weights ``l_k = C'_k^2 / sum_j C'_j^2``; ``Qcb = mean(sum_k l_k Q_kF)``.
    Where every C'_k is 0 the weights are 1/N; where C'_k = C'_F = 0, Q_kF = 1. NaN if an
    image is constant (its local contrast is 0/0, as in the original).
    Paper: Y. Chen, R. S. Blum, "A new automated quality assessment algorithm for image
    fusion", Image Vis. Comput. 27 (2009). Agrees with Z. Liu's ``metricChenBlum.m`` and
    VIFB's ``metricsQcb.m`` (N = 2); N sources extend the saliency weights.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255 (scale-free).
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused)
    return _map_groups(_qcb_core, sources, fused)
