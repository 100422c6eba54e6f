"""Image statistics of the fused image alone: EN, SD, SF, AG, EI.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ifcnn_jax.metrics._common import (
    _as_images,
    _check_min_size,
    _entropy_of_counts,
    _gray_bins,
    _histogram,
    _map_images,
    _matlab_gradient,
    _mean,
    _total,
)


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


def _sobel_magnitude_replicate(im: jax.Array) -> jax.Array:
    """``sqrt(gx^2 + gy^2)`` of MATLAB's ``imfilter(im, fspecial('sobel'), 'replicate')``
    and of its transpose (correlation; edge pixels repeated)."""
    p = jnp.pad(im, 1, mode="edge")
    h, w = im.shape

    def at(dy, dx):
        return p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    # fspecial('sobel') = [1 2 1; 0 0 0; -1 -2 -1]: rows above minus rows below.
    gx = (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1)) - (at(1, -1) + 2 * at(1, 0) + at(1, 1))
    gy = (at(-1, -1) + 2 * at(0, -1) + at(1, -1)) - (at(-1, 1) + 2 * at(0, 1) + at(1, 1))
    return jnp.sqrt(gx * gx + gy * gy)


@jax.jit
def edge_intensity(image: jax.Array) -> jax.Array:
    """EI, edge intensity: the mean Sobel gradient magnitude (0-255 units).

    ``EI = mean(sqrt(gx^2 + gy^2))`` over all H*W pixels, with ``gx``, ``gy`` the
    correlations with ``[1 2 1; 0 0 0; -1 -2 -1]`` and its transpose (not divided by 8),
    edge pixels repeated (``imfilter(..., 'replicate')``). 0 for a constant image.
    Paper: B. Rajalingam, R. Priya, "Hybrid multimodality medical image fusion technique
    for feature enhancement in medical diagnosis", Int. J. Eng. Sci. Invent. (2018), as
    cited by VIFB. Agrees with VIFB ``metricsEdge_intensity.m``.

    Args: ``image`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    image = _as_images(image, "the image")
    return _map_images(lambda im: _mean(_sobel_magnitude_replicate(im)), image)
