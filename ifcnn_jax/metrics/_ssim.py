"""The SSIM family: SSIM, MS-SSIM (against each source), MEF-SSIM, Yang's Qy and
Piella's Qw, Qe.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.metrics._common import (
    MATLAB_EPS,
    MEF_SSIM_K,
    MEF_SSIM_MIN_SIZE,
    MEF_SSIM_P_MAX,
    MEF_SSIM_STRENGTH_OFFSET,
    MEF_SSIM_WEIGHTS,
    MS_SSIM_MIN_SIZE,
    MS_SSIM_WEIGHTS,
    PEAK,
    PIELLA_ALPHA,
    PIELLA_FLAT_SALIENCY,
    PIELLA_K,
    PIELLA_WINDOW,
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
    _total,
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
    MS_SSIM; that is a different metric, :func:`mef_ssim` here.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255, sides >= 176.
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, min_size=MS_SSIM_MIN_SIZE)
    return _map_groups(_per_source(_ms_ssim_core, reduce), sources, fused)


def _ssim_and_ms_ssim_core(x: jax.Array, y: jax.Array) -> jax.Array:
    """``(SSIM, MS-SSIM)`` of one pair: the first MS-SSIM scale gives the SSIM map too."""
    value = 1.0
    last = len(MS_SSIM_WEIGHTS) - 1
    for level, weight in enumerate(MS_SSIM_WEIGHTS):
        ssim_map, cs_map, _, _ = _ssim_maps(x, y, _SSIM_TAPS, _SSIM_C1, _SSIM_C2)
        if level == 0:
            first = _mean(ssim_map)
        factor = _mean(ssim_map) if level == last else _mean(cs_map)
        value = value * jnp.maximum(factor, 0.0) ** weight
        if level != last:
            x, y = _downsample2(x), _downsample2(y)
    return jnp.stack([first, value])


@jax.jit
def ssim_and_ms_ssim_fusion(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """``(SSIM_mean, MS_SSIM_mean)`` stacked on a leading axis, in one pass: the values
    of :func:`ssim_fusion` and :func:`ms_ssim_fusion` (``reduce="mean"``), with the
    full-size SSIM maps computed once. ``evaluate`` uses it when both are selected.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255, sides >= 176.
    Returns ``(2, ...)``.
    """
    sources, fused = _as_group(sources, fused, min_size=MS_SSIM_MIN_SIZE)
    n, batch, hw = sources.shape[0], fused.shape[:-2], fused.shape[-2:]
    flat_sources = jnp.swapaxes(sources.reshape((n, -1) + hw), 0, 1)
    flat_fused = fused.reshape((-1,) + hw)

    def group(pair):
        return jnp.mean(_over_sources(_ssim_and_ms_ssim_core, *pair), axis=0)

    both = lax.map(group, (flat_sources, flat_fused))  # (B, 2)
    return jnp.moveaxis(both.reshape(batch + (2,)), -1, 0)


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


_PIELLA_TAPS = np.full(PIELLA_WINDOW, 1.0 / PIELLA_WINDOW)
_PIELLA_C = (PIELLA_K * PEAK) ** 2


def _piella_weighted(srcs: jax.Array, fus: jax.Array) -> jax.Array:
    """Piella's weighted fusion quality Q_W of (N, H, W) sources and an (H, W) image."""
    maps, _, var_s, _ = lax.map(lambda src: _ssim_maps(src, fus, _PIELLA_TAPS, _PIELLA_C, _PIELLA_C), srcs)
    flat = jnp.sum(var_s, axis=0) == 0
    saliency = jnp.where(flat[None], PIELLA_FLAT_SALIENCY, var_s)
    weight = saliency / jnp.sum(saliency, axis=0)
    overall = jnp.max(saliency, axis=0)
    return _total(overall * jnp.sum(weight * maps, axis=0)) / _total(overall)


def _prewitt_magnitude(x: jax.Array) -> jax.Array:
    """metricPeilla.m's edge image: ``filter2`` with ``[1 0 -1; 1 0 -1; 1 0 -1]`` and
    ``[1 1 1; 0 0 0; -1 -1 -1]`` ('same', zero padding), ``sqrt(X^2 + Y^2)``."""
    p = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)])
    h, w = x.shape[-2:]

    def at(dy, dx):
        return p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = sum(at(dy, -1) - at(dy, 1) for dy in (-1, 0, 1))
    gy = sum(at(-1, dx) - at(1, dx) for dx in (-1, 0, 1))
    return jnp.sqrt(gx * gx + gy * gy)


