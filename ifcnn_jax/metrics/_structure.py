"""Edge and structure preservation and errors against the sources: Qabf, Nabf, SCD, CC,
fusion PSNR, MSE, RMSE.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ifcnn_jax.metrics._common import (
    NABF_KA,
    NABF_KG,
    NABF_L,
    NABF_NRA,
    NABF_NRG,
    NABF_SIGMAA,
    NABF_SIGMAG,
    NABF_TD,
    NABF_WT_MIN,
    PEAK,
    QABF_DA,
    QABF_DG,
    QABF_KA,
    QABF_KG,
    QABF_L,
    QABF_TA,
    QABF_TG,
    _as_group,
    _map_groups,
    _mean,
    _over_sources,
    _pearson,
    _safe_divide,
    _total,
)


def _sobel_strength_orientation(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sobel edge strength and orientation with zero padding (MATLAB conv2 'same')."""
    p = jnp.pad(x, 1)
    h, w = x.shape

    def at(dy, dx):
        return p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

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
            strength = jnp.where(hi == lo, g_f if matlab_ties else 1.0, lo / jnp.where(hi > 0, hi, 1.0))
            angle = 1.0 - jnp.abs(a_s - a_f) / (jnp.pi / 2)
            q = (
                QABF_TG
                / (1.0 + jnp.exp(QABF_KG * (strength - QABF_DG)))
                * QABF_TA
                / (1.0 + jnp.exp(QABF_KA * (angle - QABF_DA)))
            )
            weight = g_s**QABF_L
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
    return _map_groups(lambda srcs, fus: jnp.mean(_over_sources(_pearson, srcs, fus)), sources, fused)


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
    return 10.0 * jnp.log10(PEAK * PEAK / _mse_to_sources(sources, fused))


def _mse_to_sources(sources: jax.Array, fused: jax.Array) -> jax.Array:
    return jnp.mean(_mean(jnp.square(sources - fused[None])), axis=0)


@jax.jit
def mse_fusion(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """MSE against the sources, 0-255^2 units: ``mean_k mean((S_k - F)^2)``; lower is better.

    The mean of the sources' mean squared errors, the MSE of the VIFB paper's PSNR and
    RMSE (X. Zhang, P. Ye, G. Xiao, CVPRW 2020; after P. Jagalingam, A. V. Hegde, Aquatic
    Procedia 4 (2015)), so ``PSNR = 10 log10(255^2 / MSE)``. VIFB's ``metricsRmse.m``
    computes ``mean_k sqrt(sum (S_k - F)^2) / (HW)`` instead (see :func:`rmse_fusion`).

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused)
    return _mse_to_sources(sources, fused)


@jax.jit
def rmse_fusion(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """RMSE against the sources, 0-255 units: ``sqrt(mean_k MSE(S_k, F))``; lower is better.

    The square root of :func:`mse_fusion`, the VIFB paper's formula. The released
    ``metricsRmse.m`` of VIFB computes ``mean_k sqrt(sum (S_k - F)^2) / (HW)``, which is
    ``mean_k RMSE_k / sqrt(HW)``: its values are smaller by about ``sqrt(HW)`` (520 for a
    520x520 image) and are not reproduced here.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused)
    return jnp.sqrt(_mse_to_sources(sources, fused))


