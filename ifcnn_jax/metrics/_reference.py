"""Metrics against a ground-truth image: PSNR, SSIM, MAE.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ifcnn_jax.metrics._common import PEAK, _as_pair, _mean


@jax.jit
def psnr(fused: jax.Array, reference: jax.Array) -> jax.Array:
    """PSNR of a fused image against its ground truth, dB: ``10 log10(255^2 / MSE)``.

    MSE on the 0-255 scale; infinite when equal. Agrees with
    ``skimage.metrics.peak_signal_noise_ratio(data_range=255)``.

    Args: ``fused``, ``reference`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    fused, reference = _as_pair(fused, reference, ("the fused image", "the reference"))
    mse = _mean(jnp.square(fused - reference))
    return 10.0 * jnp.log10(PEAK * PEAK / mse)


@jax.jit
def mae(fused: jax.Array, reference: jax.Array) -> jax.Array:
    """MAE of a fused image against its ground truth, 0-255 units: ``mean |F - R|``.

    Args: ``fused``, ``reference`` ``(..., H, W)``, 0-255. Returns ``(...)``.
    """
    fused, reference = _as_pair(fused, reference, ("the fused image", "the reference"))
    return _mean(jnp.abs(fused - reference))
