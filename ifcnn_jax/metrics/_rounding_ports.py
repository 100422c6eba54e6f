"""Suite variants whose value depends on the order of floating-point rounding, so they
are computed eagerly in NumPy, step by step as the public code does: Liu's Qy NaN rule
(``metricYang.m`` on Octave) and CDDFuse's scikit-image SSIM. Used by the tables of
:mod:`ifcnn_jax.metrics._conventions`.

Inputs as in ``ifcnn_jax.metrics``: gray images on 0-255, sources stacked ``(N, H, W)``."""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import numpy as np

from ifcnn_jax.metrics._common import QY_SIGMA, QY_WINDOW
from ifcnn_jax.metrics._ssim import qy

# ------------------------------------------------------------------------------- Liu


def _sequential_sum(terms: list[float]) -> float:
    total = 0.0
    for term in terms:
        total += term
    return total


def _metric_yang_window() -> np.ndarray:
    """``metricYang.m``'s ``fspecial('gaussian', 7, 1.5)`` divided by ``sum(sum(w))``, in
    float64 with the sums taken in order, as Octave does (the order decides whether a
    flat window's one-pass variance is exactly 0)."""
    offsets = np.arange(QY_WINDOW, dtype=np.float64) - (QY_WINDOW - 1) / 2
    taps = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * QY_SIGMA**2))
    for _ in range(2):  # fspecial normalises, then metricYang.m line 57 again
        taps = taps / _sequential_sum(taps.ravel(order="F").tolist())
    return taps.ravel(order="F")


_YANG_TAPS = _metric_yang_window()


def _fused_multiply_add(a: float, b: float, c: float) -> float:
    """``a * b + c`` rounded once (exact rational arithmetic, then the nearest float64)."""
    return float(Fraction(a) * Fraction(b) + Fraction(c))


def _one_pass_flat_variance(values: np.ndarray) -> np.ndarray:
    """``filter2(w, c.*c) - filter2(w, c).^2`` on 7x7 windows of the constant ``c``: the
    rounding residual that ``metricYang.m`` (lines 60-66) takes for the variance of a
    flat window, float64.

    Octave 7.3's ``conv2`` accumulates the taps in order with fused multiply-adds on
    images of the usual sizes (on very small ones, as 9x9, it multiplies and adds
    separately); this follows the fused path. Checked against Octave on 70x90 images for
    the 256 gray levels: identical, and 0 for 38 of them."""
    values = np.asarray(values, np.float64)
    levels, index = np.unique(values, return_inverse=True)
    residuals = np.empty(levels.shape, np.float64)
    for i, level in enumerate(levels.tolist()):
        mean = second = 0.0
        for tap in _YANG_TAPS.tolist():
            mean = _fused_multiply_add(tap, level, mean)
            second = _fused_multiply_add(tap, level * level, second)
        residuals[i] = second - mean * mean
    return residuals[index].reshape(values.shape)


def liu_qy(sources: jax.Array, fused: jax.Array) -> float:
    """Liu's ``metricYang.m``: Qy, but NaN where its weight ``s_A^2 / (s_A^2 + s_B^2)`` is 0/0.

    ``metricYang.m`` takes one-pass variances (lines 65-66). Where both sources are flat on
    a 7x7 window those are rounding residuals, and where the two residuals sum to exactly
    0 (both 0, e.g. zero backgrounds, or opposite) the weight is 0/0 (line 28); ``NaN .* 0``
    stays NaN, so the mean (line 34) is NaN. That test is made here with the residuals
    computed as Octave computes them (:func:`_one_pass_flat_variance`). Elsewhere the
    value is the default's (exact variances): windows where all three images are flat
    give rounding noise in the code, which is not imitated. Eager (NumPy for the test);
    ``sources`` ``(2, H, W)``, ``fused`` ``(H, W)``, 0-255, sides >= 7.
    """
    value = float(qy(sources, fused))
    flat_values = []
    flat_masks = []
    for source in np.asarray(sources, np.float64):
        windows = np.lib.stride_tricks.sliding_window_view(source, (QY_WINDOW, QY_WINDOW))
        flat_masks.append(windows.max(axis=(-2, -1)) == windows.min(axis=(-2, -1)))
        flat_values.append(windows[..., 0, 0])
    both_flat = flat_masks[0] & flat_masks[1]
    if both_flat.any():
        total = _one_pass_flat_variance(flat_values[0][both_flat]) + _one_pass_flat_variance(
            flat_values[1][both_flat]
        )
        if np.any(total == 0):
            return math.nan
    return value


