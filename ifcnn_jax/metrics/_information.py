"""Information measures between sources and fused image: MI, NMI, CE, FMI.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.metrics._common import (
    FMI_FEATURES,
    FMI_WINDOW,
    PEAK,
    _as_group,
    _gray_bins,
    _histogram,
    _map_groups,
    _matlab_gradient,
    _mean,
    _mutual_information_bits,
    _over_sources,
    _safe_divide,
    _total,
    _xlogx2,
)


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
        return jnp.sum(
            _over_sources(lambda src, _: _mutual_information_bits(_gray_bins(src), bins_f)[0], srcs, fus)
        )

    return _map_groups(core, sources, fused)


def _relative_entropy_bits(p: jax.Array, q: jax.Array) -> jax.Array:
    """``sum p log2(p / q)`` over the bins where both ``p`` and ``q`` are non-zero."""
    both = (p > 0) & (q > 0)
    ratio = jnp.where(both, p, 1.0) / jnp.where(both, q, 1.0)
    return _total(jnp.where(both, p * jnp.log2(ratio), 0.0), 1)


@jax.jit
def cross_entropy(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """CE, VIFB's cross entropy: mean over the sources of ``D(p_S || p_F)``, bits; 0 is best.

    ``CE = mean_k sum_l p_k(l) log2(p_k(l) / p_F(l))`` over the gray levels l where both
    256-bin histograms (bins as in :func:`mutual_information`, no stretch) are non-zero;
    the levels where only one of them is non-zero are left out, as in the code (so the
    value is finite, can be negative, and is 0 when F has the histogram of every source).
    This is the relative entropy (Kullback-Leibler divergence) of the histograms, which
    fusion papers call cross entropy. Paper: D. M. Bulanon, T. F. Burks, V. Alchanatis,
    "Image fusion of visible and thermal images for fruit detection", Biosyst. Eng. 103
    (2009). Agrees with VIFB's ``metricsCross_entropy.m`` ((CE_A + CE_B) / 2).

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused)

    def core(srcs, fus):
        hist_f = _histogram(_gray_bins(fus))
        p_f = hist_f / _total(hist_f, 1)

        def pair(src, _):
            hist_s = _histogram(_gray_bins(src))
            return _relative_entropy_bits(hist_s / _total(hist_s, 1), p_f)

        return jnp.mean(_over_sources(pair, srcs, fus))

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
            mi, h_s, h_f = _mutual_information_bits(_gray_bins(_stretch_to_gray_levels(src)), bins_f)
            return _safe_divide(mi, h_s + h_f, jnp.nan)

        return 2.0 * jnp.sum(_over_sources(pair, srcs, fus))

    return _map_groups(core, sources, fused)


def _fmi_feature(image: jax.Array, feature: str) -> jax.Array:
    if feature == "pixel":
        return image
    if feature == "gradient":
        return _matlab_gradient(image)[0]  # fmi.m's gradient(ima): the x derivative only
    if feature == "dct":
        # fmi.m's dct2(ima): the orthonormal 2-D DCT-II of the whole image, in float64
        # (its round-off is absolute, ~eps * max|coefficient|, and the windows of small
        # high-frequency coefficients are min-max scaled afterwards).
        with jax.enable_x64(True):
            return jax.scipy.fft.dctn(image.astype(jnp.float64), norm="ortho").astype(jnp.float32)
    raise IFCNNError(f"unknown FMI feature {feature!r}; choose one of {FMI_FEATURES}")


def _window_values(x: jax.Array, size: int) -> jax.Array:
    """(size*size, Ho, Wo) values of each 'valid' window, in MATLAB's column-major order.

    The window position is the leading axis so that the pixel axis stays minor, where
    the CPU vectorises."""
    h, w = x.shape
    ho, wo = h - size + 1, w - size + 1
    return jnp.stack([x[r : r + ho, c : c + wo] for c in range(size) for r in range(size)])


