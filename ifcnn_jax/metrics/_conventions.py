"""Conventions: the metrics as four public suites compute them, under the default names.

``evaluate(..., convention=NAME)`` swaps the project's definitions ("paper", the default)
for those of one public code base, so that values can stand beside a table made with it:

* ``"vifb"``: X. Zhang's VIFB, ``metrics/*.m`` (github.com/xingchenzhang/VIFB);
* ``"tang"``: L. Tang's Evaluation-for-Image-Fusion, ``Evaluation/*.m``
  (github.com/Linfeng-Tang/Evaluation-for-Image-Fusion);
* ``"liu"``: Z. Liu's imageFusionMetrics (github.com/zhengliu6699/imageFusionMetrics);
* ``"cddfuse"``: Z. Zhao's ``utils/Evaluator.py`` of MMIF-CDDFuse
  (github.com/Zhaozixiang1228/MMIF-CDDFuse), the Python evaluator many recent papers use.

Each convention lists the metrics it reproduces (:data:`CONVENTION_METRICS`): a metric
whose code computes the project's definition keeps it; one whose code differs (units,
windows, normalisers, bugs) gets a function that computes what that code computes, with
the file and line it comes from. A metric the suite does not have, or whose code is not
reproduced here, is refused by ``evaluate`` (:data:`NOT_REPRODUCED` says why where it
is not simply absent from the suite). ``docs/metrics.md`` ("Conventions of the public suites") has the tables.

The conventions (scales, shapes, windows) of the inputs are those of
``ifcnn_jax.metrics``: gray images on 0-255, sources stacked ``(N, H, W)``. The suites
are written for two sources; where a formula extends to N (a sum or a mean over the
sources) it is extended that way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from ifcnn_jax.metrics._common import (
    GRAY_LEVELS,
    PEAK,
    VIF_MIN_SIZE,
    _as_group,
    _as_images,
    _check_min_size,
    _entropy_of_counts,
    _gray_bins,
    _histogram,
    _joint_histogram,
    _map_groups,
    _map_images,
    _matlab_gradient,
    _mean,
    _mutual_information_bits,
    _over_sources,
    _total,
)
from ifcnn_jax.metrics._information import (
    _stretch_to_gray_levels,
    feature_mutual_information,
    mutual_information,
)
from ifcnn_jax.metrics._liu_information import tsallis_fusion
from ifcnn_jax.metrics._rounding_ports import cddfuse_ssim_sum, liu_qy
from ifcnn_jax.metrics._structure import _mse_to_sources, qabf
from ifcnn_jax.metrics._vif import _vifp_core

CONVENTIONS: tuple[str, ...] = ("paper", "vifb", "tang", "liu", "cddfuse")
"""The accepted ``convention=`` values; ``"paper"`` (this project's definitions) is the default."""

DEFAULT_CONVENTION = "paper"

SUITES: dict[str, str] = {
    "paper": "this project's definitions (docs/metrics.md)",
    "vifb": "VIFB (xingchenzhang/VIFB, metrics/)",
    "tang": "Tang's Evaluation-for-Image-Fusion (Linfeng-Tang/Evaluation-for-Image-Fusion, Evaluation/)",
    "liu": "Liu's imageFusionMetrics (zhengliu6699/imageFusionMetrics)",
    "cddfuse": "CDDFuse's utils/Evaluator.py (Zhaozixiang1228/MMIF-CDDFuse)",
}


@dataclasses.dataclass(frozen=True)
class ConventionMetric:
    """How one convention computes one registry metric.

    ``fn`` is ``fn(sources, fused)`` (``(N, H, W)`` and ``(H, W)``, 0-255) returning a
    scalar, or ``None`` where the suite's code computes the project's definition.
    ``code`` names the public file and line; ``differs`` says what differs from the
    default ("" when nothing does)."""

    fn: Callable[[jax.Array, jax.Array], jax.Array | float] | None
    code: str
    differs: str = ""


# ------------------------------------------------------------------ shared variants

_LN2 = math.log(2.0)
_MATLAB_UINT8_MAX_INDEX = GRAY_LEVELS - 2  # uint8(255) + 1 saturates: levels 254 and 255 share index 255


@jax.jit
def sf_mean_of_differences(fused_image: jax.Array) -> jax.Array:
    """SF with each sum of squared differences divided by its own count.

    ``sqrt(mean_{(H)(W-1)} (F[i,j] - F[i,j-1])^2 + mean_{(H-1)W} (F[i,j] - F[i-1,j])^2)``,
    as Tang's ``SF_evaluation.m`` and CDDFuse's ``Evaluator.SF`` (the default divides
    both sums by HW). 0-255 units; ``(..., H, W)`` -> ``(...)``, sides >= 2."""
    image = _as_images(fused_image, "the image")
    _check_min_size(image.shape, 2)
    return jnp.sqrt(_mean(jnp.square(jnp.diff(image, axis=-1))) + _mean(jnp.square(jnp.diff(image, axis=-2))))


@jax.jit
def ag_mean_over_pixels(fused_image: jax.Array) -> jax.Array:
    """AG divided by the number of pixels HW (CDDFuse's ``np.mean``), not (H-1)(W-1).

    ``mean_{H*W} sqrt((gx^2 + gy^2) / 2)``, gx, gy MATLAB ``gradient`` (central
    differences, one-sided at the borders). 0-255 units; ``(..., H, W)`` -> ``(...)``."""
    image = _as_images(fused_image, "the image")
    _check_min_size(image.shape, 2)

    def core(im):
        gx, gy = _matlab_gradient(im)
        return _mean(jnp.sqrt((gx * gx + gy * gy) / 2.0))

    return _map_images(core, image)


@jax.jit
def mi_nats(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """MI as :func:`mutual_information` (256 bins, no stretch, summed), in nats (natural log).

    CDDFuse's ``sklearn.metrics.mutual_info_score`` on the pixel values: for integer
    images its classes are the gray levels, so it is this value."""
    return mutual_information(sources, fused) * _LN2


@jax.jit
def psnr_peak_max_fused(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """PSNR with the fused image's maximum as the peak: ``10 log10(max(F)^2 / MSE)``, dB.

    MSE = mean over the sources of their MSE to F (0-255^2), as CDDFuse's
    ``Evaluator.PSNR``; ``-inf`` for an all-black F."""
    sources, fused = _as_group(sources, fused)
    peak = jnp.max(fused, axis=(-2, -1))
    return 10.0 * jnp.log10(peak * peak / _mse_to_sources(sources, fused))


@jax.jit
def vif_nan_as_one(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """VIF (sum over the sources of VIFp) with a NaN term counted as 1.

    CDDFuse's ``compare_viff`` returns 1 where VIFp is NaN (0/0 for a constant source);
    the default gives NaN there."""
    sources, fused = _as_group(sources, fused, min_size=VIF_MIN_SIZE)

    def term(src, fus):
        value = _vifp_core(src, fus)
        return jnp.where(jnp.isnan(value), 1.0, value)

    return _map_groups(lambda srcs, fus: jnp.sum(_over_sources(term, srcs, fus)), sources, fused)


@jax.jit
def qabf_matlab_ties(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Qabf with the common code's tie branch (G = g_F where g_k == g_F), 0-255 input."""
    return qabf(sources, fused, matlab_ties=True)


# ------------------------------------------------------------------------------ VIFB


@jax.jit
def entropy_floor_bins(fused_image: jax.Array) -> jax.Array:
    """EN with the gray level ``floor(v)`` (VIFB's ``X(floor(h1(i,j))+1)``), bits.

    Equals the default (which rounds) on integer images."""
    image = _as_images(fused_image, "the image")
    bins = jnp.clip(jnp.floor(image), 0, GRAY_LEVELS - 1).astype(jnp.int32)
    return _map_images(lambda im: _entropy_of_counts(_histogram(im)), bins)


@jax.jit
def vifb_mutual_information(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """VIFB's MI: each image min-max stretched to 0..255 and rounded, then the
    256-bin MI, natural log (nats), summed over the sources (``metricsMutinf.m``)."""
    sources, fused = _as_group(sources, fused)

    def core(srcs, fus):
        bins_f = _gray_bins(_stretch_to_gray_levels(fus))
        per_source = _over_sources(
            lambda src, _: _mutual_information_bits(_gray_bins(_stretch_to_gray_levels(src)), bins_f)[0],
            srcs,
            fus,
        )
        return jnp.sum(per_source) * _LN2

    return _map_groups(core, sources, fused)


def _root_sse_over_pixels(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """VIFB's ``mse(a, b)``: ``sqrt(sum((a - b)^2)) / (H W)``, per source, mean over them."""
    h, w = fused.shape[-2:]
    return jnp.mean(jnp.sqrt(_total(jnp.square(sources - fused[None]))) / (h * w), axis=0)


@jax.jit
def vifb_psnr(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """VIFB's PSNR: ``20 log10(255 / sqrt(m))`` with ``m = mean_k sqrt(SSE_k) / (HW)``.

    ``metricsPsnr.m`` calls that ``m`` the MSE; it is the RMSE divided by sqrt(HW), so
    the value is far above the paper's PSNR (by about 10 log10(HW) - 10 log10(RMSE))."""
    sources, fused = _as_group(sources, fused)
    return 20.0 * jnp.log10(PEAK / jnp.sqrt(_root_sse_over_pixels(sources, fused)))


@jax.jit
def vifb_rmse(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """VIFB's RMSE (``metricsRmse.m``): ``mean_k sqrt(SSE_k) / (HW)``, i.e. the RMSE / sqrt(HW)."""
    sources, fused = _as_group(sources, fused)
    return _root_sse_over_pixels(sources, fused)


@jax.jit
def vifb_qabf(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """VIFB's Qabf: ``metricsQabf.m`` multiplies the 0-255 images by 255 again
    (``255*im2double(double(img))``), so the tie branch ``G = g_F`` sees strengths on a
    0-65025 scale (Q at a tie is then Tg, not Tg / (1 + e^-7.5) as on 0-255)."""
    return qabf(sources * PEAK, fused * PEAK, matlab_ties=True)


# ------------------------------------------------------------------------------ Tang


@jax.jit
def tang_mutual_information(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Tang's MI (Qu's ``MI_evaluation.m`` with ``Hab.m``), bits, summed over the sources.

    ``H(S_k) + H(F) - H'(F, S_k)``: the entropies from the exact histograms (MATLAB
    ``entropy`` on uint8), the joint entropy from ``Hab.m``, where ``uint8 + 1``
    saturates so that gray levels 254 and 255 share one row and one column."""
    sources, fused = _as_group(sources, fused)

    def core(srcs, fus):
        bins_f = _gray_bins(fus)
        h_f = _entropy_of_counts(_histogram(bins_f))
        merged_f = jnp.minimum(bins_f, _MATLAB_UINT8_MAX_INDEX)

        def pair(src, _):
            bins_s = _gray_bins(src)
            joint = _joint_histogram(merged_f, jnp.minimum(bins_s, _MATLAB_UINT8_MAX_INDEX))
            return _entropy_of_counts(_histogram(bins_s)) + h_f - _entropy_of_counts(joint)

        return jnp.sum(_over_sources(pair, srcs, fus))

    return _map_groups(core, sources, fused)


@jax.jit
def tang_mse(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Tang's MSE (``MSE_evaluation.m``): the images divided by 255 first, so 0-1^2 units."""
    sources, fused = _as_group(sources, fused)
    return _mse_to_sources(sources, fused) / (PEAK * PEAK)


@jax.jit
def tang_psnr(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Tang's PSNR (``PSNR_evaluation.m``): ``20 log10(255 / sqrt(MSE_01))``, MSE on 0-1.

    The peak stays 255 while the MSE is on the 0-1 scale: the paper's PSNR plus
    20 log10(255) = 48.13 dB."""
    return 20.0 * jnp.log10(PEAK / jnp.sqrt(tang_mse(sources, fused)))


@jax.jit
def tang_fmi_dct(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Tang's "FMI_dct": ``analysis_fmi(..., 'dct')``, Haghighat's ``fmi.m`` with its quirks
    (flat but unequal window pairs score 1; the second source is compared with the
    already rescaled F window); see :func:`feature_mutual_information`."""
    return feature_mutual_information(sources, fused, feature="dct", fmi_m_quirks=True)


# ------------------------------------------------------------------------------- Liu


@jax.jit
def liu_q_te(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Liu's Q_TE with ``tsallis.m``'s transposed marginals (``liu_marginals=True``)."""
    return tsallis_fusion(sources, fused, liu_marginals=True)


# --------------------------------------------------------------------------- tables
# liu_qy and cddfuse_ssim_sum, which imitate float rounding step by step, are in
# _rounding_ports.

_P = ConventionMetric  # short for the tables below


def _on_fused(fn: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """A metric of the fused image alone, in the registry's ``(sources, fused)`` form."""
    return lambda sources, fused: fn(fused)


def _paper_table() -> dict[str, ConventionMetric]:
    from ifcnn_jax.metrics._registry import KNOWN_METRICS  # noqa: PLC0415 - the registry imports nothing of this module

    return {name: _P(None, "this project (docs/metrics.md)") for name in KNOWN_METRICS}


_VIFB = {
    "EN": _P(
        _on_fused(entropy_floor_bins),
        "metrics/metricsEntropy.m:44",
        "gray level floor(v), not round(v) (same on integers)",
    ),
    "SD": _P(None, "metrics/metricsVariance.m:41"),
    "SF": _P(None, "metrics/metricsSpatial_frequency.m:21-31"),
    "AG": _P(None, "metrics/metricsAvg_gradient.m:19"),
    "EI": _P(None, "metrics/metricsEdge_intensity.m:17-27"),
    "MI": _P(
        vifb_mutual_information,
        "metrics/metricsMutinf.m:66-79 (stretch), 96-111 (natural log)",
        "each image min-max stretched to 0..255; natural log (nats)",
    ),
    "CE": _P(None, "metrics/metricsCross_entropy.m:75"),
    "PSNR": _P(
        vifb_psnr,
        "metrics/metricsPsnr.m:38-39, 53-54",
        "sqrt(SSE)/(HW) averaged over the sources in place of the MSE",
    ),
    "RMSE": _P(
        vifb_rmse, "metrics/metricsRmse.m:40-41, 56-57", "mean_k sqrt(SSE_k)/(HW): the RMSE / sqrt(HW)"
    ),
    "SSIM_sum": _P(None, "metrics/metricsSsim.m:36, 84-88"),
    "Qabf": _P(
        vifb_qabf,
        "metrics/metricsQabf.m:56-58 (x255), 103 (ties)",
        "G = g_F where g_k == g_F, with strengths on a 0-65025 scale",
    ),
    "Qcb": _P(None, "metrics/metricsQcb.m"),
    "Qcv": _P(None, "metrics/metricsQcv.m"),
}

_TANG = {
    "EN": _P(None, "Evaluation/analysis_Reference.m:18 (MATLAB entropy on uint8)"),
    "MI": _P(
        tang_mutual_information,
        "Evaluation/MI_evaluation.m:12-19, Evaluation/Hab.m:14-15",
        "joint histogram with gray levels 254 and 255 merged (uint8 + 1 saturates)",
    ),
    "PSNR": _P(
        tang_psnr, "Evaluation/PSNR_evaluation.m:2-9", "MSE on 0-1 with peak 255: +20 log10(255) = +48.13 dB"
    ),
    "MSE": _P(tang_mse, "Evaluation/MSE_evaluation.m:2-8", "on the 0-1 scale (the default / 255^2)"),
    "SF": _P(
        _on_fused(sf_mean_of_differences),
        "Evaluation/SF_evaluation.m:2-6",
        "each sum divided by its number of differences",
    ),
    "SD": _P(None, "Evaluation/SD_evaluation.m:2-4"),
    "VIF": _P(None, "Evaluation/analysis_Reference.m:30 (vifp_mscale.m, summed)"),
    "AG": _P(None, "Evaluation/AG_evaluation.m:13-15"),
    "CC": _P(None, "Evaluation/CC_evaluation.m:2-4 (mean(A) in rBF does not change the value)"),
    "SCD": _P(None, "Evaluation/analysis_SCD.m:11"),
    "Qabf": _P(qabf_matlab_ties, "Evaluation/analysis_Qabf.m:65", "G = g_F where g_k == g_F (0-255)"),
    "MEF_SSIM": _P(None, "Evaluation/analysis_Reference.m:76 (analysis_ms_ssim.m, reported as MS_SSIM)"),
    "FMI_dct": _P(
        tang_fmi_dct,
        "Evaluation/analysis_fmi.m:120-137, 154-160, 304",
        "flat unequal windows score 1; source 2 compared with the rescaled F window",
    ),
}

_LIU = {
    "NMI": _P(None, "metricMI.m (sw=1) with normalize1.m"),
    "Q_TE": _P(liu_q_te, "metricMI.m (sw=3) with tsallis.m:39-47", "tsallis.m's transposed marginals"),
    "Q_NCIE": _P(None, "metricWang.m with NCC.m"),
    "Q_M": _P(None, "metricPWW.m"),
    "Q_P": _P(None, "metricZhao.m with myphasecong3.m"),
    "Qcb": _P(None, "metricChenBlum.m"),
    "Qcv": _P(None, "metricChen.m"),
    "Qy": _P(
        liu_qy,
        "metricYang.m:28-34, 60-66",
        "NaN where both sources are flat on a 7x7 window with one-pass variances summing to 0",
    ),
}

_CDDFUSE = {
    "EN": _P(None, "utils/Evaluator.py:32-36 (np.round: half to even, same on integers)"),
    "SD": _P(None, "utils/Evaluator.py:39-41"),
    "SF": _P(_on_fused(sf_mean_of_differences), "utils/Evaluator.py:44-46", "np.mean over the differences"),
    "AG": _P(_on_fused(ag_mean_over_pixels), "utils/Evaluator.py:49-60", "np.mean over the HW pixels"),
    "MI": _P(mi_nats, "utils/Evaluator.py:63-66", "sklearn mutual_info_score: nats"),
    "MSE": _P(None, "utils/Evaluator.py:69-71"),
    "CC": _P(None, "utils/Evaluator.py:74-80"),
    "PSNR": _P(psnr_peak_max_fused, "utils/Evaluator.py:83-85", "peak max(F), not 255"),
    "SCD": _P(None, "utils/Evaluator.py:88-96"),
    "VIF": _P(
        vif_nan_as_one, "utils/Evaluator.py:99-101, 161-164 (VIFF: VIFp summed)", "a NaN VIFp counts as 1"
    ),
    "Qabf": _P(qabf_matlab_ties, "utils/Evaluator.py:206", "G = g_F where g_k == g_F (0-255)"),
    "SSIM_sum": _P(
        cddfuse_ssim_sum,
        "utils/Evaluator.py:215-217 (skimage structural_similarity defaults)",
        "7x7 box window, sample covariances, data_range 2 (float32 dtype range)",
    ),
}

CONVENTION_METRICS: dict[str, dict[str, ConventionMetric]] = {
    "paper": _paper_table(),
    "vifb": _VIFB,
    "tang": _TANG,
    "liu": _LIU,
    "cddfuse": _CDDFUSE,
}
"""Per convention, the registry names it reproduces and how (in that suite's order)."""

NOT_REPRODUCED: dict[str, dict[str, str]] = {
    "vifb": {
        "MSE": "VIFB's only MSE-like output is metricsRmse.m (RMSE here)",
    },
    "tang": {
        "SSIM_mean": "Tang calls MATLAB's built-in ssim() on 0-255 doubles (DynamicRange 1), not reproduced",
        "SSIM_sum": "Tang calls MATLAB's built-in ssim() on 0-255 doubles (DynamicRange 1), not reproduced",
        "FMI_pixel": "Tang's FMI_pixel is fmi.m's default 'edge' feature (MATLAB edge()), not reproduced",
        "Nabf": "Tang's analysis_nabf.m (with its own sobel_fn.m) has not been checked against this Nabf",
    },
    "liu": {
        "Qabf": "Liu's metricXydeas.m is another Q^AB/F (k = -10, -20, per-pixel weights), not reproduced",
        "Qw": "Liu's metricPeilla.m is the uncorrected original (11x11 Gaussian), not reproduced",
        "Qe": "Liu's metricPeilla.m is the uncorrected original (sw=3 uses an undefined Q), not reproduced",
    },
    "cddfuse": {},
}
"""Metrics a suite reports (or seems to) whose code is not reproduced, with the reason."""


def check_convention(convention: str) -> None:
    """Raises ``IFCNNError`` naming the value unless it is one of :data:`CONVENTIONS`."""
    from ifcnn_jax.errors import IFCNNError  # noqa: PLC0415 - keeps this module's imports to JAX and NumPy

    if convention not in CONVENTIONS:
        raise IFCNNError(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")


def refusal(convention: str, name: str) -> str:
    """The message for a metric that ``convention`` does not reproduce."""
    reason = NOT_REPRODUCED.get(convention, {}).get(name, f"{SUITES[convention]} has no {name}")
    reproduced = ", ".join(CONVENTION_METRICS[convention])
    return (
        f"metric {name} is not reproduced under convention {convention!r}: {reason}; "
        f"it reproduces {reproduced}"
    )


def metric_under(convention: str, name: str, default):
    """The registry ``Metric`` ``default`` as ``convention`` computes it (a copy with the
    suite's function and no shared-work shortcuts), or ``default`` itself where the
    suite computes the project's definition."""
    rule = CONVENTION_METRICS[convention][name]
    if rule.fn is None:
        return default
    return dataclasses.replace(default, fn=rule.fn, times_sources_of=None, product_of=None, joint=None)
