"""Image-fusion quality metrics in JAX, every definition written down.

One private module per family (``_statistics``, ``_information``, ``_liu_information``
(Q_TE, Q_NCIE), ``_structure``, ``_wavelet`` (Q_M), ``_phase`` (Q_P), ``_ssim``, ``_vif``,
``_qcb``, ``_qcv``, ``_reference``), the registry (``_registry``: ``NO_REFERENCE_METRICS``,
``REFERENCE_METRICS`` and the named-only ``OPT_IN_METRICS``) and the eager entry point
(``_evaluate``) with the public suites' conventions (``_conventions``: ``CONVENTIONS``,
``CONVENTION_METRICS``, for ``evaluate(..., convention=...)``, with the eager NumPy ports
of ``_rounding_ports``); this module is the public interface.

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
* Histogram metrics (EN, MI, NMI, CE) bin values into 256 bins: a value ``v`` falls in bin
  ``clip(floor(v + 0.5), 0, 255)`` (MATLAB's rounding, so uint8-valued images give their
  exact 256-level histograms). Entropies use log base 2 (bits).
* Windowed statistics (SSIM, MS-SSIM, MEF-SSIM, VIF, Qy, Qw, Qe) use 'valid' windows (no padding), as
  the MATLAB originals (``filter2(..., 'valid')``), and variances taken of differences
  from each window's centre pixel: in float32 the usual E[x^2] - E[x]^2 loses about
  0.03 (in 0-255^2 units) to cancellation, which matters for metrics whose constants
  are tiny (Qy: 2e-16; VIF: 1e-10; Qw, Qe: 6.5e-8), and flat windows must give
  exactly zero. Qcb's and Qcv's frequency-domain filtering is done in float64 (see
  ``_qcb``).
* Image-wide sums are pairwise (tree) sums, accurate to ~1e-7 relative in float32.
"""

# ruff: noqa: F401 - the explicit public interface of the package
from ifcnn_jax.metrics._common import gaussian_window, luminance, to_gray_255
from ifcnn_jax.metrics._conventions import CONVENTION_METRICS, CONVENTIONS, ConventionMetric
from ifcnn_jax.metrics._evaluate import evaluate
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
from ifcnn_jax.metrics._registry import (
    ALL_METRICS,
    KNOWN_METRICS,
    NO_REFERENCE_METRICS,
    OPT_IN_METRICS,
    REFERENCE_METRICS,
    Metric,
)
from ifcnn_jax.metrics._ssim import (
    mef_ssim,
    ms_ssim,
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

__all__ = [
    "ALL_METRICS",
    "CONVENTIONS",
    "CONVENTION_METRICS",
    "ConventionMetric",
    "KNOWN_METRICS",
    "Metric",
    "NO_REFERENCE_METRICS",
    "OPT_IN_METRICS",
    "REFERENCE_METRICS",
    "average_gradient",
    "correlation_coefficient",
    "cross_entropy",
    "edge_intensity",
    "entropy",
    "evaluate",
    "feature_mutual_information",
    "gaussian_window",
    "luminance",
    "mae",
    "mef_ssim",
    "ms_ssim",
    "ms_ssim_fusion",
    "mse_fusion",
    "mutual_information",
    "nabf",
    "ncie",
    "normalized_mutual_information",
    "psnr",
    "psnr_fusion",
    "qabf",
    "qcb",
    "qcv",
    "qe",
    "qe_edge_factor",
    "qm",
    "qp",
    "qw",
    "qy",
    "rmse_fusion",
    "scd",
    "spatial_frequency",
    "ssim",
    "ssim_and_ms_ssim_fusion",
    "ssim_fusion",
    "standard_deviation",
    "to_gray_255",
    "tsallis_fusion",
    "vif",
]
