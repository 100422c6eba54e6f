"""Visual information fidelity (pixel domain), summed over the sources.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ifcnn_jax.metrics._common import (
    VIF_EPS,
    VIF_MIN_SIZE,
    VIF_NOISE_VAR,
    VIF_SCALES,
    _as_group,
    _filter_valid,
    _local_moments,
    _map_groups,
    _over_sources,
    _total,
    gaussian_window,
)


def _vifp_core(ref: jax.Array, dist: jax.Array) -> jax.Array:
    """LIVE's ``vifp_mscale.m``: pixel-domain VIF over 4 scales, ``sum num / sum den``."""
    num = 0.0
    den = 0.0
    for scale in range(1, VIF_SCALES + 1):
        size = 2 ** (VIF_SCALES - scale + 1) + 1
        taps = gaussian_window(size, size / 5.0)
        if scale > 1:
            ref = _filter_valid(ref, taps)[::2, ::2]
            dist = _filter_valid(dist, taps)[::2, ::2]
        _, _, var_r, var_d, cov = _local_moments(ref, dist, taps)
        var_r = jnp.maximum(var_r, 0.0)
        var_d = jnp.maximum(var_d, 0.0)
        gain = cov / (var_r + VIF_EPS)
        noise = var_d - gain * cov
        # The order of these corrections is vifp_mscale.m's.
        flat_ref = var_r < VIF_EPS
        gain = jnp.where(flat_ref, 0.0, gain)
        noise = jnp.where(flat_ref, var_d, noise)
        var_r = jnp.where(flat_ref, 0.0, var_r)
        flat_dist = var_d < VIF_EPS
        gain = jnp.where(flat_dist, 0.0, gain)
        noise = jnp.where(flat_dist, 0.0, noise)
        negative = gain < 0
        noise = jnp.where(negative, var_d, noise)
        gain = jnp.maximum(gain, 0.0)
        noise = jnp.maximum(noise, VIF_EPS)
        num = num + _total(jnp.log10(1.0 + gain * gain * var_r / (noise + VIF_NOISE_VAR)))
        den = den + _total(jnp.log10(1.0 + var_r / VIF_NOISE_VAR))
    return num / den


@jax.jit
def vif(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """VIF for fusion: sum over the sources of the pixel-domain VIF of F against S_k.

    ``VIF = sum_k VIFp(S_k, F)``; VIFp is the multi-scale pixel-domain VIF: at 4 scales
    (Gaussian windows 17, 9, 5, 3 with sigma = size/5; from scale 2 on, each image is
    filtered 'valid' with that scale's window and decimated by 2), a Gaussian scalar
    GSM channel ``F = g S + v`` is fitted per window and
    ``VIFp = sum log10(1 + g^2 s_S^2 / (s_v^2 + 2)) / sum log10(1 + s_S^2 / 2)``, with
    vifp_mscale.m's guards at 1e-10. Equal images give 1 per source (N in all).
    Papers: H. R. Sheikh, A. C. Bovik, "Image information and visual quality", IEEE TIP
    15 (2006). Agrees with LIVE's ``vifp_mscale.m`` summed over the sources, as Tang's
    ``analysis_Reference.m`` does. Not VIFF (Y. Han et al., Inf. Fusion 14 (2013)).
    NaN when a source is constant (no information to preserve).

    Args: ``sources`` ``(N, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255, sides >= 41.
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, min_size=VIF_MIN_SIZE)
    return _map_groups(lambda srcs, fus: jnp.sum(_over_sources(_vifp_core, srcs, fus)), sources, fused)
