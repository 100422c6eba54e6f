"""The registry of metrics by name, with keyword rows.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax

from ifcnn_jax.metrics._common import (
    FMI_WINDOW,
    MEF_SSIM_MIN_SIZE,
    MS_SSIM_MIN_SIZE,
    PIELLA_WINDOW,
    QM_MIN_SIZE,
    QY_WINDOW,
    SSIM_WINDOW,
    VIF_MIN_SIZE,
)
from ifcnn_jax.metrics._information import (
    cross_entropy,
    feature_mutual_information,
    mutual_information,
    normalized_mutual_information,
)
from ifcnn_jax.metrics._liu_information import ncie, tsallis_fusion
from ifcnn_jax.metrics._phase import qp
from ifcnn_jax.metrics._qcb import qcb
from ifcnn_jax.metrics._qcv import qcv
from ifcnn_jax.metrics._reference import mae, psnr
from ifcnn_jax.metrics._ssim import (
    mef_ssim,
    ms_ssim_fusion,
    qe,
    qe_edge_factor,
    qw,
    qy,
    ssim,
    ssim_and_ms_ssim_fusion,
    ssim_fusion,
)
from ifcnn_jax.metrics._statistics import (
    average_gradient,
    edge_intensity,
    entropy,
    spatial_frequency,
    standard_deviation,
)
from ifcnn_jax.metrics._structure import (
    correlation_coefficient,
    mse_fusion,
    nabf,
    psnr_fusion,
    qabf,
    rmse_fusion,
    scd,
)
from ifcnn_jax.metrics._vif import vif
from ifcnn_jax.metrics._wavelet import qm


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
    # (other, factor): the value is other's value times factor(a, b) in float32;
    # evaluate() computes it that way when it computes ``other`` too.
    product_of: tuple[str, Callable[[jax.Array, jax.Array], jax.Array]] | None = None
    # (names, fn): fn(a, b) returns the values of all these metrics stacked on axis 0,
    # sharing work; evaluate() calls it when two or more of them are to be computed.
    joint: tuple[tuple[str, ...], Callable[[jax.Array, jax.Array], jax.Array]] | None = None

    def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
        return self.fn(a, b)

    def applies_to(self, n_sources: int, height: int, width: int) -> bool:
        """Whether the definition covers this many sources and this image size."""
        if self.exact_sources is not None and n_sources != self.exact_sources:
            return False
        return min(height, width) >= self.min_size


def _on_fused(fn: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    return lambda sources, fused: fn(fused)


_SSIM_JOINT = (("SSIM_mean", "MS_SSIM_mean"), ssim_and_ms_ssim_fusion)

NO_REFERENCE_METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric(name="EN", fn=_on_fused(entropy), higher_is_better=True, description="entropy, bits"),
        Metric(
            name="SD",
            fn=_on_fused(standard_deviation),
            higher_is_better=True,
            description="standard deviation",
        ),
        Metric(
            name="SF",
            fn=_on_fused(spatial_frequency),
            higher_is_better=True,
            min_size=2,
            description="spatial frequency",
        ),
        Metric(
            name="AG",
            fn=_on_fused(average_gradient),
            higher_is_better=True,
            min_size=2,
            description="average gradient",
        ),
        Metric(
            name="EI",
            fn=_on_fused(edge_intensity),
            higher_is_better=True,
            description="edge intensity, mean Sobel magnitude",
        ),
        Metric(
            name="MI",
            fn=mutual_information,
            higher_is_better=True,
            description="mutual information, bits, summed",
        ),
        Metric(
            name="NMI",
            fn=normalized_mutual_information,
            higher_is_better=True,
            description="Hossny's normalised MI",
        ),
        Metric(
            name="CE",
            fn=cross_entropy,
            higher_is_better=False,
            description="VIFB's cross entropy (histogram KL divergence), bits, mean",
        ),
        Metric(
            name="FMI_pixel",
            fn=functools.partial(feature_mutual_information, feature="pixel"),
            higher_is_better=True,
            min_size=FMI_WINDOW,
            description="feature MI on pixels, 3x3 windows",
        ),
        Metric(
            name="FMI_gradient",
            fn=functools.partial(feature_mutual_information, feature="gradient"),
            higher_is_better=True,
            min_size=FMI_WINDOW,
            description="feature MI on the x gradient, 3x3 windows",
        ),
        Metric(
            name="Q_TE",
            fn=tsallis_fusion,
            higher_is_better=True,
            exact_sources=2,
            description="Tsallis-entropy MI (Liu's Q_TE, q = 0.43137)",
        ),
        Metric(
            name="Q_NCIE",
            fn=ncie,
            higher_is_better=True,
            description="nonlinear correlation information entropy, base-256 logs",
        ),
        Metric(
            name="Q_M",
            fn=qm,
            higher_is_better=True,
            min_size=QM_MIN_SIZE,
            description="Wang-Liu's multiscale (two-level Haar) edge preservation, 0-3",
        ),
        Metric(name="Qabf", fn=qabf, higher_is_better=True, description="Xydeas-Petrovic edge preservation"),
        Metric(
            name="Nabf",
            fn=nabf,
            higher_is_better=False,
            description="Kumar's modified fusion artefacts",
        ),
        Metric(
            name="SCD",
            fn=scd,
            higher_is_better=True,
            exact_sources=2,
            description="sum of the correlations of differences",
        ),
        Metric(
            name="VIF",
            fn=vif,
            higher_is_better=True,
            min_size=VIF_MIN_SIZE,
            description="pixel-domain VIF, summed over sources",
        ),
        Metric(
            name="SSIM_mean",
            fn=functools.partial(ssim_fusion, reduce="mean"),
            higher_is_better=True,
            min_size=SSIM_WINDOW,
            description="SSIM(F, S_k), mean over sources",
            joint=_SSIM_JOINT,
        ),
        Metric(
            name="SSIM_sum",
            fn=functools.partial(ssim_fusion, reduce="sum"),
            higher_is_better=True,
            min_size=SSIM_WINDOW,
            description="SSIM(F, S_k), sum over sources",
            times_sources_of="SSIM_mean",
        ),
        Metric(
            name="MS_SSIM_mean",
            fn=functools.partial(ms_ssim_fusion, reduce="mean"),
            higher_is_better=True,
            min_size=MS_SSIM_MIN_SIZE,
            description="MS-SSIM(F, S_k), mean over sources",
            joint=_SSIM_JOINT,
        ),
        Metric(
            name="MS_SSIM_sum",
            fn=functools.partial(ms_ssim_fusion, reduce="sum"),
            higher_is_better=True,
            min_size=MS_SSIM_MIN_SIZE,
            description="MS-SSIM(F, S_k), sum over sources",
            times_sources_of="MS_SSIM_mean",
        ),
        Metric(
            name="MEF_SSIM",
            fn=mef_ssim,
            higher_is_better=True,
            min_size=MEF_SSIM_MIN_SIZE,
            description="Ma et al.'s multi-exposure fusion SSIM, 3 scales",
        ),
        Metric(
            name="CC",
            fn=correlation_coefficient,
            higher_is_better=True,
            description="correlation coefficient, mean",
        ),
        Metric(name="PSNR", fn=psnr_fusion, higher_is_better=True, description="fusion PSNR, dB"),
        Metric(
            name="MSE",
            fn=mse_fusion,
            higher_is_better=False,
            description="mean of the sources' MSE to F",
        ),
        Metric(
            name="RMSE",
            fn=rmse_fusion,
            higher_is_better=False,
            description="square root of MSE",
        ),
        Metric(name="Qcb", fn=qcb, higher_is_better=True, description="Chen-Blum"),
        Metric(name="Qcv", fn=qcv, higher_is_better=False, description="Chen-Varshney"),
        Metric(
            name="Qy",
            fn=qy,
            higher_is_better=True,
            min_size=QY_WINDOW,
            exact_sources=2,
            description="Yang's SSIM-based metric",
        ),
        Metric(
            name="Qw",
            fn=qw,
            higher_is_better=True,
            min_size=PIELLA_WINDOW,
            description="Piella's weighted fusion quality",
        ),
        Metric(
            name="Qe",
            fn=qe,
            higher_is_better=True,
            min_size=PIELLA_WINDOW,
            description="Piella's edge-dependent fusion quality",
            product_of=("Qw", qe_edge_factor),
        ),
    ]
}

REFERENCE_METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric(
            name="PSNR_ref", fn=psnr, higher_is_better=True, description="PSNR against the ground truth, dB"
        ),
        Metric(
            name="SSIM_ref",
            fn=ssim,
            higher_is_better=True,
            min_size=SSIM_WINDOW,
            description="SSIM against the ground truth",
        ),
        Metric(
            name="MAE_ref",
            fn=mae,
            higher_is_better=False,
            description="mean absolute error against the ground truth",
        ),
    ]
}

OPT_IN_METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric(
            name="FMI_dct",
            fn=functools.partial(feature_mutual_information, feature="dct"),
            higher_is_better=True,
            min_size=FMI_WINDOW,
            description="feature MI on the whole image's 2-D DCT, 3x3 windows",
        ),
        Metric(
            name="Q_P",
            fn=qp,
            higher_is_better=True,
            min_size=2,
            exact_sources=2,
            description="Zhao's phase-congruency metric (PC, max and min moments)",
        ),
    ]
}
"""No-reference metrics that cost as much as several others together: ``evaluate``
computes them only when they are named, and they are in neither ``NO_REFERENCE_METRICS``
nor ``ALL_METRICS`` (which list the default columns)."""

ALL_METRICS: dict[str, Metric] = {**NO_REFERENCE_METRICS, **REFERENCE_METRICS}

KNOWN_METRICS: dict[str, Metric] = {**ALL_METRICS, **OPT_IN_METRICS}
"""Every metric that can be asked for by name: the default columns and the opt-in ones."""