# --------------------------------------------------------------------------- CDDFuse


def _box_mean_valid_float32(image: np.ndarray, size: int) -> np.ndarray:
    """``scipy.ndimage.uniform_filter(image, size)`` on float32, 'valid' part only.

    SciPy filters axis 0 then axis 1, accumulating in float64 and storing float32 after
    each axis; the 'valid' windows never reach the reflected border."""
    out = image
    for axis in (0, 1):
        n = out.shape[axis] - size + 1
        wide = out.astype(np.float64)
        acc = np.zeros_like(np.take(wide, range(n), axis=axis))
        for offset in range(size):
            acc = acc + np.take(wide, range(offset, offset + n), axis=axis)
        out = (acc / size).astype(np.float32)
    return out


_SKIMAGE_WINDOW = 7
_SKIMAGE_FLOAT_RANGE = 2.0  # skimage's dtype_range for float32 is (-1, 1)


def skimage_default_ssim(x: np.ndarray, y: np.ndarray) -> np.float32:
    """``skimage.metrics.structural_similarity(x, y)`` with its defaults on float32 images.

    scikit-image 0.19 (CDDFuse's requirements.txt pins 0.19.2) takes ``data_range`` from
    the dtype, 2 for float32 (-1..1), whatever the values: on 0-255 images the constants
    are ``(0.01 * 2)^2`` and ``(0.03 * 2)^2``, about 1/16000 of SSIM's. 7x7 uniform
    window, sample covariances (x 49/48), mean of the map without the 3-pixel border,
    all in float32 as skimage computes it (the one-pass ``E[x^2] - E[x]^2`` rounding is
    part of the value, so it is imitated). Eager NumPy; ``x``, ``y`` ``(H, W)``, 0-255.
    """
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    cov_norm = np.float32(_SKIMAGE_WINDOW**2 / (_SKIMAGE_WINDOW**2 - 1))
    c1 = np.float32((0.01 * _SKIMAGE_FLOAT_RANGE) ** 2)
    c2 = np.float32((0.03 * _SKIMAGE_FLOAT_RANGE) ** 2)
    ux, uy = _box_mean_valid_float32(x, _SKIMAGE_WINDOW), _box_mean_valid_float32(y, _SKIMAGE_WINDOW)
    uxx = _box_mean_valid_float32(x * x, _SKIMAGE_WINDOW)
    uyy = _box_mean_valid_float32(y * y, _SKIMAGE_WINDOW)
    uxy = _box_mean_valid_float32(x * y, _SKIMAGE_WINDOW)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    numerator = (np.float32(2) * ux * uy + c1) * (np.float32(2) * vxy + c2)
    denominator = (ux**2 + uy**2 + c1) * (vx + vy + c2)
    return (numerator / denominator).mean(dtype=np.float32)


def cddfuse_ssim_sum(sources: jax.Array, fused: jax.Array) -> float:
    """CDDFuse's ``Evaluator.SSIM``: ``sum_k ssim(F, S_k)`` with scikit-image's defaults
    (:func:`skimage_default_ssim`). Eager NumPy; sides >= 7."""
    srcs, fus = np.asarray(sources, np.float32), np.asarray(fused, np.float32)
    if min(fus.shape[-2:]) < _SKIMAGE_WINDOW:
        raise ValueError(f"skimage's SSIM needs sides >= {_SKIMAGE_WINDOW}, got {fus.shape[-2:]}")
    total = np.float32(0)
    for src in srcs:
        total = total + skimage_default_ssim(fus, src)
    return float(total)
