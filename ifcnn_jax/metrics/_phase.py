"""Zhao's phase-congruency fusion metric Q_P, with Kovesi's phase congruency as in Liu's
``myphasecong3.m``.

Everything here is computed in float64: the phase congruency is a ratio of sums of
log-Gabor responses with an absolute epsilon (1e-4), thresholded at 0.1 afterwards.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ifcnn_jax.metrics._common import (
    PC_CUTOFF,
    PC_D_THETA_ON_SIGMA,
    PC_EPSILON,
    PC_G,
    PC_K,
    PC_LOWPASS_CUTOFF,
    PC_LOWPASS_ORDER,
    PC_MIN_WAVELENGTH,
    PC_MULT,
    PC_NORIENT,
    PC_NSCALE,
    PC_SIGMA_ON_F,
    QP_C,
    QP_THRESHOLD,
    SSIM_SIGMA,
    SSIM_WINDOW,
    _as_group,
    _map_groups,
    gaussian_window,
)


def _frequency_grid(n: int) -> np.ndarray:
    """myphasecong3.m's normalised frequencies along one axis (before ifftshift)."""
    if n % 2:
        return np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / (n - 1)
    return np.arange(-n / 2, n / 2) / n


def _log_gabor_bank(h: int, w: int) -> np.ndarray:
    """``(norient, nscale, H, W)`` filters ``logGabor_s * spread_o`` in FFT order, float64.

    Radial: ``exp(-log(r / f0)^2 / (2 log(0.55)^2))``, f0 = 1 / (3 * 2.1^s), times the
    Butterworth low-pass ``1 / (1 + (r / 0.45)^30)`` on lowpassfilter.m's own grid
    (``fftshift``, which for odd sizes is not the inverse of the grid's ``ifftshift``,
    as in the code), 0 at DC. Angular: ``exp(-dtheta^2 / (2 sigma_theta^2))``,
    sigma_theta = pi / 6 / 1.2. These depend only on the image size."""
    x, y = np.meshgrid(_frequency_grid(w), _frequency_grid(h))
    radius = np.sqrt(x * x + y * y)
    radius[h // 2, w // 2] = 1.0
    theta = np.fft.ifftshift(np.arctan2(-y, x))
    radius = np.fft.ifftshift(radius)
    lx = (np.arange(1, w + 1)[None, :] - (w // 2 + 1)) / w
    ly = (np.arange(1, h + 1)[:, None] - (h // 2 + 1)) / h
    lowpass = np.fft.fftshift(
        1.0 / (1.0 + (np.sqrt(lx * lx + ly * ly) / PC_LOWPASS_CUTOFF) ** (2 * PC_LOWPASS_ORDER))
    )
    radial = []
    for s in range(PC_NSCALE):
        f0 = 1.0 / (PC_MIN_WAVELENGTH * PC_MULT**s)
        g = np.exp(-(np.log(radius / f0) ** 2) / (2 * math.log(PC_SIGMA_ON_F) ** 2)) * lowpass
        g[0, 0] = 0.0
        radial.append(g)
    theta_sigma = math.pi / PC_NORIENT / PC_D_THETA_ON_SIGMA
    sin_t, cos_t = np.sin(theta), np.cos(theta)
    bank = np.empty((PC_NORIENT, PC_NSCALE, h, w))
    for o in range(PC_NORIENT):
        angle = o * math.pi / PC_NORIENT
        ds = sin_t * math.cos(angle) - cos_t * math.sin(angle)
        dc = cos_t * math.cos(angle) + sin_t * math.sin(angle)
        spread = np.exp(-(np.arctan2(ds, dc) ** 2) / (2 * theta_sigma**2))
        for s in range(PC_NSCALE):
            bank[o, s] = radial[s] * spread
    return bank


def _noise_factors(bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per orientation: ``sum(filter_1^2)`` (EM_n) and the expected squared noise energy
    per unit noise power, ``2 sum_s sum f_s^2 + 4 sum_{s<t} sum f_s f_t`` over the spatial
    filters ``f_s = real(ifft2(filter_s)) sqrt(HW)``. Image-independent, float64."""
    h, w = bank.shape[-2:]
    spatial = np.real(np.fft.ifft2(bank)) * math.sqrt(h * w)
    em_n = np.sum(bank[:, 0] ** 2, axis=(-2, -1))
    sum_sq = np.sum(spatial**2, axis=(1, 2, 3))
    cross = sum(
        np.sum(spatial[:, i] * spatial[:, j], axis=(-2, -1))
        for i in range(PC_NSCALE)
        for j in range(i + 1, PC_NSCALE)
    )
    return em_n, 2.0 * sum_sq + 4.0 * cross


def _phase_congruency(image: jax.Array, bank: jax.Array, em_n: jax.Array, noise2: jax.Array):
    """``(PC, M, m)`` of one (H, W) float64 image: myphasecong3.m's phase congruency and
    the maximum and minimum moments of the per-orientation phase congruencies."""
    spectrum = jnp.fft.fft2(image)
    eo = jnp.fft.ifft2(spectrum[None, None] * bank)  # (norient, nscale, H, W)
    even, odd = jnp.real(eo), jnp.imag(eo)
    amplitude = jnp.abs(eo)
    sum_an = jnp.sum(amplitude, axis=1)
    sum_e, sum_o = jnp.sum(even, axis=1), jnp.sum(odd, axis=1)
    max_an = jnp.max(amplitude, axis=1)
    x_energy = jnp.sqrt(sum_e * sum_e + sum_o * sum_o) + PC_EPSILON
    mean_e, mean_o = (sum_e / x_energy)[:, None], (sum_o / x_energy)[:, None]
    energy = jnp.sum(even * mean_e + odd * mean_o - jnp.abs(even * mean_o - odd * mean_e), axis=1)
    # Noise: the median of the smallest scale's squared amplitude gives the Rayleigh
    # mean; the threshold is mean + k sigma of the noise energy, divided by 1.7.
    median = jnp.median((amplitude[:, 0] ** 2).reshape(PC_NORIENT, -1), axis=1)
    noise_power = (-median / math.log(0.5)) / em_n
    tau = jnp.sqrt(noise_power * noise2 / 2.0)
    threshold = (tau * math.sqrt(math.pi / 2) + PC_K * jnp.sqrt((2 - math.pi / 2) * tau * tau)) / 1.7
    energy = jnp.maximum(energy - threshold[:, None, None], 0.0)
    width = sum_an / (max_an + PC_EPSILON) / PC_NSCALE
    weight = 1.0 / (1.0 + jnp.exp((PC_CUTOFF - width) * PC_G))
    weighted = weight * energy
    pc = jnp.sum(weighted, axis=0) / (jnp.sum(sum_an, axis=0) + PC_EPSILON)
    per_orient = weighted / sum_an
    angles = jnp.asarray([o * math.pi / PC_NORIENT for o in range(PC_NORIENT)], jnp.float64)[:, None, None]
    cx, cy = per_orient * jnp.cos(angles), per_orient * jnp.sin(angles)
    covx2 = jnp.sum(cx * cx, axis=0) / (PC_NORIENT / 2)
    covy2 = jnp.sum(cy * cy, axis=0) / (PC_NORIENT / 2)
    covxy = jnp.sum(cx * cy, axis=0) / PC_NORIENT
    denom = jnp.sqrt(covxy * covxy + (covx2 - covy2) ** 2) + PC_EPSILON
    return pc, (covy2 + covx2 + denom) / 2, (covy2 + covx2 - denom) / 2


def _filter_same(x: jax.Array, taps: np.ndarray) -> jax.Array:
    """``filter2(outer(taps, taps), x, 'same')``, zero padding, float64."""
    r = len(taps) // 2
    h, w = x.shape
    p = jnp.pad(x, r)
    rows = sum(float(t) * p[:, i : i + w] for i, t in enumerate(taps))
    return sum(float(t) * rows[i : i + h] for i, t in enumerate(taps))


def _masked_correlation(features: list[jax.Array], masks: list[jax.Array], fused: jax.Array) -> jax.Array:
    """metricZhao.m's correlation_coeffcient: per pixel the largest of the local
    correlations ``(s_xf + C) / (sqrt|s_x^2 s_f^2| + C)`` of each masked feature map with
    F's (unmasked) one (0 outside each mask), summed and divided by the last mask's area.
    Local moments by one-pass 11x11 Gaussian windows ('same', as the code)."""
    taps = gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
    mu_f = _filter_same(fused, taps)
    var_f = _filter_same(fused * fused, taps) - mu_f * mu_f
    best = None
    for feature, mask in zip(features, masks, strict=True):
        x = jnp.where(mask, feature, 0.0)
        mu_x = _filter_same(x, taps)
        var_x = _filter_same(x * x, taps) - mu_x * mu_x
        cov = _filter_same(x * fused, taps) - mu_x * mu_f
        res = jnp.where(mask, (cov + QP_C) / (jnp.sqrt(jnp.abs(var_x * var_f)) + QP_C), 0.0)
        best = res if best is None else jnp.maximum(best, res)
    return jnp.sum(best) / jnp.sum(masks[-1].astype(jnp.float64))


def _qp_core(srcs: jax.Array, fus: jax.Array) -> jax.Array:
    h, w = fus.shape
    bank_np = _log_gabor_bank(h, w)
    em_n, noise2 = _noise_factors(bank_np)
    with jax.enable_x64(True):
        bank = jnp.asarray(bank_np)
        maps = [
            _phase_congruency(x.astype(jnp.float64), bank, jnp.asarray(em_n), jnp.asarray(noise2))
            for x in (srcs[0], srcs[1], fus)
        ]
        (pc1, big1, small1), (pc2, big2, small2), fused_maps = maps
        first = pc1 > pc2  # metricZhao.m: ties take the second source
        pc_max = jnp.where(first, pc1, pc2)
        masks = [pc1 > QP_THRESHOLD, pc2 > QP_THRESHOLD, pc_max > QP_THRESHOLD]
        value = 1.0
        for feature, (one, two) in enumerate(((pc1, pc2), (big1, big2), (small1, small2))):
            features = [one, two, jnp.where(first, one, two)]
            value = value * _masked_correlation(features, masks, fused_maps[feature])
        return jnp.asarray(value, jnp.float64).astype(jnp.float32)


@jax.jit
def qp(sources: jax.Array, fused: jax.Array) -> jax.Array:
    """Q_P, Zhao's phase-congruency fusion metric (two sources), about 0 to 1.

    For each image, Kovesi's phase congruency PC (4 log-Gabor scales, minimum wavelength
    3, ratio 2.1, sigma/f 0.55; 6 orientations, d_theta/sigma 1.2; noise threshold k = 2
    with the code's 1/1.7 rescaling; frequency-spread weighting cut-off 0.5, gain 10;
    epsilon 1e-4) and the maximum and minimum moments M, m of the per-orientation phase
    congruencies, all as in Liu's ``myphasecong3.m``. With ``PC_max`` the larger of the
    sources' PC (ties: the second source; M_max, m_max taken from the same source), masks
    ``PC_k > 0.1`` and ``PC_max > 0.1``, and for each feature P in (PC, M, m)::

        C_P = sum_pixels max(c(P_A), c(P_B), c(P_max)) / |PC_max > 0.1|

    where ``c(P_x)`` is, inside x's mask, the local correlation
    ``(s_xF + C) / (sqrt|s_x^2 s_F^2| + C)`` (C = 1e-4, 11x11 Gaussian windows with
    sigma 1.5, 'same' zero padding, one-pass moments) of the masked feature map with F's
    unmasked one, and 0 outside; ``Q_P = C_PC * C_M * C_m``.
    Paper: J. Zhao, R. Laganiere, Z. Liu, "Performance assessment of combinative
    pixel-level image fusion based on an absolute feature measurement", Int. J. Innov.
    Comput. Inf. Control 3 (2007); P. Kovesi, "Image features from phase congruency",
    Videre 1 (1999). Agrees with Z. Liu's ``metricZhao.m`` and ``myphasecong3.m``.
    NaN for a constant image (its per-orientation PC is 0/0, as in the code). Costly
    (25 FFTs of the image size per image, in float64): an opt-in metric.

    Args: ``sources`` ``(2, ..., H, W)``, ``fused`` ``(..., H, W)``, 0-255.
    Returns ``(...)``.
    """
    sources, fused = _as_group(sources, fused, exactly=2, min_size=2)
    return _map_groups(_qp_core, sources, fused)
