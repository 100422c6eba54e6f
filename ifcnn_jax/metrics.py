"""Image-fusion quality metrics in JAX, every definition written down.

Public fusion-metric scripts disagree (log base 2 or e in MI, SSIM summed or averaged
over the sources, 0-1 or 0-255 scaling, window sizes), so each function here states
its formula, the paper it comes from, and which public implementation it reproduces
(constants, windows, log base). ``docs/metrics.md`` collects the same facts.

Conventions
-----------
* Gray images on the **0-255 scale**, float32, shaped ``(..., H, W)``. Colour images
  are evaluated on their luminance (ITU-R BT.601, as OpenCV's RGB2GRAY): see
  :func:`luminance` and :func:`to_gray_255`.
* Sources are stacked on a leading axis, ``(N, ..., H, W)``, with the fused image
  ``(..., H, W)``. Leading batch axes ``...`` are optional; a batch gives the same
  values as one call per image. Every metric that has a natural N-source form takes
  any N >= 2; SCD and Qy are defined for exactly two sources.
* All functions are jit-compiled and jit-able (shapes are static, so shape errors are
  raised while tracing). NaN/inf can only be checked on concrete arrays: use
  :func:`evaluate`, the eager entry point that validates its inputs.
* Histogram metrics (EN, MI, NMI) bin values into 256 bins: a value ``v`` falls in bin
  ``clip(floor(v + 0.5), 0, 255)`` (MATLAB's rounding, so uint8-valued images give their
  exact 256-level histograms). Entropies use log base 2 (bits).
* Windowed statistics (SSIM, MS-SSIM, VIF, Qy) use 'valid' windows (no padding), as
  the MATLAB originals (``filter2(..., 'valid')``), and variances taken of differences
  from each window's centre pixel: in float32 the usual E[x^2] - E[x]^2 loses about
  0.03 (in 0-255^2 units) to cancellation, which matters for metrics whose constants
  are tiny (Qy: 2e-16; VIF: 1e-10), and flat windows must give exactly zero.
* Image-wide sums are pairwise (tree) sums, accurate to ~1e-7 relative in float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ifcnn_jax.errors import IFCNNError

GRAY_LEVELS = 256
PEAK = 255.0
# ITU-R BT.601 luma weights for R, G, B (OpenCV's RGB2GRAY).
BT601_WEIGHTS = (0.299, 0.587, 0.114)

# SSIM (Wang et al. 2004, ssim_index.m): 11x11 Gaussian window, sigma 1.5.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# MS-SSIM (Wang et al. 2003, msssim.m): five scales with these exponents.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SIZE = SSIM_WINDOW * 2 ** (len(MS_SSIM_WEIGHTS) - 1)  # 176, msssim.m's rule
# Qabf (Xydeas & Petrovic 2000) sigmoid constants; L is the exponent of the weights.
QABF_TG, QABF_KG, QABF_DG = 0.9994, -15.0, 0.5
QABF_TA, QABF_KA, QABF_DA = 0.9879, -22.0, 0.8
QABF_L = 1.0
# VIF (Sheikh & Bovik 2006, vifp_mscale.m): HVS noise variance and scales.
VIF_NOISE_VAR = 2.0
VIF_SCALES = 4
VIF_EPS = 1e-10
VIF_MIN_SIZE = 41  # the smallest side for which all four 'valid' scales are non-empty
# Qcb (Chen & Blum 2009, Liu's metricChenBlum.m).
QCB_F0, QCB_F1, QCB_A = 15.3870, 1.3456, 0.7622
QCB_P, QCB_Q, QCB_Z = 3.0, 2.0, 1e-4
QCB_SIGMAS = (2.0, 4.0)
QCB_RADIUS = 15
QCB_FREQ_SCALE = 30.0
# Qy (Yang et al. 2008, Liu's metricYang.m): SSIM with a 7x7 window and tiny constants.
QY_WINDOW = 7
QY_SIGMA = 1.5
QY_C = 2e-16
QY_THRESHOLD = 0.75
# FMI (Haghighat et al. 2011; fast FMI, Haghighat & Razian 2014).
FMI_WINDOW = 3
FMI_FEATURES = ("pixel", "gradient")


# --------------------------------------------------------------------------- helpers


def luminance(rgb: jax.Array | np.ndarray) -> jax.Array:
    """ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of ``(..., H, W, 3)`` RGB.

    Same scale in and out (0-255 in, 0-255 out), not rounded. Metrics evaluate colour
    images on this luminance; :func:`to_gray_255` rounds uint8 input like OpenCV.
    """
    rgb = jnp.asarray(rgb, jnp.float32)
    if rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise IFCNNError(f"luminance needs (..., H, W, 3) RGB, got shape {tuple(rgb.shape)}")
    return jnp.tensordot(rgb, jnp.asarray(BT601_WEIGHTS, jnp.float32), axes=([-1], [0]))


def to_gray_255(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Turns one ``(H, W)`` gray or ``(H, W, 3)`` RGB image into float32 gray, 0-255.

    uint8 RGB goes through OpenCV's RGB2GRAY (BT.601, rounded to integers, as the
    MATLAB suites' ``rgb2gray`` on uint8); uint16 is divided by 257 (65535 -> 255);
    float input must already be on the 0-255 scale (its RGB is weighted, not rounded).
    Raises ``IFCNNError`` naming ``name`` for other layouts or sample types.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise IFCNNError(f"{name}: expected an (H, W) gray or (H, W, 3) RGB image, "
                         f"got shape {image.shape}")
    if image.dtype == np.uint8 or image.dtype == np.uint16:
        if image.ndim == 3:
            import cv2  # OpenCV's fixed-point rounding is the reference for uint8 luma

            image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        gray = image.astype(np.float32)
        return gray / 257.0 if image.dtype == np.uint16 else gray
    if image.dtype.kind == "f":
        gray = image.astype(np.float32)
        if gray.ndim == 3:
            gray = gray @ np.asarray(BT601_WEIGHTS, np.float32)
        return gray
    raise IFCNNError(f"{name}: unsupported sample type {image.dtype} "
                     "(uint8, uint16 or float on the 0-255 scale)")


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """The 1-D factor of MATLAB's ``fspecial('gaussian', size, sigma)``, summing to 1.

    ``fspecial`` builds ``exp(-(x^2+y^2) / (2 sigma^2))`` on a ``size x size`` grid
    centred at 0 and normalises it; that is the outer product of this vector with
    itself. (Its cut-off below ``eps * max`` never triggers for the sizes used here.)
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _as_images(x: jax.Array | np.ndarray, what: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise IFCNNError(f"{what} must be shaped (..., H, W), got shape {tuple(x.shape)}")
    return x.astype(jnp.float32)


def _as_group(sources, fused, *, exactly: int | None = None,
              min_size: int = 1) -> tuple[jax.Array, jax.Array]:
    """Validates shapes (static, so this works under jit) and casts to float32."""
    sources = jnp.asarray(sources)
    fused = _as_images(fused, "the fused image")
    if sources.ndim != fused.ndim + 1:
        raise IFCNNError(f"sources must be stacked as (N, ..., H, W) around a fused image "
                         f"(..., H, W); got sources {tuple(sources.shape)} and fused "
                         f"{tuple(fused.shape)}")
    if sources.shape[1:] != fused.shape:
        raise IFCNNError(f"each source is {_shape_text(sources.shape[1:])} but the fused "
                         f"image is {_shape_text(fused.shape)}; sizes must match")
    n = sources.shape[0]
    if n < 2:
        raise IFCNNError(f"fusion metrics need at least 2 sources, got {n}")
    if exactly is not None and n != exactly:
        raise IFCNNError(f"this metric is defined for exactly {exactly} sources, got {n}")
    _check_min_size(fused.shape, min_size)
    return sources.astype(jnp.float32), fused


def _as_pair(x, y, what: tuple[str, str], min_size: int = 1) -> tuple[jax.Array, jax.Array]:
    x = _as_images(x, what[0])
    y = _as_images(y, what[1])
    if x.shape != y.shape:
        raise IFCNNError(f"{what[0]} is {_shape_text(x.shape)} but {what[1]} is "
                         f"{_shape_text(y.shape)}; sizes must match")
    _check_min_size(x.shape, min_size)
    return x, y


def _shape_text(shape: Sequence[int]) -> str:
    shape = tuple(int(s) for s in shape)
    text = f"{shape[-2]}x{shape[-1]} (HxW)"
    return text if len(shape) == 2 else f"{text} with batch shape {shape[:-2]}"


def _check_min_size(shape: Sequence[int], min_size: int) -> None:
    if min(shape[-2:]) < min_size:
        raise IFCNNError(f"image of {shape[-2]}x{shape[-1]} pixels is too small for this "
                         f"metric: both sides must be at least {min_size}")


def _map_images(core: Callable[[jax.Array], jax.Array], images: jax.Array) -> jax.Array:
    """Applies a per-image ``(H, W) -> ()`` function over the batch axes of (..., H, W)."""
    batch = images.shape[:-2]
    flat = images.reshape((-1,) + images.shape[-2:])
    return lax.map(core, flat).reshape(batch)


def _map_groups(core: Callable[[jax.Array, jax.Array], jax.Array], sources: jax.Array,
                fused: jax.Array) -> jax.Array:
    """Applies ``(N, H, W), (H, W) -> ()`` over the batch axes of a source group."""
    n = sources.shape[0]
    batch, hw = fused.shape[:-2], fused.shape[-2:]
    flat_sources = jnp.swapaxes(sources.reshape((n, -1) + hw), 0, 1)
    flat_fused = fused.reshape((-1,) + hw)
    return lax.map(lambda pair: core(*pair), (flat_sources, flat_fused)).reshape(batch)


def _over_sources(pair_core: Callable[[jax.Array, jax.Array], jax.Array], srcs: jax.Array,
                  fus: jax.Array) -> jax.Array:
    """``pair_core(S_k, F)`` for every source, compiled once (not once per source)."""
    return lax.map(lambda src: pair_core(src, fus), srcs)


def _total(x: jax.Array, axes: int = 2) -> jax.Array:
    """Sum over the last ``axes`` axes by pairwise (tree) addition.

    XLA's CPU reductions can accumulate sequentially: for a 48x64 image of equal
    values ``jnp.sum`` is off by 1e-5 relative; pairwise sums stay near 1e-7.
    """
    lead = x.shape[:x.ndim - axes]
    x = x.reshape(lead + (-1,))
    while x.shape[-1] > 1:
        if x.shape[-1] % 2:
            x = jnp.concatenate([x, jnp.zeros(lead + (1,), x.dtype)], axis=-1)
        x = x[..., 0::2] + x[..., 1::2]
    return x[..., 0]


def _mean(x: jax.Array, axes: int = 2) -> jax.Array:
    """Mean over the last ``axes`` axes, pairwise (see :func:`_total`)."""
    return _total(x, axes) / math.prod(x.shape[x.ndim - axes:])


def _safe_divide(num: jax.Array, den: jax.Array, where_zero: float | jax.Array) -> jax.Array:
    """``num / den``, with ``where_zero`` where ``den == 0`` (and no NaN gradients)."""
    zero = den == 0
    return jnp.where(zero, where_zero, num / jnp.where(zero, 1.0, den))


def _xlogx2(p: jax.Array) -> jax.Array:
    """``-p log2 |p|`` with 0 at p == 0 (the MATLAB suites' ``real(-p .* log2(p))``)."""
    nonzero = p != 0
    return jnp.where(nonzero, -p * jnp.log2(jnp.abs(jnp.where(nonzero, p, 1.0))), 0.0)


def _gray_bins(image: jax.Array) -> jax.Array:
    """Bin index 0..255 of each pixel: MATLAB-style rounding (half away from zero)."""
    return jnp.clip(jnp.floor(image + 0.5), 0, GRAY_LEVELS - 1).astype(jnp.int32)


def _entropy_of_counts(counts: jax.Array) -> jax.Array:
    p = counts / _total(counts, counts.ndim)
    return _total(_xlogx2(p), p.ndim)


def _histogram(bins: jax.Array) -> jax.Array:
    return jnp.bincount(bins.ravel(), length=GRAY_LEVELS).astype(jnp.float32)


def _joint_histogram(bins_a: jax.Array, bins_b: jax.Array) -> jax.Array:
    joint = bins_a.ravel() * GRAY_LEVELS + bins_b.ravel()
    counts = jnp.bincount(joint, length=GRAY_LEVELS * GRAY_LEVELS)
    return counts.reshape(GRAY_LEVELS, GRAY_LEVELS).astype(jnp.float32)


def _mutual_information_bits(bins_a: jax.Array, bins_b: jax.Array
                             ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(MI(a; b), H(a), H(b))`` in bits from a 256x256 joint histogram."""
    joint = _joint_histogram(bins_a, bins_b)
    h_a = _entropy_of_counts(jnp.sum(joint, axis=1))
    h_b = _entropy_of_counts(jnp.sum(joint, axis=0))
    h_ab = _entropy_of_counts(joint)
    return h_a + h_b - h_ab, h_a, h_b


def _correlate_valid_1d(x: jax.Array, weights: jax.Array, axis: int) -> jax.Array:
    """'valid' correlation of one axis with ``weights``, as a loop (quick to compile)."""
    k = weights.shape[0]
    size = x.shape[axis] - k + 1
    out_shape = x.shape[:axis] + (size,) + x.shape[axis + 1:]

    def step(i, acc):
        return acc + weights[i] * lax.dynamic_slice_in_dim(x, i, size, axis=axis)

    return lax.fori_loop(0, k, step, jnp.zeros(out_shape, weights.dtype))


def _filter_valid(x: jax.Array, taps: np.ndarray) -> jax.Array:
    """Separable correlation of the last two axes with ``outer(taps, taps)``, 'valid'."""
    weights = jnp.asarray(taps, jnp.float32)
    rows = _correlate_valid_1d(x.astype(jnp.float32), weights, x.ndim - 1)
    return _correlate_valid_1d(rows, weights, x.ndim - 2)


def _filter_same_zero(x: jax.Array, taps: np.ndarray) -> jax.Array:
    """MATLAB ``filter2(outer(taps, taps), x, 'same')``: zero padding, odd ``len(taps)``."""
    r = len(taps) // 2
    pad = [(0, 0)] * (x.ndim - 2) + [(r, r), (r, r)]
    return _filter_valid(jnp.pad(x, pad), taps)


def _local_moments(x: jax.Array, y: jax.Array, taps: np.ndarray
                   ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    """Weighted local means, variances and covariance of two (H, W) images.

    Weights ``outer(taps, taps)`` (summing to 1); 'valid' windows. Returns
    ``(mu_x, mu_y, var_x, var_y, cov_xy)``, each ``(H - k + 1, W - k + 1)``.

    The moments are taken of differences from the window's centre pixel, so a flat
    window gives exactly zero variance and float32 loses nothing to the cancellation of
    E[x^2] - E[x]^2 (about 0.03 on 0-255 images). Separably: a pass along the rows sums
    differences from each row segment's middle pixel; a pass down the columns moves
    those sums to the window's centre, using (x - c)^2 = (x - r)^2 + 2 (x - r)(r - c)
    + (r - c)^2. Both passes are loops of k steps, which XLA compiles quickly and runs
    at the same speed for every k (unrolled, its fusion choices vary widely with k).
    """
    k = len(taps)
    h, w = x.shape
    ho, wo = h - k + 1, w - k + 1
    c = k // 2
    weights = jnp.asarray(taps, jnp.float32)
    row_ref_x, row_ref_y = x[:, c:c + wo], y[:, c:c + wo]

    def along_rows(b, acc):
        dx = lax.dynamic_slice_in_dim(x, b, wo, axis=1) - row_ref_x
        dy = lax.dynamic_slice_in_dim(y, b, wo, axis=1) - row_ref_y
        tdx, tdy = weights[b] * dx, weights[b] * dy
        return (acc[0] + tdx, acc[1] + tdy, acc[2] + tdx * dx, acc[3] + tdy * dy,
                acc[4] + tdx * dy)

    rows = lax.fori_loop(0, k, along_rows, (jnp.zeros((h, wo), jnp.float32),) * 5)
    centre_x, centre_y = row_ref_x[c:c + ho], row_ref_y[c:c + ho]

    def down_columns(a, acc):
        s1x, s1y, s2x, s2y, sxy = (lax.dynamic_slice_in_dim(r, a, ho, axis=0) for r in rows)
        dx = lax.dynamic_slice_in_dim(row_ref_x, a, ho, axis=0) - centre_x
        dy = lax.dynamic_slice_in_dim(row_ref_y, a, ho, axis=0) - centre_y
        t = weights[a]
        return (acc[0] + t * (s1x + dx), acc[1] + t * (s1y + dy),
                # One expression for all three, so that x == y gives var == cov exactly.
                acc[2] + t * (s2x + s1x * dx + dx * (s1x + dx)),
                acc[3] + t * (s2y + s1y * dy + dy * (s1y + dy)),
                acc[4] + t * (sxy + s1x * dy + dx * (s1y + dy)))

    m1x, m1y, m2x, m2y, mxy = lax.fori_loop(0, k, down_columns,
                                            (jnp.zeros((ho, wo), jnp.float32),) * 5)
    return (centre_x + m1x, centre_y + m1y, m2x - m1x * m1x, m2y - m1y * m1y,
            mxy - m1x * m1y)


def _pearson(x: jax.Array, y: jax.Array) -> jax.Array:
    """Pearson correlation over all pixels of two (H, W) images (MATLAB ``corr2``)."""
    dx = x - _mean(x)
    dy = y - _mean(y)
    return _total(dx * dy) / jnp.sqrt(_total(dx * dx) * _total(dy * dy))


def _matlab_gradient(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """MATLAB ``[gx, gy] = gradient(x)``: central differences inside, one-sided at edges."""
    gx = jnp.concatenate([x[:, 1:2] - x[:, 0:1], (x[:, 2:] - x[:, :-2]) / 2.0,
                          x[:, -1:] - x[:, -2:-1]], axis=1)
    gy = jnp.concatenate([x[1:2] - x[0:1], (x[2:] - x[:-2]) / 2.0, x[-1:] - x[-2:-1]], axis=0)
    return gx, gy


# ------------------------------------------------------------------ image statistics


@jax.jit
def entropy(image: jax.Array) -> jax.Array:
    """EN, Shannon entropy of the gray-level histogram, bits.

    ``EN = -sum_l p_l log2 p_l`` over 256 bins (bin = ``floor(v + 0.5)`` clipped to
    0..255). 0 for a constant image, at most 8.
    Paper: J. W. Roberts, J. van Aardt, F. Ahmed, "Assessment of image fusion procedures
    using entropy, image quality, and multispectral classification", J. Appl. Remote
    Sens. 2 (2008). Agrees with VIFB ``metricsEntropy.m`` and Tang's Evaluation-for-
    Image-Fusion ``entropy`` (MATLAB ``entropy`` on uint8) on integer images.

    Args: ``image`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    image = _as_images(image, "the image")
    return _map_images(lambda im: _entropy_of_counts(_histogram(_gray_bins(im))), image)


@jax.jit
def standard_deviation(image: jax.Array) -> jax.Array:
    """SD, population standard deviation of the pixel values (0-255 units).

    ``SD = sqrt(mean((F - mean(F))^2))`` (divides by H*W). Paper: Y.-J. Rao, "In-fibre
    Bragg grating sensors", Meas. Sci. Technol. 8 (1997), as cited by VIFB. Agrees
    with VIFB ``metricsVariance.m`` (despite its name) and Tang's ``SD_evaluation.m``.

    Args: ``image`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    image = _as_images(image, "the image")
    deviation = image - _mean(image)[..., None, None]
    return jnp.sqrt(_mean(deviation * deviation))


@jax.jit
def spatial_frequency(image: jax.Array) -> jax.Array:
    """SF, spatial frequency ``sqrt(RF^2 + CF^2)`` (0-255 units).

    ``RF^2 = 1/(HW) sum_{i, j>=2} (F[i,j] - F[i,j-1])^2`` and
    ``CF^2 = 1/(HW) sum_{i>=2, j} (F[i,j] - F[i-1,j])^2``: both sums divided by H*W,
    as in the paper (A. M. Eskicioglu, P. S. Fisher, "Image quality measures and their
    performance", IEEE Trans. Commun. 43 (1995)) and VIFB ``metricsSpatial_frequency.m``.
    Tang's ``SF_evaluation.m`` takes the mean over the (H-1)W and H(W-1) differences
    instead, a factor of about sqrt(H/(H-1)) higher. 0 for a constant image.

    Args: ``image`` ``(..., H, W)``, 0-255, H and W >= 2. Returns ``(...)``.
    """
    image = _as_images(image, "the image")
    _check_min_size(image.shape, 2)
    h, w = image.shape[-2:]
    row = _total(jnp.square(jnp.diff(image, axis=-1)))
    col = _total(jnp.square(jnp.diff(image, axis=-2)))
    return jnp.sqrt((row + col) / (h * w))


@jax.jit
def average_gradient(image: jax.Array) -> jax.Array:
    """AG, average gradient (0-255 units per pixel).

    ``AG = 1/((H-1)(W-1)) sum_{all H*W pixels} sqrt((gx^2 + gy^2) / 2)`` with
    ``gx, gy`` from MATLAB's ``gradient`` (central differences, one-sided at the borders).
    The (H-1)(W-1) normaliser over H*W terms is the widely used code's, kept as is.
    Paper: G. Cui et al., "Detail preserved fusion of visible and infrared images using
    regional saliency extraction and multi-scale image decomposition", Opt. Commun. 341
    (2015). Agrees with VIFB ``metricsAvg_gradient.m`` and Tang's ``AG_evaluation.m``.
    0 for a constant image.

    Args: ``image`` ``(..., H, W)``, 0-255, H and W >= 2. Returns ``(...)``.
    """
    image = _as_images(image, "the image")
    _check_min_size(image.shape, 2)
    h, w = image.shape[-2:]

    def core(im):
        gx, gy = _matlab_gradient(im)
        return _total(jnp.sqrt((gx * gx + gy * gy) / 2.0)) / ((h - 1) * (w - 1))

    return _map_images(core, image)


# ------------------------------------------------------------- information measures


@jax.jit
def mutual_information(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """MI, sum over the sources of the mutual information with the fused image, bits.

    ``MI = sum_k [H(S_k) + H(F) - H(S_k, F)]``, entropies in bits from 256-bin (joint)
    histograms of the rounded values; no min-max stretch. Paper: G. Qu, D. Zhang, P. Yan,
    "Information measure for performance of image fusion", Electron. Lett. 38 (2002).
    Agrees with Tang's ``MI_evaluation.m`` (Qu's code, log2), except that uint8
    saturation there merges gray levels 254 and 255 in the joint histogram. VIFB's
    ``metricsMutinf.m`` differs: natural log (nats) after a min-max stretch.
    With F == S_1: ``MI = H(S_1) + sum_{k>1} MI(S_k, S_1)``.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused)

    def core(srcs, fus):
        bins_f = _gray_bins(fus)
        return jnp.sum(_over_sources(
            lambda src, _: _mutual_information_bits(_gray_bins(src), bins_f)[0], srcs, fus))

    return _map_groups(core, sources, fused)


def _stretch_to_gray_levels(image: jax.Array) -> jax.Array:
    """Liu's ``normalize1.m``: ``round((x - lo) / (hi - lo) * 255)``; constant -> zeros.

    Rounding is half up, decided exactly: XLA may divide by multiplying with a rounded
    reciprocal, which turns exact ties such as 121 * 255 / 242 = 127.5 into 127.4999
    (and Qcb, sensitive to single gray levels, moves by 1e-4). For integer images the
    candidate level k is corrected with exact integer-valued float32 products, so k is
    the largest integer with (2k - 1) * (hi - lo) <= 2 * (x - lo) * 255. (MATLAB's
    float64 lands just below a few ties, e.g. 3 / 10 * 255; those are not imitated.)
    """
    lo, hi = jnp.min(image), jnp.max(image)
    span = hi - lo
    safe_span = jnp.where(span > 0, span, 1.0)
    twice = 2.0 * (image - lo) * PEAK
    level = jnp.floor((image - lo) * PEAK / safe_span + 0.5)
    level = jnp.where((2.0 * level - 1.0) * safe_span > twice, level - 1.0, level)
    level = jnp.where((2.0 * level + 1.0) * safe_span <= twice, level + 1.0, level)
    return jnp.where(span > 0, level, 0.0)


@jax.jit
def normalized_mutual_information(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """NMI, Hossny's normalised mutual information (0 to N; 2 is the two-source maximum).

    ``NMI = 2 sum_k MI(S_k, F) / (H(S_k) + H(F))``, bits, 256-bin histograms after
    each image is min-max stretched to 0..255 and rounded (Liu's ``normalize1.m``; a
    constant image becomes 0). Paper: M. Hossny, S. Nahavandi, D. Creighton, "Comments
    on 'Information measure for performance of image fusion'", Electron. Lett. 44
    (2008). Agrees with Z. Liu's ``metricMI.m`` (sw=1) of imageFusionMetrics, as used by
    MEFB ``metricsNMI.m``.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused)

    def core(srcs, fus):
        bins_f = _gray_bins(_stretch_to_gray_levels(fus))

        def pair(src, _):
            mi, h_s, h_f = _mutual_information_bits(
                _gray_bins(_stretch_to_gray_levels(src)), bins_f)
            return _safe_divide(mi, h_s + h_f, jnp.nan)

        return 2.0 * jnp.sum(_over_sources(pair, srcs, fus))

    return _map_groups(core, sources, fused)


def _fmi_feature(image: jax.Array, feature: str) -> jax.Array:
    if feature == "pixel":
        return image
    if feature == "gradient":
        return _matlab_gradient(image)[0]  # fmi.m's gradient(ima): the x derivative only
    raise IFCNNError(f"unknown FMI feature {feature!r}; choose one of {FMI_FEATURES}")


def _window_values(x: jax.Array, size: int) -> jax.Array:
    """(size*size, Ho, Wo) values of each 'valid' window, in MATLAB's column-major order.

    The window position is the leading axis so that the pixel axis stays minor, where
    the CPU vectorises."""
    h, w = x.shape
    ho, wo = h - size + 1, w - size + 1
    return jnp.stack([x[r:r + ho, c:c + wo] for c in range(size) for r in range(size)])


def _window_pdf(values: jax.Array) -> jax.Array:
    """fmi.m: min-max to [0, 1] (a flat window becomes ones), then divide by the sum."""
    lo = jnp.min(values, axis=0, keepdims=True)
    hi = jnp.max(values, axis=0, keepdims=True)
    flat = hi == lo
    scaled = jnp.where(flat, 1.0, (values - lo) / jnp.where(flat, 1.0, hi - lo))
    return scaled / jnp.sum(scaled, axis=0, keepdims=True)


def _pdf_std(pdf: jax.Array) -> jax.Array:
    index = jnp.arange(1, pdf.shape[0] + 1, dtype=jnp.float32).reshape(
        (-1,) + (1,) * (pdf.ndim - 1))
    mean = jnp.sum(index * pdf, axis=0)
    second = jnp.sum(index * index * pdf, axis=0)
    return jnp.sqrt(jnp.maximum(second - mean * mean, 0.0))


def _box_differences(cdf_bound: jax.Array) -> jax.Array:
    """Probability mass of each cell of a bivariate CDF given on the (i, j, ...) grid."""
    padded = jnp.pad(cdf_bound, [(1, 0), (1, 0)] + [(0, 0)] * (cdf_bound.ndim - 2))
    return padded[1:, 1:] - padded[:-1, 1:] - padded[1:, :-1] + padded[:-1, :-1]


def _fmi_windows(src: jax.Array, fus: jax.Array) -> jax.Array:
    """Normalised feature MI of corresponding windows ``(l, ...)`` of a source and F."""
    equal = jnp.all(src == fus, axis=0)
    p_s, p_f = _window_pdf(src), _window_pdf(fus)
    cdf_s, cdf_f = jnp.cumsum(p_s, axis=0), jnp.cumsum(p_f, axis=0)
    centred_s = p_s - jnp.mean(p_s, axis=0, keepdims=True)
    centred_f = p_f - jnp.mean(p_f, axis=0, keepdims=True)
    cov = jnp.sum(centred_s * centred_f, axis=0)
    norm = jnp.sqrt(jnp.sum(centred_s ** 2, axis=0) * jnp.sum(centred_f ** 2, axis=0))
    corr = jnp.where(cov == 0, 0.0, cov / jnp.where(norm > 0, norm, 1.0))
    sd_s, sd_f = _pdf_std(p_s), _pdf_std(p_f)
    # Axis 0 follows F's window positions (i), axis 1 the source's (j), as in fmi.m.
    cf, cs = cdf_f[:, None], cdf_s[None, :]
    independent = cf * cs
    positive = corr >= 0
    bound = jnp.where(positive, jnp.minimum(cf, cs),       # Frechet upper bound copula
                      jnp.maximum(cf + cs - 1.0, 0.0))     # Frechet lower bound copula
    bound_cov = jnp.sum(bound - independent, axis=(0, 1))
    sd_product = sd_f * sd_s
    bound_corr = bound_cov / jnp.where(sd_product > 0, sd_product, 1.0)
    degenerate = (corr == 0) | (sd_product == 0) | (bound_corr == 0)
    mix = jnp.where(degenerate, 0.0, corr / jnp.where(bound_corr == 0, 1.0, bound_corr))
    joint = mix * _box_differences(bound) + (1.0 - mix) * p_f[:, None] * p_s[None, :]
    joint_entropy = jnp.sum(_xlogx2(joint), axis=(0, 1))
    h_s = jnp.sum(_xlogx2(p_s), axis=0)
    h_f = jnp.sum(_xlogx2(p_f), axis=0)
    mi = h_s + h_f - joint_entropy
    fmi = jnp.where(mi == 0, 0.0, 2.0 * mi / jnp.where(h_s + h_f > 0, h_s + h_f, 1.0))
    return jnp.where(equal, 1.0, fmi)


_FMI_ROWS_PER_STEP = 8


def _window_rows(feature_map: jax.Array) -> jax.Array:
    """(rows, 9, Wo) window values, rows padded with zeros to a multiple of the step
    (so that ``lax.map`` compiles no remainder; the padding is dropped afterwards)."""
    rows = jnp.swapaxes(_window_values(feature_map, FMI_WINDOW), 0, 1)
    extra = -rows.shape[0] % _FMI_ROWS_PER_STEP
    return jnp.pad(rows, ((0, extra), (0, 0), (0, 0)))


@functools.partial(jax.jit, static_argnames=("feature",))
def feature_mutual_information(sources: jax.Array, fused: jax.Array,
                               feature: str = "pixel") -> jax.Array:
    """FMI, feature mutual information (fast FMI, 3x3 windows), 0 to 1.

    Per 3x3 'valid' window and source: both windows' feature values are min-max scaled
    to [0, 1] (a flat window becomes ones) and divided by their sum, giving marginal
    PDFs over the 9 positions (MATLAB column-major order); the joint PDF is Nelsen's
    mix of the independent and the Frechet bound copulas, weighted by the PDFs' Pearson
    correlation over the bound's correlation; ``FMI_w = 2 MI / (H_S + H_F)`` (bits),
    and 1 when the raw windows are equal. The result is the mean over windows of the
    mean over the sources.

    ``feature``: ``"pixel"`` (raw values, fmi.m's ``'none'``) or ``"gradient"`` (fmi.m's
    ``gradient(im)``, which is MATLAB's horizontal derivative only).
    Papers: M. B. A. Haghighat, A. Aghagolzadeh, H. Seyedarabi, "A non-reference image
    fusion metric based on mutual information of image features", Comput. Electr. Eng.
    37 (2011); M. Haghighat, M. A. Razian, "Fast-FMI", AICT 2014. Agrees with
    Haghighat's ``fmi.m`` (window 3) as shipped in Tang's ``analysis_fmi.m``; note that
    Tang's "FMI_pixel" calls it with the default feature, which there is ``'edge'``.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255 (the value is
    scale-free). Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, min_size=FMI_WINDOW)

    def core(srcs, fus):
        f_rows = _window_rows(_fmi_feature(fus, feature))
        n_rows = fus.shape[0] - FMI_WINDOW + 1

        def pair(src, _):
            s_rows = _window_rows(_fmi_feature(src, feature))
            # A few rows of windows at a time keep the (9, 9, ...) temporaries small.
            rows = lax.map(lambda both: _fmi_windows(*both), (s_rows, f_rows),
                           batch_size=_FMI_ROWS_PER_STEP)
            return _mean(rows[:n_rows])

        return jnp.mean(_over_sources(pair, srcs, fus))

    return _map_groups(core, sources, fused)


# ------------------------------------------------------------------- edge / structure


def _sobel_strength_orientation(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sobel edge strength and orientation with zero padding (MATLAB conv2 'same')."""
    p = jnp.pad(x, 1)
    h, w = x.shape

    def at(dy, dx):
        return p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    # conv2 flips both kernels, negating both responses: strength and atan(sy/sx) are
    # unchanged, so plain correlation gives the same values.
    sx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    sy = (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1)) - (at(1, -1) + 2 * at(1, 0) + at(1, 1))
    strength = jnp.sqrt(sx * sx + sy * sy)
    orientation = jnp.where(sx == 0, jnp.pi / 2, jnp.arctan(sy / jnp.where(sx == 0, 1.0, sx)))
    return strength, orientation


@functools.partial(jax.jit, static_argnames=("matlab_ties",))
def qabf(sources: jax.Array, fused: jax.Array, matlab_ties: bool = False) -> jax.Array:
    """Q^AB/F, Xydeas-Petrovic edge-information preservation, 0 to ~0.975.

    Sobel strength ``g`` and orientation ``a = atan(sy / sx)`` (pi/2 where sx = 0), zero
    padding. Per source k: ``G = min(g_k, g_F) / max(g_k, g_F)`` (1 where equal),
    ``A = 1 - |a_k - a_F| / (pi/2)``, ``Q^kF = Tg / (1 + e^{kg (G - Dg)}) *
    Ta / (1 + e^{ka (A - Da)})`` with Tg=0.9994, kg=-15, Dg=0.5, Ta=0.9879, ka=-22,
    Da=0.8; ``Qabf = sum_k sum Q^kF g_k^L / sum_k sum g_k^L`` with L=1. With all images
    equal it is ``Q^kF(G=1, A=1) = 0.974794``, the maximum for these constants.
    Paper: C. S. Xydeas, V. Petrovic, "Objective image fusion performance measure",
    Electron. Lett. 36 (2000). Agrees with VIFB ``metricsQabf.m`` and Tang's
    ``analysis_Qabf.m`` up to one branch: where ``g_k == g_F`` exactly, that code sets
    ``G = g_F`` instead of 1. On 0-255 images (``g_F`` 0 or >= 1 at ties) this raises
    Q^kF at tied pixels by at most 5.5e-4 (so the score by at most 5.5e-4); on a 0-1
    scale ``g_F`` < 0.5 at most ties and the score collapses: the "0-1 vs 0-255" trap.
    With G = 1 at ties (default) the metric is scale-free; ``matlab_ties=True``
    reproduces the MATLAB branch, for 0-255 input only.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255.
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused)

    def core(srcs, fus):
        g_f, a_f = _sobel_strength_orientation(fus)

        def pair(src, _):
            g_s, a_s = _sobel_strength_orientation(src)
            hi, lo = jnp.maximum(g_s, g_f), jnp.minimum(g_s, g_f)
            strength = jnp.where(hi == lo, g_f if matlab_ties else 1.0,
                                 lo / jnp.where(hi > 0, hi, 1.0))
            angle = 1.0 - jnp.abs(a_s - a_f) / (jnp.pi / 2)
            q = (QABF_TG / (1.0 + jnp.exp(QABF_KG * (strength - QABF_DG)))
                 * QABF_TA / (1.0 + jnp.exp(QABF_KA * (angle - QABF_DA))))
            weight = g_s ** QABF_L
            return jnp.stack([_total(q * weight), _total(weight)])

        num, den = jnp.sum(_over_sources(pair, srcs, fus), axis=0)
        return num / den

    return _map_groups(core, sources, fused)


@jax.jit
def scd(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """SCD, sum of the correlations of differences, -2 to 2 (two sources only).

    ``SCD = r(F - S_2, S_1) + r(F - S_1, S_2)``, ``r`` the Pearson correlation over all
    pixels (MATLAB ``corr2``). With F = S_1 + S_2 it is 2. The definition needs exactly
    one "other" source, so N must be 2. NaN if a source or F - S_k is constant.
    Paper: V. Aslantas, E. Bendes, "A new image quality metric for image fusion: the sum
    of the correlations of differences", AEU Int. J. Electron. Commun. 69 (2015).
    Agrees with Tang's ``analysis_SCD.m`` (Bendes's code).

    Args: ``sources`` ``(2, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, exactly=2)

    def core(srcs, fus):
        a, b = srcs[0], srcs[1]
        return _pearson(fus - b, a) + _pearson(fus - a, b)

    return _map_groups(core, sources, fused)