def _sobel_eighths_reflect(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Kumar's ``sobel_fn``: correlation with ``[-1 0 1; -2 0 2; -1 0 1] / 8`` (``gv``)
    and its transpose (``gh``), after mirroring one pixel on each side (``per_extn_im_fn``
    for a 3x3 window, which repeats the second row and column, not the edge)."""
    p = jnp.pad(x, 1, mode="reflect")
    h, w = x.shape

    def at(dy, dx):
        return p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gv = ((at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))) / 8.0
    gh = ((at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))) / 8.0
    return gv, gh


def _nabf_angle(gv: jax.Array, gh: jax.Array) -> jax.Array:
    """``atan(gv / gh)``: 0 where both are 0, +-pi/2 where only gh is (MATLAB's atan(+-Inf))."""
    zero_h = gh == 0
    ratio = jnp.arctan(gv / jnp.where(zero_h, 1.0, gh))
    return jnp.where(zero_h, jnp.sign(gv) * (jnp.pi / 2), ratio)


@jax.jit
def nabf(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Nabf, Shreyamsha Kumar's modified fusion-artefact measure, 0 to ~1; lower is better.

    Petrovic's edge model as in Kumar's ``objective_fusion_perform_fn.m`` (constants and
    Sobel of that code, not Qabf's): Sobel responses ``gv, gh`` divided by 8 with
    mirrored borders, strength ``g = sqrt(gv^2 + gh^2)``, orientation ``a = atan(gv / gh)``
    (0 where both are 0). Per source k: ``G = min(g_k, g_F) / max(g_k, g_F)`` (0 where
    either is 0), ``A = ||a_k - a_F| - pi/2| * 2/pi``, ``Q_kF = sqrt(Qg Qa)`` with
    ``Qg = 0.9999 / (1 + e^{-19 (G - 0.5)})``, ``Qa = 0.9995 / (1 + e^{-22 (A - 0.5)})``;
    weights ``w_k = g_k^1.5`` where ``g_k >= 2``, else 0.001. With the artefact map
    ``n = 1`` where F's edges are stronger than every source's (``g_F > max_k g_k``):
    ``Nabf = sum_k sum n (1 - Q_kF) w_k / sum_k sum w_k``. 0 when F adds no stronger
    edges (for F equal to a source, or F = max(S) of two flat images). The comparisons are
    made on ``g^2``, which is exact for 0-255 integer images.
    Paper: B. K. Shreyamsha Kumar, "Multifocus and multispectral image fusion based on
    pixel significance using discrete cosine harmonic wavelet transform", Signal Image
    Video Process. 7 (2013) (after V. Petrovic, C. Xydeas, "Objective image fusion
    performance characterisation", ICCV 2005). Agrees with ``objective_fusion_perform_fn.m``
    (NABF, as shipped with CBF in VIFB and used by Tang's suite); N sources extend the
    sums and the artefact map.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused)

    def core(srcs, fus):
        gv_f, gh_f = _sobel_eighths_reflect(fus)
        sq_f = gv_f * gv_f + gh_f * gh_f
        g_f, a_f = jnp.sqrt(sq_f), _nabf_angle(gv_f, gh_f)

        def pair(src, _):
            gv, gh = _sobel_eighths_reflect(src)
            sq = gv * gv + gh * gh
            g, a = jnp.sqrt(sq), _nabf_angle(gv, gh)
            lo, hi = jnp.minimum(g, g_f), jnp.maximum(g, g_f)
            strength = jnp.where((g == 0) | (g_f == 0), 0.0, _safe_divide(lo, hi, 0.0))
            angle = jnp.abs(jnp.abs(a - a_f) - jnp.pi / 2) * (2 / jnp.pi)
            # 1 - sqrt(Qg Qa) without cancellation (Q is within 3e-4 of 1 at good edges):
            # with Qg Qa = n / d, 1 - sqrt(n / d) = (d - n) / (d + sqrt(n d)).
            e_g = jnp.exp(-NABF_KG * (strength - NABF_SIGMAG))
            e_a = jnp.exp(-NABF_KA * (angle - NABF_SIGMAA))
            d = (1.0 + e_g) * (1.0 + e_a)
            d_minus_n = (1.0 - NABF_NRG * NABF_NRA) + e_g + e_a + e_g * e_a
            loss = d_minus_n / (d + jnp.sqrt(NABF_NRG * NABF_NRA * d))
            weight = jnp.where(sq >= NABF_TD * NABF_TD, g**NABF_L, NABF_WT_MIN)
            return sq, loss * weight, weight

        sq, loss, weight = _over_sources(pair, srcs, fus)
        artefact = sq_f > jnp.max(sq, axis=0)
        return _total(jnp.where(artefact, jnp.sum(loss, axis=0), 0.0)) / _total(jnp.sum(weight, axis=0))

    return _map_groups(core, sources, fused)
