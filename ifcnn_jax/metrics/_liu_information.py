"""Information measures of Z. Liu's suite beyond Shannon MI: Tsallis (Q_TE) and the
nonlinear correlation information entropy (Q_NCIE).

Both min-max stretch every image to 0..255 and round (Liu's ``normalize1.m``) and work
on 256x256 joint histograms. The sums over the histogram are taken in float64: Q_TE is
``1 - sum(...)`` where the sum is near 1 for nearly independent images, and Q_NCIE's
value is ``1 - HR`` with HR near 1, so float32 would lose digits to cancellation.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from ifcnn_jax.metrics._common import (
    GRAY_LEVELS,
    Q_TE_Q,
    _as_group,
    _gray_bins,
    _joint_histogram,
    _map_groups,
)
from ifcnn_jax.metrics._information import _stretch_to_gray_levels


def _stretched_bins(images: jax.Array) -> jax.Array:
    return _gray_bins(jax.vmap(_stretch_to_gray_levels)(images))


def _shannon_bits(p: jax.Array) -> jax.Array:
    nonzero = p > 0
    return -jnp.sum(jnp.where(nonzero, p * jnp.log2(jnp.where(nonzero, p, 1.0)), 0.0))


def _tsallis_mi(joint: jax.Array, q: float, liu_marginals: bool) -> jax.Array:
    """Tsallis mutual information ``(1 - sum p^q / (p_x p_y)^(q-1)) / (1 - q)`` of a
    float64 joint distribution (rows: the first image's levels, columns: the second's).

    ``liu_marginals``: pair cell (i, j) with ``p_y(i) p_x(j)``, as ``tsallis.m`` does
    (its ``sum(h)`` is the column marginal, used with the row index), skipping the cells
    where that product is 0."""
    p_x, p_y = jnp.sum(joint, axis=1), jnp.sum(joint, axis=0)
    product = p_y[:, None] * p_x[None, :] if liu_marginals else p_x[:, None] * p_y[None, :]
    used = (product > 0) & (joint > 0)
    terms = jnp.where(
        used, jnp.where(used, joint, 1.0) ** q * jnp.where(used, product, 1.0) ** (1.0 - q), 0.0
    )
    return (1.0 - jnp.sum(terms)) / (1.0 - q)


@functools.partial(jax.jit, static_argnames=("liu_marginals",))
def tsallis_fusion(sources: jax.Array, fused: jax.Array, liu_marginals: bool = False) -> jax.Array:
    """Q_TE, the Tsallis-entropy fusion metric of Liu's suite (two sources), about 0 to 1.

    Each image is min-max stretched to 0..255 and rounded (``normalize1.m``; a constant
    image becomes 0). With q = 0.43137 (Nava's constant) and the Tsallis mutual
    information ``I_q(X; Y) = (1 - sum_{x,y} p(x,y)^q (p(x) p(y))^(1-q)) / (1 - q)`` of
    256-bin joint histograms (cells with p(x,y) = 0 add nothing)::

        Q_TE = (I_q(A; F) + I_q(B; F)) / (H(A)^q + H(B)^q + I_q(A; B))

    where H is the Shannon entropy in bits: this is Z. Liu's ``metricMI.m`` (sw = 3,
    the "Q_TE" of ``fusionAssess.m``), whose denominator differs from Nava et al.'s
    ``H_q(A) + H_q(B) - I_q(A; B)`` (R. Nava, G. Cristobal, B. Escalante-Ramirez,
    "Mutual information improves image fusion quality assessments", SPIE Newsroom
    2007; N. Cvejic, C. N. Canagarajah, D. R. Bull, "Image fusion metric based on mutual
    information and Tsallis entropy", Electron. Lett. 42 (2006)). ``tsallis.m`` pairs the
    joint probability of levels (i, j) with the marginals ``p_Y(i) p_X(j)`` (transposed);
    the default uses ``p_X(i) p_Y(j)`` as the formula says, ``liu_marginals=True``
    reproduces the code. Sums in float64.

    Args: ``sources`` ``(2, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255 (scale-free).
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, exactly=2)

    def core(srcs, fus):
        bins = _stretched_bins(jnp.concatenate([srcs, fus[None]], axis=0))
        counts = [_joint_histogram(bins[i], bins[j]) for i, j in ((0, 2), (1, 2), (0, 1))]
        with jax.enable_x64(True):
            joints = [c.astype(jnp.float64) / jnp.sum(c.astype(jnp.float64)) for c in counts]
            i_af, i_bf, i_ab = (_tsallis_mi(j, Q_TE_Q, liu_marginals) for j in joints)
            h_a = _shannon_bits(jnp.sum(joints[2], axis=1))
            h_b = _shannon_bits(jnp.sum(joints[2], axis=0))
            value = (i_af + i_bf) / (h_a**Q_TE_Q + h_b**Q_TE_Q + i_ab)
            return value.astype(jnp.float32)

    return _map_groups(core, sources, fused)


@jax.jit
def ncie(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Q_NCIE, nonlinear correlation information entropy of the sources and F, 0 to 1.

    Each image is min-max stretched to 0..255 and rounded (``normalize1.m``). The
    nonlinear correlation coefficient of two images is their mutual information in base
    b = 256 (``NCC = (H(X) + H(Y) - H(X, Y)) / log2(256)`` from the 256x256 joint
    histogram), 0 to 1. With the K x K matrix R of NCCs between all K = N + 1 images
    (sources and F; 1 on the diagonal) and its eigenvalues ``r_i``::

        Q_NCIE = 1 + sum_i (r_i / K) log_b(r_i / K)

    (terms with ``r_i = 0`` count 0). The log is to base b = 256, as in Liu's code, so
    the range is ``1 - log_256(K)`` (mutually independent images, R = I; 0.8019 for
    K = 3) to 1 (identical images with a flat 256-level histogram, R all ones): the
    range of the published Q_NCIE tables. Wang et al. take the log to base K, which
    maps the same quantity onto 0..1: ``NCIE_K = 1 - (1 - Q_NCIE) log(256) / log(K)``.
    Papers: Q. Wang, Y. Shen, J. Q. Zhang, "A nonlinear correlation measure for
    multivariable data set", Physica D 200 (2005); Q. Wang, Y. Shen, J. Jin,
    "Performance evaluation of image fusion techniques", in Image Fusion: Algorithms and
    Applications (T. Stathaki, ed.), 2008. Agrees with Z. Liu's ``metricWang.m`` with
    ``NCC.m`` (N = 2, K = 3); N sources extend the matrix. Where R has a negative
    eigenvalue (possible, as R is not a covariance) the term uses ``|r_i|`` inside the
    log, the real part of MATLAB's complex result. Histogram sums and eigenvalues in
    float64.

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255 (scale-free).
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused)

    def core(srcs, fus):
        bins = _stretched_bins(jnp.concatenate([srcs, fus[None]], axis=0))
        k = bins.shape[0]
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        counts = [_joint_histogram(bins[i], bins[j]) for i, j in pairs]
        with jax.enable_x64(True):
            log_b = math.log2(GRAY_LEVELS)
            matrix = jnp.eye(k, dtype=jnp.float64)
            for (i, j), c in zip(pairs, counts, strict=True):
                joint = c.astype(jnp.float64) / jnp.sum(c.astype(jnp.float64))
                mi = (
                    _shannon_bits(jnp.sum(joint, axis=1))
                    + _shannon_bits(jnp.sum(joint, axis=0))
                    - _shannon_bits(joint.ravel())
                )
                matrix = matrix.at[i, j].set(mi / log_b).at[j, i].set(mi / log_b)
            r = jnp.linalg.eigvalsh(matrix) / k
            nonzero = r != 0
            terms = jnp.where(nonzero, r * jnp.log2(jnp.abs(jnp.where(nonzero, r, 1.0))), 0.0)
            return (1.0 + jnp.sum(terms) / log_b).astype(jnp.float32)

    return _map_groups(core, sources, fused)