@jax.jit
def qw(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Qw, Piella-Heijmans weighted fusion quality index, at most 1 (1 when all images
    are equal).

    Piella's fusion quality index on UIQI maps: ``Q0(x, y | w)`` is the universal image
    quality index of Wang and Bovik over each 8x8 'valid' window w (box weights), computed
    as SSIM with ``C1 = C2 = (1e-6 * 255)^2`` so that flat windows are defined (the
    variances are exact, flat windows give 0, see ``ifcnn_jax.metrics``). Saliency
    ``s_k(w)`` is the local variance of source k; where it is 0 for every source, each
    ``s_k`` is 1/2 (metricPeilla.m's rule). ``l_k = s_k / sum_j s_j``,
    ``C(w) = max_k s_k(w)``, and
    ``Q_W = sum_w C(w) sum_k l_k(w) Q0(S_k, F | w) / sum_w C(w)``.

    Paper: G. Piella, H. Heijmans, "A new quality metric for image fusion", ICIP 2003
    (UIQI: Z. Wang, A. C. Bovik, IEEE Signal Process. Lett. 9 (2002)). Agrees with
    Z. Liu's ``metricPeilla.m`` (sw=2) as checked against the paper by Yu Liu (MFIF,
    2019: 8x8 box window, K = 1e-6); Z. Liu's original called SSIM's 11x11 Gaussian
    window and K = (0.01, 0.03) instead, a different value. N sources extend the weights.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255, sides >= 8.
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, min_size=PIELLA_WINDOW)
    return _map_groups(_piella_weighted, sources, fused)


@jax.jit
def qe(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Qe, Piella-Heijmans edge-dependent fusion quality index, at most 1 (1 when all
    images are equal).

    ``Qe = Q_W(S, F) * Q_W(S', F')^alpha`` with alpha = 1, where ``S'``, ``F'`` are edge
    images: the magnitude of the Prewitt responses of metricPeilla.m (``[1 0 -1]`` rows
    and columns, 'same' with zero padding) and Q_W the weighted index of :func:`qw`
    (8x8 UIQI windows, variance saliency).
    Paper: G. Piella, H. Heijmans, ICIP 2003. Agrees with ``metricPeilla.m`` (sw=3) of
    Yu Liu's checked version (MFIF), which computes the first factor that Z. Liu's
    original leaves undefined.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255, sides >= 8.
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, min_size=PIELLA_WINDOW)
    return _map_groups(
        lambda srcs, fus: _piella_weighted(srcs, fus) * _qe_edge_core(srcs, fus), sources, fused
    )


def _qe_edge_core(srcs: jax.Array, fus: jax.Array) -> jax.Array:
    edges = _prewitt_magnitude(jnp.concatenate([srcs, fus[None]]))
    return _piella_weighted(edges[:-1], edges[-1]) ** PIELLA_ALPHA