def _window_pdf(values: jax.Array) -> jax.Array:
    """fmi.m: min-max to [0, 1] (a flat window becomes ones), then divide by the sum."""
    lo = jnp.min(values, axis=0, keepdims=True)
    hi = jnp.max(values, axis=0, keepdims=True)
    flat = hi == lo
    scaled = jnp.where(flat, 1.0, (values - lo) / jnp.where(flat, 1.0, hi - lo))
    return scaled / jnp.sum(scaled, axis=0, keepdims=True)


def _pdf_std(pdf: jax.Array) -> jax.Array:
    index = jnp.arange(1, pdf.shape[0] + 1, dtype=jnp.float32).reshape((-1,) + (1,) * (pdf.ndim - 1))
    mean = jnp.sum(index * pdf, axis=0)
    second = jnp.sum(index * index * pdf, axis=0)
    return jnp.sqrt(jnp.maximum(second - mean * mean, 0.0))


def _box_differences(cdf_bound: jax.Array) -> jax.Array:
    """Probability mass of each cell of a bivariate CDF given on the (i, j, ...) grid."""
    padded = jnp.pad(cdf_bound, [(1, 0), (1, 0)] + [(0, 0)] * (cdf_bound.ndim - 2))
    return padded[1:, 1:] - padded[:-1, 1:] - padded[1:, :-1] + padded[:-1, :-1]


def _fmi_windows(
    src: jax.Array, fus: jax.Array, equal: jax.Array | None = None, flat_pairs_score_one: bool = False
) -> jax.Array:
    """Normalised feature MI of corresponding windows ``(l, ...)`` of a source and F.

    ``equal``: where the window pair counts as equal (FMI 1); default: the raw windows
    are equal. ``flat_pairs_score_one``: a pair of flat windows scores 1 (``fmi.m``,
    where the rounding of ``mean(pdf)`` makes both centred PDFs the same tiny constant,
    so their correlation is 1), instead of 0 (correlation of exact zeros)."""
    if equal is None:
        equal = jnp.all(src == fus, axis=0)
    p_s, p_f = _window_pdf(src), _window_pdf(fus)
    cdf_s, cdf_f = jnp.cumsum(p_s, axis=0), jnp.cumsum(p_f, axis=0)
    centred_s = p_s - jnp.mean(p_s, axis=0, keepdims=True)
    centred_f = p_f - jnp.mean(p_f, axis=0, keepdims=True)
    cov = jnp.sum(centred_s * centred_f, axis=0)
    norm = jnp.sqrt(jnp.sum(centred_s**2, axis=0) * jnp.sum(centred_f**2, axis=0))
    corr = jnp.where(cov == 0, 0.0, cov / jnp.where(norm > 0, norm, 1.0))
    sd_s, sd_f = _pdf_std(p_s), _pdf_std(p_f)
    # Axis 0 follows F's window positions (i), axis 1 the source's (j), as in fmi.m.
    cf, cs = cdf_f[:, None], cdf_s[None, :]
    positive = corr >= 0
    bound = jnp.where(
        positive,
        jnp.minimum(cf, cs),  # Frechet upper bound copula
        jnp.maximum(cf + cs - 1.0, 0.0),
    )  # Frechet lower bound copula
    bound_cov = jnp.sum(bound, axis=(0, 1)) - jnp.sum(cdf_f, axis=0) * jnp.sum(cdf_s, axis=0)
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
    if flat_pairs_score_one:
        both_flat = (jnp.max(src, axis=0) == jnp.min(src, axis=0)) & (
            jnp.max(fus, axis=0) == jnp.min(fus, axis=0)
        )
        fmi = jnp.where(both_flat, 1.0, fmi)
    return jnp.where(equal, 1.0, fmi)


def _rescaled_windows(values: jax.Array) -> jax.Array:
    """fmi.m's in-place min-max of a window to [0, 1] (a flat window becomes ones)."""
    lo = jnp.min(values, axis=1, keepdims=True)
    hi = jnp.max(values, axis=1, keepdims=True)
    flat = hi == lo
    return jnp.where(flat, 1.0, (values - lo) / jnp.where(flat, 1.0, hi - lo))


_FMI_ROWS_PER_STEP = 8


