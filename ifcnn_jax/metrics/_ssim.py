"""The SSIM family: SSIM, MS-SSIM (against each source) and Yang's Qy.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.metrics._common import (
    MS_SSIM_MIN_SIZE,
    MS_SSIM_WEIGHTS,
    PEAK,
    QY_C,
    QY_SIGMA,
    QY_THRESHOLD,
    QY_WINDOW,
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WINDOW,
    _as_group,
    _as_pair,
    _local_moments,
    _map_groups,
    _mean,
    _over_sources,
    _safe_divide,
    gaussian_window,
)


def _ssim_maps(
    x: jax.Array, y: jax.Array, taps: np.ndarray, c1: float, c2: float
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


def _per_source(
    core: Callable[[jax.Array, jax.Array], jax.Array], reduce: str
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
            (jnp.stack([a, a, b]), jnp.stack([b, fus, fus])),
        )
        s_ab, s_af, s_bf = maps[0], maps[1], maps[2]
        var_a, var_b = var_x[0], var_y[0]
        weight = _safe_divide(var_a, var_a + var_b, 0.5)
        similar = weight * s_af + (1.0 - weight) * s_bf
        return _mean(jnp.where(s_ab >= QY_THRESHOLD, similar, jnp.maximum(s_af, s_bf)))

    return _map_groups(core, sources, fused)