@jax.jit
def qe_edge_factor(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """``Q_W(S', F')^alpha``, the edge factor of :func:`qe`: ``qe = qw * qe_edge_factor``
    (the same float32 product), so that ``evaluate`` computes Q_W once for Qw and Qe.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255, sides >= 8.
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, min_size=PIELLA_WINDOW)
    return _map_groups(_qe_edge_core, sources, fused)


_BOX_TAPS = np.full(SSIM_WINDOW, 1.0 / SSIM_WINDOW)
_MEF_C = (MEF_SSIM_K * PEAK) ** 2
# tan(pi/2 R) > 10 exactly where R > (2/pi) atan(10); deciding on R avoids evaluating
# tan near pi/2, which float32 rounds past the pole (to a large negative number).
_MEF_R_CAP = 2.0 / math.pi * math.atan(MEF_SSIM_P_MAX)


def _covariances(images: jax.Array, taps: np.ndarray) -> jax.Array:
    """``(M, M, Ho, Wo)`` windowed covariances of ``(M, H, W)`` images (M >= 2), 'valid'
    windows of weights ``outer(taps, taps)``, exact (see :func:`_local_moments`). One
    pass per pair i < j, which also gives both variances."""
    m = images.shape[0]
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    first = jnp.asarray([i for i, _ in pairs])
    second = jnp.asarray([j for _, j in pairs])
    _, _, var_x, var_y, cov = lax.map(
        lambda xy: _local_moments(xy[0], xy[1], taps), (images[first], images[second])
    )

    def entry(i, j):
        if i == j:  # the variance from the first pair holding image i
            k = next(n for n, pair in enumerate(pairs) if i in pair)
            return var_x[k] if pairs[k][0] == i else var_y[k]
        return cov[pairs.index((min(i, j), max(i, j)))]

    return jnp.stack([jnp.stack([entry(i, j) for j in range(m)]) for i in range(m)])


def _mef_ssim_scale(srcs: jax.Array, fus: jax.Array) -> jax.Array:
    """mef_ssim.m at one scale: mean of the quality map of F against the desired patches."""
    n = srcs.shape[0]
    patch = SSIM_WINDOW * SSIM_WINDOW
    box = _covariances(srcs, _BOX_TAPS)  # (N, N, h, w): ||x_k - mu_k||^2 / 121 on the diagonal
    gauss = _covariances(jnp.concatenate([srcs, fus[None]]), _SSIM_TAPS)
    idx = jnp.arange(n)
    strength = jnp.sqrt(patch * box[idx, idx])  # ||x_k - mu_k||, (N, h, w)
    ed = strength + MEF_SSIM_STRENGTH_OFFSET
    # Structure consistency R = ||sum_k (x_k - mu_k)|| / sum_k ||x_k - mu_k||, in [0, 1].
    numerator = jnp.sqrt(jnp.maximum(patch * jnp.sum(box, axis=(0, 1)), 0.0))
    denominator = jnp.sum(strength, axis=0)
    consistency = _safe_divide(numerator, denominator, 1.0)
    exponent = jnp.where(
        consistency > _MEF_R_CAP, MEF_SSIM_P_MAX, jnp.tan(jnp.pi / 2 * jnp.minimum(consistency, _MEF_R_CAP))
    )
    weight = (ed / SSIM_WINDOW) ** exponent[None] + MATLAB_EPS
    weight = weight / jnp.sum(weight, axis=0)
    # Desired patch r = s * sum_k a_k (x_k - mu_k), a_k = w_k / ed_k, rescaled to the
    # largest strength: its moments follow from the sources' covariances.
    a = weight / ed
    norm_sq = patch * jnp.einsum("khw,klhw,lhw->hw", a, box, a)
    has_structure = norm_sq > 0
    scale = jnp.where(
        has_structure, jnp.max(ed, axis=0) / jnp.sqrt(jnp.where(has_structure, norm_sq, 1.0)), 0.0
    )
    var_r = scale * scale * jnp.einsum("khw,klhw,lhw->hw", a, gauss[:n, :n], a)
    cov_rf = scale * jnp.einsum("khw,khw->hw", a, gauss[:n, n])
    var_f = gauss[n, n]
    return _mean((2 * cov_rf + _MEF_C) / (var_r + var_f + _MEF_C))


@jax.jit
def mef_ssim(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """MEF-SSIM, Ma-Zeng-Wang's quality of a multi-exposure fusion, at most 1.

    At each of 3 scales, per 11x11 'valid' patch: the sources' patches ``x_k`` (means
    ``mu_k`` over the box window) give signal strengths ``c_k = ||x_k - mu_k||`` and
    ``e_k = c_k + 0.001``, structure consistency ``R = ||sum_k (x_k - mu_k)|| / sum_k c_k``
    (1 where every patch is flat), ``p = tan(pi/2 R)`` capped at 10, weights
    ``w_k = (e_k / 11)^p + eps`` normalised to sum 1, and the desired patch
    ``r = max_k e_k * s / ||s||`` with ``s = sum_k w_k (x_k - mu_k) / e_k`` (``r = 0``
    where ``s = 0``). The quality map is the SSIM contrast-structure term
    ``(2 s_rF + C) / (s_r^2 + s_F^2 + C)`` with SSIM's 11x11 Gaussian window (sigma 1.5)
    and ``C = (0.03 * 255)^2``; ``Q_l`` is its mean. Between scales every image is 2x2
    averaged and decimated as in :func:`ms_ssim`. ``MEF-SSIM = prod_l Q_l^{b_l}`` with
    ``b = (0.0448, 0.2856, 0.3001) / 0.6305``; a negative Q_l is clipped to 0.
    The moments of ``r`` are computed from the sources' windowed covariances (exact,
    as all variances here) rather than patch by patch.
    Paper: K. Ma, K. Zeng, Z. Wang, "Perceptual quality assessment for multi-exposure
    image fusion", IEEE TIP 24 (2015). Agrees with the authors' ``mef_ms_ssim.m`` (as
    shipped in Tang's suite as ``analysis_ms_ssim.m``, reported there as "MS_SSIM"),
    whose one-pass box variances are exact here. Defined for any N >= 2 sources (the
    exposure sequence), sides >= 44.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, min_size=MEF_SSIM_MIN_SIZE)

    def core(srcs, fus):
        value = 1.0
        for level, weight in enumerate(MEF_SSIM_WEIGHTS):
            if level:
                srcs = jax.vmap(_downsample2)(srcs)
                fus = _downsample2(fus)
            value = value * jnp.maximum(_mef_ssim_scale(srcs, fus), 0.0) ** weight
        return value

    return _map_groups(core, sources, fused)