def _window_rows(feature_map: jax.Array) -> jax.Array:
    """(rows, 9, Wo) window values, rows padded with zeros to a multiple of the step
    (so that ``lax.map`` compiles no remainder; the padding is dropped afterwards)."""
    rows = jnp.swapaxes(_window_values(feature_map, FMI_WINDOW), 0, 1)
    extra = -rows.shape[0] % _FMI_ROWS_PER_STEP
    return jnp.pad(rows, ((0, extra), (0, 0), (0, 0)))


@functools.partial(jax.jit, static_argnames=("feature", "fmi_m_quirks"))
def feature_mutual_information(
    sources: jax.Array, fused: jax.Array, feature: str = "pixel", fmi_m_quirks: bool = False
) -> jax.Array:
    """FMI, feature mutual information (fast FMI, 3x3 windows), 0 to 1.

    Per 3x3 'valid' window and source: both windows' feature values are min-max scaled
    to [0, 1] (a flat window becomes ones) and divided by their sum, giving marginal
    PDFs over the 9 positions (MATLAB column-major order); the joint PDF is Nelsen's
    mix of the independent and the Frechet bound copulas, weighted by the PDFs' Pearson
    correlation over the bound's correlation; ``FMI_w = 2 MI / (H_S + H_F)`` (bits),
    and 1 when the raw windows are equal. The result is the mean over windows of the
    mean over the sources.

    ``feature``: ``"pixel"`` (raw values, fmi.m's ``'none'``), ``"gradient"`` (fmi.m's
    ``gradient(im)``, which is MATLAB's horizontal derivative only) or ``"dct"`` (fmi.m's
    ``dct2(im)``: the orthonormal 2-D DCT-II of the whole image, computed in float64,
    whose coefficients are then windowed like pixels; Tang's "FMI_dct").
    Papers: M. B. A. Haghighat, A. Aghagolzadeh, H. Seyedarabi, "A non-reference image
    fusion metric based on mutual information of image features", Comput. Electr. Eng.
    37 (2011); M. Haghighat, M. A. Razian, "Fast-FMI", AICT 2014. Agrees with
    Haghighat's ``fmi.m`` (window 3) as shipped in Tang's ``analysis_fmi.m``; note that
    Tang's "FMI_pixel" calls it with the default feature, which there is ``'edge'``.

    ``fmi_m_quirks=True`` reproduces two things ``fmi.m`` (lines 120-137, 154-160 and 304
    of Tang's copy) does beyond that definition: a pair of flat but unequal windows
    scores 1 (the default: 0, the correlation of two exactly uniform PDFs being 0), and
    every source after the first is compared for equality with F's window as the first
    source's branch left it, min-max rescaled, unless that first pair was equal.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255 (the value is
    scale-free). Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, min_size=FMI_WINDOW)

    def core(srcs, fus):
        f_rows = _window_rows(_fmi_feature(fus, feature))
        n_rows = fus.shape[0] - FMI_WINDOW + 1
        if fmi_m_quirks:
            first_equal = jnp.all(_window_rows(_fmi_feature(srcs[0], feature)) == f_rows, axis=1)
            f_rescaled = _rescaled_windows(f_rows)

        def pair(src, is_first):
            s_rows = _window_rows(_fmi_feature(src, feature))
            raw_equal = jnp.all(s_rows == f_rows, axis=1)
            if fmi_m_quirks:
                # fmi.m rescales fSub in place in the first source's branch; the second
                # source's test `bSub == fSub` then sees the rescaled window.
                rescaled_equal = jnp.all(s_rows == f_rescaled, axis=1)
                equal = jnp.where(is_first | first_equal, raw_equal, rescaled_equal)
            else:
                equal = raw_equal
            # A few rows of windows at a time keep the (9, 9, ...) temporaries small.
            rows = lax.map(
                lambda three: _fmi_windows(*three, flat_pairs_score_one=fmi_m_quirks),
                (s_rows, f_rows, equal),
                batch_size=_FMI_ROWS_PER_STEP,
            )
            return _mean(rows[:n_rows])

        is_first = jnp.arange(srcs.shape[0]) == 0
        return jnp.mean(lax.map(lambda both: pair(*both), (srcs, is_first)))

    return _map_groups(core, sources, fused)