@jax.jit
def correlation_coefficient(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """CC, mean over the sources of the Pearson correlation with the fused image, -1 to 1.

    ``CC = mean_k r(S_k, F)`` over all pixels. Agrees with Tang's ``CC_evaluation.m``
    (whose ``mean(A)`` in rBF does not change the value, since F's deviations sum to 0).
    NaN if F or a source is constant.
    Used as in J. Ma et al., "Infrared and visible image fusion methods and
    applications: a survey", Inf. Fusion 45 (2019).

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused)
    return _map_groups(lambda srcs, fus: jnp.mean(_over_sources(_pearson, srcs, fus)),
                       sources, fused)


@jax.jit
def psnr_fusion(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Fusion PSNR in dB: ``10 log10(255^2 / mean_k MSE(S_k, F))``, MSE on 0-255.

    The formula of the VIFB paper (X. Zhang, P. Ye, G. Xiao, "VIFB: a visible and
    infrared image fusion benchmark", CVPRW 2020; after P. Jagalingam, A. V. Hegde,
    Aquatic Procedia 4 (2015)). The released codes deviate: VIFB's ``metricsPsnr.m``
    uses ``sqrt(sum of squares) / (HW)`` in place of the MSE, and Tang's
    ``PSNR_evaluation.m`` takes the MSE on a 0-1 scale with peak 255 (+48.13 dB).
    Infinite when F equals every source.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused)
    mse = jnp.mean(_mean(jnp.square(sources - fused[None])), axis=0)
    return 10.0 * jnp.log10(PEAK * PEAK / mse)


# ----------------------------------------------------------------------- SSIM family


def _ssim_maps(x: jax.Array, y: jax.Array, taps: np.ndarray, c1: float, c2: float
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """SSIM and contrast-structure maps ('valid'), with both local variances."""
    mu_x, mu_y, var_x, var_y, cov = _local_moments(x, y, taps)
    luminance_term = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    return luminance_term * cs, cs, var_x, var_y


_SSIM_TAPS = gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
_SSIM_C1 = (SSIM_K1 * PEAK) ** 2
_SSIM_C2 = (SSIM_K2 * PEAK) ** 2


def _ssim_core(x: jax.Array, y: jax.Array) -> jax.Array:
    return _mean(_ssim_maps(x, y, _SSIM_TAPS, _SSIM_C1, _SSIM_C2)[0])


def _downsample2(x: jax.Array) -> jax.Array:
    """msssim.m: 2x2 mean ('symmetric' edges, so odd sides repeat the last row/column),
    then every other pixel: ``ceil(H/2) x ceil(W/2)``."""
    h, w = x.shape
    x = jnp.pad(x, ((0, h % 2), (0, w % 2)), mode="edge")
    return x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).mean(axis=(1, 3))


def _ms_ssim_core(x: jax.Array, y: jax.Array) -> jax.Array:
    value = 1.0
    last = len(MS_SSIM_WEIGHTS) - 1
    for level, weight in enumerate(MS_SSIM_WEIGHTS):
        ssim_map, cs_map, _, _ = _ssim_maps(x, y, _SSIM_TAPS, _SSIM_C1, _SSIM_C2)
        # Negative per-scale means would make the fractional power undefined.
        factor = _mean(ssim_map) if level == last else _mean(cs_map)
        value = value * jnp.maximum(factor, 0.0) ** weight
        if level != last:
            x, y = _downsample2(x), _downsample2(y)
    return value


@jax.jit
def ssim(x: jax.Array, y: jax.Array) -> jax.Array:
    """SSIM of two images, -1 to 1 (1 when equal).

    ``SSIM = mean over 'valid' windows of (2 mu_x mu_y + C1)(2 s_xy + C2) /
    ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``, 11x11 Gaussian window (sigma 1.5,
    normalised), ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, no downsampling.
    Paper: Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality
    assessment: from error visibility to structural similarity", IEEE TIP 13 (2004).
    Agrees with Wang's ``ssim_index.m``, VIFB's ``metricsSsim.m`` per pair, and
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)``. (MATLAB's built-in ``ssim`` on
    double 0-255 input, as Tang's suite calls it, uses a dynamic range of 1 instead.)

    Args: ``x``, ``y`` ``(..., H, W)``, 0-255, sides >= 11. Returns ``(...)``.
    """
    x, y = _as_pair(x, y, ("the first image", "the second image"), SSIM_WINDOW)
    return _map_groups(lambda xs, ys: _ssim_core(xs[0], ys), x[None], y)


@jax.jit
def ms_ssim(x: jax.Array, y: jax.Array) -> jax.Array:
    """MS-SSIM of two images, 0 to 1 (1 when equal).

    ``MS-SSIM = SSIM_5^{w_5} prod_{j<5} CS_j^{w_j}``, w = (0.0448, 0.2856, 0.3001,
    0.2363, 0.1333); CS_j the mean contrast-structure term at scale j and SSIM_5 the
    mean SSIM at the coarsest scale, each with the SSIM window and constants of
    :func:`ssim`; between scales a 2x2 mean then every other pixel. A negative
    per-scale mean is clipped to 0 (as TensorFlow and pytorch-msssim do).
    Paper: Z. Wang, E. P. Simoncelli, A. C. Bovik, "Multiscale structural similarity for
    image quality assessment", Asilomar 2003. Agrees with Wang's ``msssim.m``, including
    its size rule: both sides >= 11 * 2^4 = 176, otherwise ``IFCNNError``.

    Args: ``x``, ``y`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    x, y = _as_pair(x, y, ("the first image", "the second image"), MS_SSIM_MIN_SIZE)
    return _map_groups(lambda xs, ys: _ms_ssim_core(xs[0], ys), x[None], y)


def _per_source(core: Callable[[jax.Array, jax.Array], jax.Array], reduce: str
                ) -> Callable[[jax.Array, jax.Array], jax.Array]:
    if reduce not in ("mean", "sum"):
        raise IFCNNError(f"reduce must be 'mean' or 'sum', got {reduce!r}")

    def group(srcs, fus):
        values = _over_sources(core, srcs, fus)
        return jnp.mean(values) if reduce == "mean" else jnp.sum(values)

    return group


@functools.partial(jax.jit, static_argnames=("reduce",))
def ssim_fusion(sources: jax.Array, fused: jax.Array, reduce: str = "mean") -> jax.Array:
    """SSIM of the fused image against each source, averaged or summed.

    ``reduce="mean"``: ``mean_k SSIM(S_k, F)`` (0.5 SSIM_A + 0.5 SSIM_B, as Tang's
    ``analysis_Reference.m``), at most 1. ``reduce="sum"``: ``sum_k SSIM(S_k, F)``, as
    VIFB's ``metricsSsim.m`` (SSIM_A + SSIM_B), at most N. SSIM as in :func:`ssim`.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255, sides >= 11.
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, min_size=SSIM_WINDOW)
    return _map_groups(_per_source(_ssim_core, reduce), sources, fused)


@functools.partial(jax.jit, static_argnames=("reduce",))
def ms_ssim_fusion(sources: jax.Array, fused: jax.Array, reduce: str = "mean") -> jax.Array:
    """MS-SSIM of the fused image against each source, averaged (max 1) or summed (max N).

    MS-SSIM as in :func:`ms_ssim` (Wang's 5-scale form). Tang's suite reports the MEF-SSIM
    of Ma et al. (3 scales, one score against the whole source sequence) under the name
    MS_SSIM; that is a different metric.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255, sides >= 176.
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, min_size=MS_SSIM_MIN_SIZE)
    return _map_groups(_per_source(_ms_ssim_core, reduce), sources, fused)


_QY_TAPS = gaussian_window(QY_WINDOW, QY_SIGMA)


@jax.jit
def qy(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Qy, Yang's SSIM-based fusion metric, at most 1 (two sources only).

    With ``s(x, y)`` the SSIM map of a 7x7 Gaussian window (sigma 1.5), C1 = C2 = 2e-16,
    'valid': where ``s(A, B) >= 0.75``, ``Q = l s(A, F) + (1 - l) s(B, F)`` with
    ``l = s_A^2 / (s_A^2 + s_B^2)`` (local variances; 1/2 where both are 0); elsewhere
    ``Q = max(s(A, F), s(B, F))``. ``Qy = mean(Q)``.
    Paper: C. Yang, J.-Q. Zhang, X.-R. Wang, X. Liu, "A novel similarity based quality
    metric for image fusion", Inf. Fusion 9 (2008). Agrees with Z. Liu's
    ``metricYang.m`` (imageFusionMetrics) wherever no 7x7 window is flat: with constants
    of 2e-16, the one-pass variances there turn rounding noise of flat windows into
    arbitrary structure terms, where the exact variances used here give 1.

    Args: ``sources`` ``(2, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255, sides >= 7.
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, exactly=2, min_size=QY_WINDOW)

    def core(srcs, fus):
        a, b = srcs[0], srcs[1]
        # The three SSIM maps (A, B), (A, F), (B, F) share one compiled computation.
        maps, _, var_x, var_y = lax.map(
            lambda xy: _ssim_maps(xy[0], xy[1], _QY_TAPS, QY_C, QY_C),
            (jnp.stack([a, a, b]), jnp.stack([b, fus, fus])))
        s_ab, s_af, s_bf = maps[0], maps[1], maps[2]
        var_a, var_b = var_x[0], var_y[0]
        weight = _safe_divide(var_a, var_a + var_b, 0.5)
        similar = weight * s_af + (1.0 - weight) * s_bf
        return _mean(jnp.where(s_ab >= QY_THRESHOLD, similar, jnp.maximum(s_af, s_bf)))

    return _map_groups(core, sources, fused)


# ------------------------------------------------------------------------------ VIF


def _vifp_core(ref: jax.Array, dist: jax.Array) -> jax.Array:
    """LIVE's ``vifp_mscale.m``: pixel-domain VIF over 4 scales, ``sum num / sum den``."""
    num = 0.0
    den = 0.0
    for scale in range(1, VIF_SCALES + 1):
        size = 2 ** (VIF_SCALES - scale + 1) + 1
        taps = gaussian_window(size, size / 5.0)
        if scale > 1:
            ref = _filter_valid(ref, taps)[::2, ::2]
            dist = _filter_valid(dist, taps)[::2, ::2]
        _, _, var_r, var_d, cov = _local_moments(ref, dist, taps)
        var_r = jnp.maximum(var_r, 0.0)
        var_d = jnp.maximum(var_d, 0.0)
        gain = cov / (var_r + VIF_EPS)
        noise = var_d - gain * cov
        # The order of these corrections is vifp_mscale.m's.
        flat_ref = var_r < VIF_EPS
        gain = jnp.where(flat_ref, 0.0, gain)
        noise = jnp.where(flat_ref, var_d, noise)
        var_r = jnp.where(flat_ref, 0.0, var_r)
        flat_dist = var_d < VIF_EPS
        gain = jnp.where(flat_dist, 0.0, gain)
        noise = jnp.where(flat_dist, 0.0, noise)
        negative = gain < 0
        noise = jnp.where(negative, var_d, noise)
        gain = jnp.maximum(gain, 0.0)
        noise = jnp.maximum(noise, VIF_EPS)
        num = num + _total(jnp.log10(1.0 + gain * gain * var_r / (noise + VIF_NOISE_VAR)))
        den = den + _total(jnp.log10(1.0 + var_r / VIF_NOISE_VAR))
    return num / den


@jax.jit
def vif(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """VIF for fusion: sum over the sources of the pixel-domain VIF of F against S_k.

    ``VIF = sum_k VIFp(S_k, F)``; VIFp is the multi-scale pixel-domain VIF: at 4 scales
    (Gaussian windows 17, 9, 5, 3 with sigma = size/5; from scale 2 on, each image is
    filtered 'valid' with that scale's window and decimated by 2), a Gaussian scalar
    GSM channel ``F = g S + v`` is fitted per window and
    ``VIFp = sum log10(1 + g^2 s_S^2 / (s_v^2 + 2)) / sum log10(1 + s_S^2 / 2)``, with
    vifp_mscale.m's guards at 1e-10. Equal images give 1 per source (N in all).
    Papers: H. R. Sheikh, A. C. Bovik, "Image information and visual quality", IEEE TIP
    15 (2006). Agrees with LIVE's ``vifp_mscale.m`` summed over the sources, as Tang's
    ``analysis_Reference.m`` does. Not VIFF (Y. Han et al., Inf. Fusion 14 (2013)).
    NaN when a source is constant (no information to preserve).

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255, sides >= 41.
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, min_size=VIF_MIN_SIZE)
    return _map_groups(lambda srcs, fus: jnp.sum(_over_sources(_vifp_core, srcs, fus)),
                       sources, fused)


# ------------------------------------------------------------------------------ Qcb


def _qcb_csf(h: int, w: int) -> np.ndarray:
    """Chen-Blum's DoG contrast sensitivity filter, in numpy FFT order.

    metricChenBlum.m scales MATLAB's ``freqspace`` grid by W/30 and H/30, which leaves
    ``r = (distance from DC in FFT bins) / 15`` whatever the image size.
    """
    fy = (np.arange(h) - h // 2) * (2.0 / h) * (h / QCB_FREQ_SCALE)
    fx = (np.arange(w) - w // 2) * (2.0 / w) * (w / QCB_FREQ_SCALE)
    r = np.sqrt(fx[None, :] ** 2 + fy[:, None] ** 2)
    csf = np.exp(-(r / QCB_F0) ** 2) - QCB_A * np.exp(-(r / QCB_F1) ** 2)
    return np.fft.ifftshift(csf).astype(np.float32)


def _qcb_gaussian(sigma: float) -> np.ndarray:
    """1-D factor of metricChenBlum.m's unnormalised 31x31 Gaussian (sum ~1, not 1)."""
    x = np.arange(-QCB_RADIUS, QCB_RADIUS + 1, dtype=np.float64)
    return np.exp(-(x * x) / (2 * sigma * sigma)) / math.sqrt(2 * math.pi * sigma * sigma)


def _complex_blur(z: jax.Array, taps: np.ndarray) -> jax.Array:
    return lax.complex(_filter_same_zero(jnp.real(z), taps), _filter_same_zero(jnp.imag(z), taps))


def _qcb_core(srcs: jax.Array, fus: jax.Array) -> jax.Array:
    h, w = fus.shape
    images = jnp.concatenate([srcs, fus[None]], axis=0)
    images = jax.vmap(_stretch_to_gray_levels)(images)
    filtered = jnp.fft.ifft2(jnp.fft.fft2(images) * _qcb_csf(h, w))
    narrow = _complex_blur(filtered, _qcb_gaussian(QCB_SIGMAS[0]))
    wide = _complex_blur(filtered, _qcb_gaussian(QCB_SIGMAS[1]))
    contrast = jnp.abs(narrow / wide - 1.0)
    masked = contrast ** QCB_P / (contrast ** QCB_Q + QCB_Z)
    c_src, c_fus = masked[:-1], masked[-1][None]
    preservation = jnp.where(c_src < c_fus, c_src / jnp.where(c_fus > 0, c_fus, 1.0),
                             _safe_divide(c_fus, c_src, 1.0))
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
    ``freqspace`` grid scaled by size/30); local contrast
    ``C = |G_2 * I / G_4 * I - 1|`` with 31x31 Gaussians (sigma 2 and 4, unnormalised,
    zero padding, complex-valued as the filtered image); masked contrast
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


# ------------------------------------------------------------- with a ground truth


@jax.jit
def psnr(fused: jax.Array, reference: jax.Array) -> jax.Array:
    """PSNR of a fused image against its ground truth, dB: ``10 log10(255^2 / MSE)``.

    MSE on the 0-255 scale; infinite when equal. Agrees with
    ``skimage.metrics.peak_signal_noise_ratio(data_range=255)``.

    Args: ``fused``, ``reference`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    fused, reference = _as_pair(fused, reference, ("the fused image", "the reference"))
    mse = _mean(jnp.square(fused - reference))
    return 10.0 * jnp.log10(PEAK * PEAK / mse)


@jax.jit
def mae(fused: jax.Array, reference: jax.Array) -> jax.Array:
    """MAE of a fused image against its ground truth, 0-255 units: ``mean |F - R|``.

    Args: ``fused``, ``reference`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    fused, reference = _as_pair(fused, reference, ("the fused image", "the reference"))
    return _mean(jnp.abs(fused - reference))


# -------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class Metric:
    """A registered metric: ``metric(sources, fused)`` (no reference) or
    ``metric(fused, reference)`` (with a ground truth), returning ``(...)``."""

    name: str
    fn: Callable[[jax.Array, jax.Array], jax.Array]
    higher_is_better: bool
    min_size: int = 1
    exact_sources: int | None = None
    description: str = ""
    # "X_sum" is N times "X_mean": evaluate() derives it instead of computing it again.
    times_sources_of: str | None = None

    def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
        return self.fn(a, b)

    def applies_to(self, n_sources: int, height: int, width: int) -> bool:
        """Whether the definition covers this many sources and this image size."""
        if self.exact_sources is not None and n_sources != self.exact_sources:
            return False
        return min(height, width) >= self.min_size


def _on_fused(fn: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    return lambda sources, fused: fn(fused)


NO_REFERENCE_METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("EN", _on_fused(entropy), True, 1, None, "entropy, bits"),
    Metric("SD", _on_fused(standard_deviation), True, 1, None, "standard deviation"),
    Metric("SF", _on_fused(spatial_frequency), True, 2, None, "spatial frequency"),
    Metric("AG", _on_fused(average_gradient), True, 2, None, "average gradient"),
    Metric("MI", mutual_information, True, 1, None, "mutual information, bits, summed"),
    Metric("NMI", normalized_mutual_information, True, 1, None, "Hossny's normalised MI"),
    Metric("FMI_pixel", functools.partial(feature_mutual_information, feature="pixel"), True,
           FMI_WINDOW, None, "feature MI on pixels, 3x3 windows"),
    Metric("FMI_gradient", functools.partial(feature_mutual_information, feature="gradient"),
           True, FMI_WINDOW, None, "feature MI on the x gradient, 3x3 windows"),
    Metric("Qabf", qabf, True, 1, None, "Xydeas-Petrovic edge preservation"),
    Metric("SCD", scd, True, 1, 2, "sum of the correlations of differences"),
    Metric("VIF", vif, True, VIF_MIN_SIZE, None, "pixel-domain VIF, summed over sources"),
    Metric("SSIM_mean", functools.partial(ssim_fusion, reduce="mean"), True, SSIM_WINDOW, None,
           "SSIM(F, S_k), mean over sources"),
    Metric("SSIM_sum", functools.partial(ssim_fusion, reduce="sum"), True, SSIM_WINDOW, None,
           "SSIM(F, S_k), sum over sources", times_sources_of="SSIM_mean"),
    Metric("MS_SSIM_mean", functools.partial(ms_ssim_fusion, reduce="mean"), True,
           MS_SSIM_MIN_SIZE, None, "MS-SSIM(F, S_k), mean over sources"),
    Metric("MS_SSIM_sum", functools.partial(ms_ssim_fusion, reduce="sum"), True,
           MS_SSIM_MIN_SIZE, None, "MS-SSIM(F, S_k), sum over sources",
           times_sources_of="MS_SSIM_mean"),
    Metric("CC", correlation_coefficient, True, 1, None, "correlation coefficient, mean"),
    Metric("PSNR", psnr_fusion, True, 1, None, "fusion PSNR, dB"),
    Metric("Qcb", qcb, True, 1, None, "Chen-Blum"),
    Metric("Qy", qy, True, QY_WINDOW, 2, "Yang's SSIM-based metric"),
]}

REFERENCE_METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("PSNR_ref", psnr, True, 1, None, "PSNR against the ground truth, dB"),
    Metric("SSIM_ref", ssim, True, SSIM_WINDOW, None, "SSIM against the ground truth"),
    Metric("MAE_ref", mae, False, 1, None, "mean absolute error against the ground truth"),
]}

ALL_METRICS: dict[str, Metric] = {**NO_REFERENCE_METRICS, **REFERENCE_METRICS}


# ------------------------------------------------------------------ eager entry point


def _check_finite_range(image: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(image)):
        bad = "NaN" if np.isnan(image).any() else "infinite values"
        raise IFCNNError(f"{name} contains {bad}")
    lo, hi = float(image.min()), float(image.max())
    if lo < -0.5 or hi > PEAK + 0.5:
        raise IFCNNError(f"{name} has values from {lo:g} to {hi:g}; metrics expect the "
                         "0-255 scale")


def evaluate(sources: Sequence[np.ndarray] | np.ndarray, fused: np.ndarray,
             reference: np.ndarray | None = None, names: Sequence[str] | None = None,
             source_names: Sequence[str] | None = None, fused_name: str = "fused image",
             reference_name: str = "reference image") -> dict[str, float]:
    """Computes metrics for one group of images, checking the inputs first.

    Args:
      sources: N >= 2 images, each ``(H, W)`` gray or ``(H, W, 3)`` RGB (uint8, uint16,
        or float on 0-255), or one stacked ``(N, H, W)`` array. Colour is evaluated on
        its luminance (:func:`to_gray_255`).
      fused: the fused image, same size.
      reference: optional ground truth, same size; adds ``REFERENCE_METRICS``.
      names: metric names to compute (keys of ``ALL_METRICS``). Default: every metric;
        those whose definition does not cover this number of sources or this image size
        give NaN. A named metric that does not apply raises ``IFCNNError``.
      source_names, fused_name, reference_name: labels for error messages (file names).

    Returns:
      ``{name: value}`` as Python floats, in the order of ``names`` (default: registry
      order).

    Raises ``IFCNNError`` for sizes that differ, NaN/inf, values outside 0-255, fewer
    than 2 sources, or unknown metric names.
    """
    sources = list(sources)  # a stacked (N, H, W) or (N, H, W, 3) array splits on axis 0
    labels = list(source_names) if source_names is not None else [
        f"source {i + 1}" for i in range(len(sources))]
    if len(labels) != len(sources):
        raise IFCNNError(f"got {len(sources)} sources but {len(labels)} source names")
    if len(sources) < 2:
        raise IFCNNError(f"fusion metrics need at least 2 sources, got {len(sources)}")
    grays = [to_gray_255(s, label) for s, label in zip(sources, labels)]
    fused_gray = to_gray_255(fused, fused_name)
    ref_gray = to_gray_255(reference, reference_name) if reference is not None else None
    named = [*zip(labels, grays), (fused_name, fused_gray)]
    if ref_gray is not None:
        named.append((reference_name, ref_gray))
    for label, image in named:
        if image.shape != fused_gray.shape:
            raise IFCNNError(f"{label} is {image.shape[0]}x{image.shape[1]} but {fused_name} "
                             f"is {fused_gray.shape[0]}x{fused_gray.shape[1]}; "
                             "sizes must match")
        _check_finite_range(image, label)

    available = dict(NO_REFERENCE_METRICS)
    if ref_gray is not None:
        available.update(REFERENCE_METRICS)
    if names is None:
        selected = list(available)
        explicit = False
    else:
        selected = list(names)
        explicit = True
        for name in selected:
            if name in REFERENCE_METRICS and ref_gray is None:
                raise IFCNNError(f"metric {name} needs a reference (ground-truth) image")
            if name not in available:
                raise IFCNNError(f"unknown metric {name!r}; choose from "
                                 f"{', '.join(ALL_METRICS)}")

    h, w = fused_gray.shape
    to_compute: list[str] = []
    for name in selected:
        metric = available[name]
        if metric.applies_to(len(grays), h, w):
            if metric.times_sources_of not in selected:
                to_compute.append(name)
        elif explicit:
            need = (f"exactly {metric.exact_sources} sources"
                    if metric.exact_sources is not None and metric.exact_sources != len(grays)
                    else f"images of at least {metric.min_size}x{metric.min_size}")
            raise IFCNNError(f"metric {name} needs {need}; got {len(grays)} sources of {h}x{w}")
    stacked = jnp.asarray(np.stack(grays))
    fused_j = jnp.asarray(fused_gray)
    ref_j = None if ref_gray is None else jnp.asarray(ref_gray)
    # Metric by metric: each compiled function is cached per image size and shared with
    # direct calls (one computation for all of them compiles ~10% faster, but anew for
    # every selection of names).
    computed = {name: float(available[name](fused_j, ref_j) if name in REFERENCE_METRICS
                            else available[name](stacked, fused_j))
                for name in to_compute}
    results: dict[str, float] = {}
    for name in selected:
        metric = available[name]
        if name in computed:
            results[name] = computed[name]
        elif metric.applies_to(len(grays), h, w):  # a sum derived from its mean
            results[name] = computed[metric.times_sources_of] * len(grays)
        else:
            results[name] = float("nan")
    return results


def metric_names(with_reference: bool = False) -> list[str]:
    """Registry names in table order (no-reference first)."""
    return list(ALL_METRICS if with_reference else NO_REFERENCE_METRICS)


def higher_is_better(name: str) -> bool:
    """Whether larger values of the named metric mean a better fusion."""
    return ALL_METRICS[name].higher_is_better


__all__ = [
    "ALL_METRICS", "Metric", "NO_REFERENCE_METRICS", "REFERENCE_METRICS", "average_gradient",
    "correlation_coefficient", "entropy", "evaluate", "feature_mutual_information",
    "gaussian_window", "higher_is_better", "luminance", "mae", "metric_names", "ms_ssim",
    "ms_ssim_fusion", "mutual_information", "normalized_mutual_information", "psnr",
    "psnr_fusion", "qabf", "qcb", "qy", "scd", "spatial_frequency", "ssim", "ssim_fusion",
    "standard_deviation", "to_gray_255", "vif",
]

