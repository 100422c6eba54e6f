"""Constants and helpers shared by the metric families: gray conversion, windows,
histograms, pairwise sums and valid-window filtering."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
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
# Qcv (Chen & Varshney 2007, Liu's metricChen.m): 16x16 regions, saliency exponent,
# Mannos-Sakrison CSF on the freqspace grid scaled by size/8.
QCV_BLOCK = 16
QCV_ALPHA = 5.0
QCV_FREQ_SCALE = 8.0
# Qy (Yang et al. 2008, Liu's metricYang.m): SSIM with a 7x7 window and tiny constants.
QY_WINDOW = 7
QY_SIGMA = 1.5
QY_C = 2e-16
QY_THRESHOLD = 0.75
# FMI (Haghighat et al. 2011; fast FMI, Haghighat & Razian 2014).
FMI_WINDOW = 3
FMI_FEATURES = ("pixel", "gradient", "dct")
# Qw, Qe (Piella & Heijmans 2003): UIQI over 8x8 sliding box windows, as SSIM with
# K1 = K2 = 1e-6 (Yu Liu's check of Z. Liu's metricPeilla.m); edge images by the Prewitt
# masks of that code; alpha, the exponent of the edge term.
PIELLA_WINDOW = 8
PIELLA_K = 1e-6
PIELLA_ALPHA = 1.0
# Where a window is flat in every source, metricPeilla.m adds 1/2 to each saliency.
PIELLA_FLAT_SALIENCY = 0.5
# MEF-SSIM (Ma, Zeng, Wang 2015, mef_ms_ssim.m): 3 scales with MS-SSIM's first three
# weights normalised to sum 1; K = 0.03; 11x11 windows (box for the patch statistics,
# SSIM's Gaussian for the quality map); signal-strength offset, exponent cap, MATLAB eps.
MEF_SSIM_WEIGHTS = tuple(w / sum(MS_SSIM_WEIGHTS[:3]) for w in MS_SSIM_WEIGHTS[:3])
MEF_SSIM_K = 0.03
MEF_SSIM_MIN_SIZE = SSIM_WINDOW * 2 ** (len(MEF_SSIM_WEIGHTS) - 1)  # 44, the code's rule
MEF_SSIM_STRENGTH_OFFSET = 0.001
MEF_SSIM_P_MAX = 10.0
MATLAB_EPS = 2.220446049250313e-16
# Q_TE (Liu's metricMI.m, sw = 3): Nava's entropic index q of the Tsallis entropy.
Q_TE_Q = 0.43137
# Q_P (Zhao et al. 2007, Liu's metricZhao.m): Kovesi's phase congruency with the
# defaults of Liu's myphasecong3.m (scales, orientations, wavelengths, bandwidth, noise
# threshold k, frequency-spread cut-off and gain, epsilon, low-pass radius and order),
# then 11x11 Gaussian local correlations with C = 1e-4 where PC > 0.1.
PC_NSCALE, PC_NORIENT = 4, 6
PC_MIN_WAVELENGTH, PC_MULT, PC_SIGMA_ON_F = 3.0, 2.1, 0.55
PC_D_THETA_ON_SIGMA = 1.2
PC_K, PC_CUTOFF, PC_G = 2.0, 0.5, 10.0
PC_EPSILON = 1e-4
PC_LOWPASS_CUTOFF, PC_LOWPASS_ORDER = 0.45, 15
QP_C = 1e-4
QP_THRESHOLD = 0.1
# Q_M (Wang & Liu 2008, Liu's metricPWW.m): exponents of the two Haar levels; both
# levels need at least one coefficient.
QM_ALPHAS = (2.0 / 3.0, 1.0 / 3.0)
QM_MIN_SIZE = 2 ** len(QM_ALPHAS)
# Nabf (Shreyamsha Kumar 2013, objective_fusion_perform_fn.m): Petrovic's constants of
# that code, not Qabf's. Sobel responses are divided by 8 there, which TD refers to.
NABF_TD = 2.0
NABF_WT_MIN = 0.001
NABF_L = 1.5
NABF_NRG, NABF_KG, NABF_SIGMAG = 0.9999, 19.0, 0.5
NABF_NRA, NABF_KA, NABF_SIGMAA = 0.9995, 22.0, 0.5


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
        raise IFCNNError(f"{name}: expected an (H, W) gray or (H, W, 3) RGB image, got shape {image.shape}")
    if image.dtype == np.uint8 or image.dtype == np.uint16:
        if image.ndim == 3:
            image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        gray = image.astype(np.float32)
        return gray / 257.0 if image.dtype == np.uint16 else gray
    if image.dtype.kind == "f":
        gray = image.astype(np.float32)
        if gray.ndim == 3:
            gray = gray @ np.asarray(BT601_WEIGHTS, np.float32)
        return gray
    raise IFCNNError(
        f"{name}: unsupported sample type {image.dtype} (uint8, uint16 or float on the 0-255 scale)"
    )


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


def _as_group(
    sources, fused, *, exactly: int | None = None, min_size: int = 1
) -> tuple[jax.Array, jax.Array]:
    """Validates shapes (static, so this works under jit) and casts to float32."""
    sources = jnp.asarray(sources)
    fused = _as_images(fused, "the fused image")
    if sources.ndim != fused.ndim + 1:
        raise IFCNNError(
            f"sources must be stacked as (N, ..., H, W) around a fused image "
            f"(..., H, W); got sources {tuple(sources.shape)} and fused "
            f"{tuple(fused.shape)}"
        )
    if sources.shape[1:] != fused.shape:
        raise IFCNNError(
            f"each source is {_shape_text(sources.shape[1:])} but the fused "
            f"image is {_shape_text(fused.shape)}; sizes must match"
        )
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
        raise IFCNNError(
            f"{what[0]} is {_shape_text(x.shape)} but {what[1]} is {_shape_text(y.shape)}; sizes must match"
        )
    _check_min_size(x.shape, min_size)
    return x, y


def _shape_text(shape: Sequence[int]) -> str:
    shape = tuple(int(s) for s in shape)
    text = f"{shape[-2]}x{shape[-1]} (HxW)"
    return text if len(shape) == 2 else f"{text} with batch shape {shape[:-2]}"


def _check_min_size(shape: Sequence[int], min_size: int) -> None:
    if min(shape[-2:]) < min_size:
        raise IFCNNError(
            f"image of {shape[-2]}x{shape[-1]} pixels is too small for this "
            f"metric: both sides must be at least {min_size}"
        )


def _map_images(core: Callable[[jax.Array], jax.Array], images: jax.Array) -> jax.Array:
    """Applies a per-image ``(H, W) -> ()`` function over the batch axes of (..., H, W)."""
    batch = images.shape[:-2]
    flat = images.reshape((-1,) + images.shape[-2:])
    return lax.map(core, flat).reshape(batch)


def _map_groups(
    core: Callable[[jax.Array, jax.Array], jax.Array], sources: jax.Array, fused: jax.Array
) -> jax.Array:
    """Applies ``(N, H, W), (H, W) -> ()`` over the batch axes of a source group."""
    n = sources.shape[0]
    batch, hw = fused.shape[:-2], fused.shape[-2:]
    flat_sources = jnp.swapaxes(sources.reshape((n, -1) + hw), 0, 1)
    flat_fused = fused.reshape((-1,) + hw)
    return lax.map(lambda pair: core(*pair), (flat_sources, flat_fused)).reshape(batch)


def _over_sources(
    pair_core: Callable[[jax.Array, jax.Array], jax.Array], srcs: jax.Array, fus: jax.Array
) -> jax.Array:
    """``pair_core(S_k, F)`` for every source, compiled once (not once per source)."""
    return lax.map(lambda src: pair_core(src, fus), srcs)


def _total(x: jax.Array, axes: int = 2) -> jax.Array:
    """Sum over the last ``axes`` axes by pairwise (tree) addition.

    XLA's CPU reductions can accumulate sequentially: for a 48x64 image of equal
    values ``jnp.sum`` is off by 1e-5 relative; pairwise sums stay near 1e-7.
    """
    lead = x.shape[: x.ndim - axes]
    x = x.reshape(lead + (-1,))
    while x.shape[-1] > 1:
        if x.shape[-1] % 2:
            x = jnp.concatenate([x, jnp.zeros(lead + (1,), x.dtype)], axis=-1)
        x = x[..., 0::2] + x[..., 1::2]
    return x[..., 0]


def _mean(x: jax.Array, axes: int = 2) -> jax.Array:
    """Mean over the last ``axes`` axes, pairwise (see :func:`_total`)."""
    return _total(x, axes) / math.prod(x.shape[x.ndim - axes :])


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


def _mutual_information_bits(bins_a: jax.Array, bins_b: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
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
    out_shape = x.shape[:axis] + (size,) + x.shape[axis + 1 :]

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


def _local_moments(
    x: jax.Array, y: jax.Array, taps: np.ndarray
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
    row_ref_x, row_ref_y = x[:, c : c + wo], y[:, c : c + wo]

    def along_rows(b, acc):
        dx = lax.dynamic_slice_in_dim(x, b, wo, axis=1) - row_ref_x
        dy = lax.dynamic_slice_in_dim(y, b, wo, axis=1) - row_ref_y
        tdx, tdy = weights[b] * dx, weights[b] * dy
        return (acc[0] + tdx, acc[1] + tdy, acc[2] + tdx * dx, acc[3] + tdy * dy, acc[4] + tdx * dy)

    rows = lax.fori_loop(0, k, along_rows, (jnp.zeros((h, wo), jnp.float32),) * 5)
    centre_x, centre_y = row_ref_x[c : c + ho], row_ref_y[c : c + ho]

    def down_columns(a, acc):
        s1x, s1y, s2x, s2y, sxy = (lax.dynamic_slice_in_dim(r, a, ho, axis=0) for r in rows)
        dx = lax.dynamic_slice_in_dim(row_ref_x, a, ho, axis=0) - centre_x
        dy = lax.dynamic_slice_in_dim(row_ref_y, a, ho, axis=0) - centre_y
        t = weights[a]
        return (
            acc[0] + t * (s1x + dx),
            acc[1] + t * (s1y + dy),
            # One expression for all three, so that x == y gives var == cov exactly.
            acc[2] + t * (s2x + s1x * dx + dx * (s1x + dx)),
            acc[3] + t * (s2y + s1y * dy + dy * (s1y + dy)),
            acc[4] + t * (sxy + s1x * dy + dx * (s1y + dy)),
        )

    m1x, m1y, m2x, m2y, mxy = lax.fori_loop(0, k, down_columns, (jnp.zeros((ho, wo), jnp.float32),) * 5)
    return (centre_x + m1x, centre_y + m1y, m2x - m1x * m1x, m2y - m1y * m1y, mxy - m1x * m1y)


def _pearson(x: jax.Array, y: jax.Array) -> jax.Array:
    """Pearson correlation over all pixels of two (H, W) images (MATLAB ``corr2``)."""
    dx = x - _mean(x)
    dy = y - _mean(y)
    return _total(dx * dy) / jnp.sqrt(_total(dx * dx) * _total(dy * dy))


def _matlab_gradient(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """MATLAB ``[gx, gy] = gradient(x)``: central differences inside, one-sided at edges."""
    gx = jnp.concatenate(
        [x[:, 1:2] - x[:, 0:1], (x[:, 2:] - x[:, :-2]) / 2.0, x[:, -1:] - x[:, -2:-1]], axis=1
    )
    gy = jnp.concatenate([x[1:2] - x[0:1], (x[2:] - x[:-2]) / 2.0, x[-1:] - x[-2:-1]], axis=0)
    return gx, gy
