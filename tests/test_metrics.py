"""Fusion metrics against plain NumPy/SciPy implementations written here, analytic cases,
batching and input errors.

The references below follow the published MATLAB code line by line (float64, loops
where the original loops), independently of the JAX code: other binning calls, SciPy
convolutions instead of slices, sliding windows instead of offset sums. Images are
integer valued on 0-255, as the uint8 images the metrics are meant for; JAX works in
float32, so values are compared to a relative 2e-6 (the largest error seen is 2e-7).
"""

from __future__ import annotations

import math

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
import skimage.data
import skimage.metrics
from numpy.lib.stride_tricks import sliding_window_view

from ifcnn_jax import metrics
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import read_image

SHAPE = (48, 64)  # non-square, to catch swapped axes; one shape keeps compiles few
LARGE_SHAPE = (176, 192)  # the smallest MS-SSIM accepts (11 * 2^4)
RTOL = 2e-6  # float32 against float64 (observed: <= 2e-7)
ATOL = 1e-7


# ------------------------------------------------------------------- reference code


def matlab_round(x):
    return np.floor(np.asarray(x, np.float64) + 0.5)


def gray_levels(x):
    return np.clip(matlab_round(x), 0, 255).astype(np.int64)


def fspecial_gaussian(size, sigma):
    half = (size - 1) / 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return h / h.sum()


def ref_entropy(f):
    counts = np.bincount(gray_levels(f).ravel(), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def ref_sd(f):
    return float(np.sqrt(np.mean((f - f.mean()) ** 2)))


def ref_sf(f):
    m, n = f.shape
    rf = np.sum((f[:, 1:] - f[:, :-1]) ** 2) / (m * n)
    cf = np.sum((f[1:, :] - f[:-1, :]) ** 2) / (m * n)
    return float(np.sqrt(rf + cf))


def ref_ag(f):
    gy, gx = np.gradient(f)  # NumPy's one-sided edges are MATLAB's gradient()
    m, n = f.shape
    return float(np.sum(np.sqrt((gx**2 + gy**2) / 2)) / ((m - 1) * (n - 1)))


def ref_mi_pair(a, b):
    joint, _, _ = np.histogram2d(
        gray_levels(a).ravel(), gray_levels(b).ravel(), bins=256, range=[[-0.5, 255.5], [-0.5, 255.5]]
    )
    p = joint / joint.sum()
    outer = np.outer(p.sum(axis=1), p.sum(axis=0))
    nz = p > 0
    return float(np.sum(p[nz] * np.log2(p[nz] / outer[nz])))


def ref_mi(sources, f):
    return sum(ref_mi_pair(s, f) for s in sources)


def ref_normalize1(x):
    lo, hi = x.min(), x.max()
    if hi == lo:
        return np.zeros_like(x)
    return matlab_round((x - lo) / (hi - lo) * 255)


def ref_nmi(sources, f):
    ff = ref_normalize1(f)
    total = 0.0
    for s in sources:
        ss = ref_normalize1(s)
        total += ref_mi_pair(ss, ff) / (ref_entropy(ss) + ref_entropy(ff))
    return 2 * total


def ref_cc(sources, f):
    return float(np.mean([np.corrcoef(s.ravel(), f.ravel())[0, 1] for s in sources]))


def ref_scd(sources, f):
    a, b = sources

    def corr2(x, y):
        return np.corrcoef(x.ravel(), y.ravel())[0, 1]

    return float(corr2(f - b, a) + corr2(f - a, b))


def ref_psnr_fusion(sources, f):
    mse = np.mean([np.mean((s - f) ** 2) for s in sources])
    return float(10 * np.log10(255.0**2 / mse))


SOBEL_H1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float64)
SOBEL_H3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)


def ref_sobel(x):
    sx = scipy.signal.convolve2d(x, SOBEL_H3, mode="same")  # MATLAB conv2(.., 'same')
    sy = scipy.signal.convolve2d(x, SOBEL_H1, mode="same")
    g = np.sqrt(sx**2 + sy**2)
    a = np.full(x.shape, np.pi / 2)
    nz = sx != 0
    a[nz] = np.arctan(sy[nz] / sx[nz])
    return g, a


def ref_qabf(sources, f, matlab_ties=False):
    g_f, a_f = ref_sobel(f)
    num = den = 0.0
    for s in sources:
        g_a, a_a = ref_sobel(s)
        G = np.zeros_like(g_a)
        over, tie, under = g_a > g_f, g_a == g_f, g_a < g_f
        G[over] = g_f[over] / g_a[over]
        G[tie] = g_f[tie] if matlab_ties else 1.0
        G[under] = g_a[under] / g_f[under]
        A = 1 - np.abs(a_a - a_f) / (np.pi / 2)
        q = 0.9994 / (1 + np.exp(-15 * (G - 0.5))) * 0.9879 / (1 + np.exp(-22 * (A - 0.8)))
        num += np.sum(q * g_a)
        den += np.sum(g_a)
    return float(num / den)


def ref_ssim_maps(x, y, window, c1, c2):
    """SSIM map and variances, 'valid', exact two-pass moments over sliding windows."""
    k = window.shape[0]
    X = sliding_window_view(x, (k, k))
    Y = sliding_window_view(y, (k, k))
    mx = np.einsum("ijab,ab->ij", X, window)
    my = np.einsum("ijab,ab->ij", Y, window)
    dx = X - mx[..., None, None]
    dy = Y - my[..., None, None]
    # A flat window has exactly zero variance (float64 leaves ~1e-28 otherwise).
    dx[np.ptp(X, axis=(2, 3)) == 0] = 0
    dy[np.ptp(Y, axis=(2, 3)) == 0] = 0
    vx = np.einsum("ijab,ab->ij", dx * dx, window)
    vy = np.einsum("ijab,ab->ij", dy * dy, window)
    cxy = np.einsum("ijab,ab->ij", dx * dy, window)
    lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
    cs = (2 * cxy + c2) / (vx + vy + c2)
    return lum * cs, cs, vx, vy


SSIM_WINDOW = fspecial_gaussian(11, 1.5)
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def ref_ssim(x, y):
    return float(np.mean(ref_ssim_maps(x, y, SSIM_WINDOW, C1, C2)[0]))


def ref_ms_ssim(x, y):
    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    value = 1.0
    for level, w in enumerate(weights):
        ssim_map, cs_map, _, _ = ref_ssim_maps(x, y, SSIM_WINDOW, C1, C2)
        if level == len(weights) - 1:
            value *= max(ssim_map.mean(), 0) ** w
        else:
            value *= max(cs_map.mean(), 0) ** w
            # msssim.m: imfilter(ones(2)/4, 'symmetric', 'same'), then (1:2:end, 1:2:end)
            x, y = [
                (
                    np.pad(im, ((0, 1), (0, 1)), mode="symmetric")[:-1, :-1]
                    + np.pad(im, ((0, 1), (0, 1)), mode="symmetric")[1:, :-1]
                    + np.pad(im, ((0, 1), (0, 1)), mode="symmetric")[:-1, 1:]
                    + np.pad(im, ((0, 1), (0, 1)), mode="symmetric")[1:, 1:]
                )[::2, ::2]
                / 4
                for im in (x, y)
            ]
    return float(value)


def ref_qy(sources, f):
    a, b = sources
    window = fspecial_gaussian(7, 1.5)
    c = 2e-16
    s_ab, _, va, vb = ref_ssim_maps(a, b, window, c, c)
    s_af = ref_ssim_maps(a, f, window, c, c)[0]
    s_bf = ref_ssim_maps(b, f, window, c, c)[0]
    with np.errstate(invalid="ignore"):
        ramda = np.where(va + vb == 0, 0.5, va / (va + vb))
    q1 = (ramda * s_af + (1 - ramda) * s_bf) * (s_ab >= 0.75)
    q2 = np.maximum(s_af, s_bf) * (s_ab < 0.75)
    return float(np.mean(q1 + q2))


def ref_vifp(ref, dist):
    """LIVE's vifp_mscale.m, one line at a time (filter2 = correlation, 'valid')."""
    sigma_nsq = 2
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = fspecial_gaussian(n, n / 5)
        if scale > 1:
            ref = scipy.signal.correlate2d(ref, win, mode="valid")[::2, ::2]
            dist = scipy.signal.correlate2d(dist, win, mode="valid")[::2, ::2]
        mu1 = scipy.signal.correlate2d(ref, win, mode="valid")
        mu2 = scipy.signal.correlate2d(dist, win, mode="valid")
        sigma1_sq = scipy.signal.correlate2d(ref * ref, win, mode="valid") - mu1 * mu1
        sigma2_sq = scipy.signal.correlate2d(dist * dist, win, mode="valid") - mu2 * mu2
        sigma12 = scipy.signal.correlate2d(ref * dist, win, mode="valid") - mu1 * mu2
        sigma1_sq[sigma1_sq < 0] = 0
        sigma2_sq[sigma2_sq < 0] = 0
        g = sigma12 / (sigma1_sq + 1e-10)
        sv_sq = sigma2_sq - g * sigma12
        m = sigma1_sq < 1e-10
        g[m] = 0
        sv_sq[m] = sigma2_sq[m]
        sigma1_sq[m] = 0
        m = sigma2_sq < 1e-10
        g[m] = 0
        sv_sq[m] = 0
        m = g < 0
        sv_sq[m] = sigma2_sq[m]
        g[m] = 0
        sv_sq[sv_sq <= 1e-10] = 1e-10
        num += np.sum(np.log10(1 + g**2 * sigma1_sq / (sv_sq + sigma_nsq)))
        den += np.sum(np.log10(1 + sigma1_sq / sigma_nsq))
    return num / den


def ref_vif(sources, f):
    return float(sum(ref_vifp(s, f) for s in sources))


def ref_qcb(sources, f):
    """Liu's metricChenBlum.m, generalised to N sources by the saliency weights."""
    images = [ref_normalize1(x) for x in [*sources, f]]
    hang, lie = f.shape

    def freqspace(n):
        return (np.arange(n) - np.floor(n / 2)) * (2 / n)

    u, v = np.meshgrid(freqspace(lie), freqspace(hang))
    u, v = lie / 30 * u, hang / 30 * v
    r = np.sqrt(u**2 + v**2)
    sd = np.exp(-((r / 15.3870) ** 2)) - 0.7622 * np.exp(-((r / 1.3456) ** 2))
    grid = np.arange(-15, 16)
    x, y = np.meshgrid(grid, grid)

    def gaussian2d(sigma):
        return np.exp(-(x * x + y * y) / (2 * sigma * sigma)) / (2 * np.pi * sigma * sigma)

    g1, g2 = gaussian2d(2), gaussian2d(4)
    cp = []
    for im in images:
        filtered = np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(im)) * sd))
        buff = scipy.signal.correlate2d(filtered, g1, mode="same")
        buff1 = scipy.signal.correlate2d(filtered, g2, mode="same")
        c = np.abs(buff / buff1 - 1)
        cp.append(c**3 / (c**2 + 1e-4))
    cf = cp[-1]
    saliency = [c * c for c in cp[:-1]]
    total = sum(saliency)
    q = 0
    for c, s in zip(cp[:-1], saliency):
        mask = c < cf
        q = q + s / total * np.where(mask, c / cf, cf / c)
    return float(np.mean(q))


def ref_ce(sources, f):
    """VIFB's metricsCross_entropy.m: mean over the sources of sum p_S log2(p_S / p_F),
    over the gray levels where both probabilities are non-zero."""
    p_f = np.bincount(gray_levels(f).ravel(), minlength=256) / f.size
    values = []
    for s in sources:
        p_s = np.bincount(gray_levels(s).ravel(), minlength=256) / s.size
        total = 0.0
        for k in range(256):
            if p_s[k] != 0 and p_f[k] != 0:
                total += p_s[k] * math.log2(p_s[k] / p_f[k])
        values.append(total)
    return float(np.mean(values))


def ref_ei(f):
    """VIFB's metricsEdge_intensity.m: imfilter with fspecial('sobel') and its transpose,
    'replicate' borders (SciPy's 'nearest'), mean magnitude."""
    sobel = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float64)
    gx = scipy.ndimage.correlate(f, sobel, mode="nearest")
    gy = scipy.ndimage.correlate(f, sobel.T, mode="nearest")
    return float(np.mean(np.sqrt(gx * gx + gy * gy)))


def ref_mse(sources, f):
    return float(np.mean([np.mean((s - f) ** 2) for s in sources]))


def ref_rmse(sources, f):
    return math.sqrt(ref_mse(sources, f))


PIELLA_BOX = np.ones((8, 8)) / 64
PIELLA_C = (1e-6 * 255) ** 2
PREWITT_X = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], np.float64)
PREWITT_Y = np.array([[1, 1, 1], [0, 0, 0], [-1, -1, -1]], np.float64)


def ref_qw(sources, f):
    """metricPeilla.m (sw=2) with Yu Liu's UIQI settings (8x8 box, K = 1e-6), N sources."""
    maps, saliency = [], []
    for s in sources:
        ssim_map, _, var_s, _ = ref_ssim_maps(s, f, PIELLA_BOX, PIELLA_C, PIELLA_C)
        maps.append(ssim_map)
        saliency.append(var_s)
    saliency = np.array(saliency)
    flat = saliency.sum(axis=0) == 0
    saliency[:, flat] += 0.5
    ramda = saliency / saliency.sum(axis=0)
    cw = saliency.max(axis=0)
    return float(np.sum(cw * np.sum(ramda * np.array(maps), axis=0)) / np.sum(cw))


def ref_prewitt(x):
    gx = scipy.signal.correlate2d(x, PREWITT_X, mode="same")  # filter2(.., 'same')
    gy = scipy.signal.correlate2d(x, PREWITT_Y, mode="same")
    return np.sqrt(gx * gx + gy * gy)


def ref_qe(sources, f):
    """metricPeilla.m (sw=3) as Yu Liu completed it: Qw(S, F) * Qw(S', F') (alpha 1)."""
    return ref_qw(sources, f) * ref_qw([ref_prewitt(s) for s in sources], ref_prewitt(f))


def ref_kumar_sobel(x):
    """sobel_fn.m: per_extn_im_fn (mirror one pixel, the edge not repeated), then the sum
    of each 3x3 window times the templates (a correlation)."""
    ext = np.pad(x, 1, mode="reflect")
    vtemp = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
    htemp = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]) / 8
    windows = sliding_window_view(ext, (3, 3))
    return np.einsum("ijab,ab->ij", windows, vtemp), np.einsum("ijab,ab->ij", windows, htemp)


def ref_nabf(sources, f):
    """objective_fusion_perform_fn.m's NABF (Kumar's modification), N sources."""
    gv_f, gh_f = ref_kumar_sobel(f)
    g_f = np.sqrt(gv_f**2 + gh_f**2)

    def angle(gv, gh):
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.arctan(gv / gh)  # atan(+-Inf) = +-pi/2, as MATLAB
        a[(gv == 0) & (gh == 0)] = 0
        return a

    a_f = angle(gv_f, gh_f)
    strengths, losses, weights = [], [], []
    for s in sources:
        gv, gh = ref_kumar_sobel(s)
        g = np.sqrt(gv**2 + gh**2)
        g_rel = np.zeros_like(g)
        over = (g > g_f) & (g != 0) & (g_f != 0)
        under = (g <= g_f) & (g != 0) & (g_f != 0)
        g_rel[over] = g_f[over] / g[over]
        g_rel[under] = g[under] / g_f[under]
        a_rel = np.abs(np.abs(angle(gv, gh) - a_f) - np.pi / 2) * 2 / np.pi
        q_g = 0.9999 / (1 + np.exp(-19 * (g_rel - 0.5)))
        q_a = 0.9995 / (1 + np.exp(-22 * (a_rel - 0.5)))
        wt = np.where(g >= 2, g**1.5, 0.001)
        strengths.append(g)
        losses.append((1 - np.sqrt(q_g * q_a)) * wt)
        weights.append(wt)
    na = np.all([g_f > g for g in strengths], axis=0)
    return float(np.sum(na * np.sum(losses, axis=0)) / np.sum(weights))


def ref_mef_ssim_scale(sources, f):
    """mef_ssim.m at one scale, patch by patch (vectorised over the patches): box means,
    norms of the patches, the desired patch built explicitly, Gaussian-weighted moments."""
    k = 11
    eps = np.finfo(np.float64).eps
    patches = np.stack([sliding_window_view(x, (k, k)).reshape(-1, k * k) for x in sources])  # (N, P, 121)
    f_patches = sliding_window_view(f, (k, k)).reshape(-1, k * k)
    mu = patches.mean(axis=2, keepdims=True)
    centred = patches - mu
    flat = np.ptp(patches, axis=2, keepdims=True) == 0  # exact zeros where a patch is flat
    centred[np.broadcast_to(flat, centred.shape)] = 0
    ed = np.linalg.norm(centred, axis=2) + 0.001  # sqrt(121 sigma^2) + 0.001
    summed = centred.sum(axis=0)
    numerator = np.linalg.norm(summed - summed.mean(axis=1, keepdims=True), axis=1)
    denominator = np.linalg.norm(centred, axis=2).sum(axis=0)
    r = (numerator + eps) / (denominator + eps)
    r[r > 1] = 1 - eps
    r[r < 0] = eps
    with np.errstate(over="ignore"):
        p = np.minimum(np.tan(np.pi / 2 * r), 10)
    w = (ed / k) ** p + eps
    w = w / w.sum(axis=0)
    r_block = np.sum(w[..., None] * centred / ed[..., None], axis=0)  # (P, 121)
    norm = np.linalg.norm(r_block, axis=1, keepdims=True)
    r_block = np.where(norm > 0, r_block / np.where(norm > 0, norm, 1) * ed.max(axis=0)[:, None], r_block)
    window = fspecial_gaussian(k, 1.5).ravel()
    mu1 = r_block @ window
    mu2 = f_patches @ window
    s1 = ((r_block - mu1[:, None]) ** 2) @ window
    s2 = ((f_patches - mu2[:, None]) ** 2) @ window
    s12 = ((r_block - mu1[:, None]) * (f_patches - mu2[:, None])) @ window
    c = (0.03 * 255) ** 2
    return float(np.mean((2 * s12 + c) / (s1 + s2 + c)))


def ref_mef_ssim(sources, f):
    """mef_ms_ssim.m: 3 scales, imfilter(ones(2)/4, 'symmetric', 'same') and (1:2:end)
    between them, weights (0.0448, 0.2856, 0.3001) normalised."""
    weights = np.array([0.0448, 0.2856, 0.3001])
    weights = weights / weights.sum()
    images = [np.asarray(x, np.float64) for x in [*sources, f]]
    q = []
    for level in range(3):
        if level:
            images = [
                (
                    np.pad(x, ((0, 1), (0, 1)), mode="symmetric")[:-1, :-1]
                    + np.pad(x, ((0, 1), (0, 1)), mode="symmetric")[1:, :-1]
                    + np.pad(x, ((0, 1), (0, 1)), mode="symmetric")[:-1, 1:]
                    + np.pad(x, ((0, 1), (0, 1)), mode="symmetric")[1:, 1:]
                )[::2, ::2]
                / 4
                for x in images
            ]
        q.append(ref_mef_ssim_scale(images[:-1], images[-1]))
    return float(np.prod(np.maximum(q, 0) ** weights))


def ref_blkproc(x, fun, size=16):
    """MATLAB blkproc(x, [size size], fun): zero padding to a multiple of the block."""
    h, w = x.shape
    padded = np.zeros((-(-h // size) * size, -(-w // size) * size), x.dtype)
    padded[:h, :w] = x
    return np.array(
        [
            [fun(padded[i : i + size, j : j + size]) for j in range(0, padded.shape[1], size)]
            for i in range(0, padded.shape[0], size)
        ]
    )


def ref_qcv(sources, f):
    """Liu's metricChen.m (VIFB's metricsQcv.m), N sources."""
    images = [ref_normalize1(x) for x in [*sources, f]]
    fused = images[-1]
    hang, lie = f.shape

    def freqspace(n):
        return (np.arange(n) - np.floor(n / 2)) * (2 / n)

    u, v = np.meshgrid(freqspace(lie), freqspace(hang))
    u, v = lie / 8 * u, hang / 8 * v
    r = np.sqrt(u**2 + v**2)
    theta_m = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))
    num = den = 0.0
    for im in images[:-1]:
        gx = scipy.signal.correlate2d(im, SOBEL_H3, mode="same")
        gy = scipy.signal.correlate2d(im, SOBEL_H3.T, mode="same")
        saliency = ref_blkproc(np.sqrt(gx**2 + gy**2), lambda b: np.sum(b**5))
        diff = np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(im - fused)) * theta_m))
        distortion = ref_blkproc(diff, lambda b: np.mean(b**2))  # complex, as MATLAB
        num = num + np.sum(saliency * distortion)
        den = den + np.sum(saliency)
    return float(np.real(num / den))


def ref_fmi_pair(a_windows, f_windows):
    """Haghighat's fmi.m for one source, vectorised over windows, loops over i and j."""
    n, l = a_windows.shape
    equal = np.all(a_windows == f_windows, axis=1)

    def pdf(sub):
        mx = sub.max(axis=1, keepdims=True)
        mn = sub.min(axis=1, keepdims=True)
        flat = mx == mn
        scaled = np.where(flat, 1.0, (sub - mn) / np.where(flat, 1.0, mx - mn))
        return scaled / scaled.sum(axis=1, keepdims=True), flat[:, 0]

    a_pdf, a_flat = pdf(a_windows)
    f_pdf, f_flat = pdf(f_windows)
    a_cdf, f_cdf = np.cumsum(a_pdf, axis=1), np.cumsum(f_pdf, axis=1)
    # fmi.m's "if sum(aTemp.*fTemp) == 0": a flat window's uniform PDF has no deviations.
    a_temp = np.where(a_flat[:, None], 0.0, a_pdf - a_pdf.mean(axis=1, keepdims=True))
    f_temp = np.where(f_flat[:, None], 0.0, f_pdf - f_pdf.mean(axis=1, keepdims=True))
    s = np.sum(a_temp * f_temp, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(s == 0, 0.0, s / np.sqrt(np.sum(a_temp**2, 1) * np.sum(f_temp**2, 1)))
    idx = np.arange(1, l + 1)
    a_sd = np.sqrt(np.maximum(np.sum(idx**2 * a_pdf, 1) - np.sum(idx * a_pdf, 1) ** 2, 0))
    f_sd = np.sqrt(np.maximum(np.sum(idx**2 * f_pdf, 1) - np.sum(idx * f_pdf, 1) ** 2, 0))

    def up(i, j):  # Frechet upper bound, fmi.m's 0.5*(x + y - |x - y|)
        return 0.5 * (f_cdf[:, i] + a_cdf[:, j] - np.abs(f_cdf[:, i] - a_cdf[:, j]))

    def lo(i, j):  # Frechet lower bound, 0.5*(x + y - 1 + |x + y - 1|)
        x = f_cdf[:, i] + a_cdf[:, j] - 1
        return 0.5 * (x + np.abs(x))

    cov_up = sum(up(i, j) - f_cdf[:, i] * a_cdf[:, j] for i in range(l) for j in range(l))
    cov_lo = sum(lo(i, j) - f_cdf[:, i] * a_cdf[:, j] for i in range(l) for j in range(l))
    sd_zero = (a_sd == 0) | (f_sd == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where((c == 0) | sd_zero, 0.0, c / (cov_up / (f_sd * a_sd)))
        theta = np.where(sd_zero, 0.0, c / (cov_lo / (f_sd * a_sd)))
    positive = c >= 0
    joint_entropy = np.zeros(n)
    for i in range(l):
        for j in range(l):

            def cell(bound):
                value = bound(i, j)
                if i > 0:
                    value = value - bound(i - 1, j)
                if j > 0:
                    value = value - bound(i, j - 1)
                if i > 0 and j > 0:
                    value = value + bound(i - 1, j - 1)
                return value

            product = f_pdf[:, i] * a_pdf[:, j]
            jpdf = np.where(
                positive, phi * cell(up) + (1 - phi) * product, theta * cell(lo) + (1 - theta) * product
            )
            with np.errstate(invalid="ignore", divide="ignore"):
                term = np.real(-jpdf * np.log2(jpdf.astype(complex)))
            joint_entropy += np.where(jpdf != 0, term, 0.0)

    def entropy(p):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sum(np.where(p != 0, -p * np.log2(p), 0.0), axis=1)

    a_entropy, f_entropy = entropy(a_pdf), entropy(f_pdf)
    mi = a_entropy + f_entropy - joint_entropy
    with np.errstate(invalid="ignore", divide="ignore"):
        fmi = np.where(mi == 0, 0.0, 2 * mi / (a_entropy + f_entropy))
    return np.where(equal, 1.0, fmi)


def ref_fmi(sources, f, feature="pixel"):
    def feat(x):
        return x if feature == "pixel" else np.gradient(x, axis=1)  # gradient(x)'s 1st output

    def windows(x):  # (n, 9) in MATLAB's column-major order
        v = sliding_window_view(feat(x), (3, 3))
        return v.transpose(0, 1, 3, 2).reshape(-1, 9)

    f_windows = windows(f)
    return float(np.mean([ref_fmi_pair(windows(s), f_windows) for s in sources], axis=0).mean())


# ------------------------------------------------------------------------ image sets


def _blur(x, sigma):
    return np.clip(matlab_round(scipy.ndimage.gaussian_filter(x, sigma)), 0, 255)


def _multifocus_set(sharp):
    """Two partly blurred copies of a sharp image and their average: a fusion-like triple."""
    w = sharp.shape[1]
    a, b = sharp.copy(), sharp.copy()
    a[:, w // 2 :] = _blur(sharp, 1.5)[:, w // 2 :]
    b[:, : w // 2] = _blur(sharp, 2.0)[:, : w // 2]
    f = matlab_round((a + b) / 2 + 0.3 * (sharp - (a + b) / 2))
    return np.stack([a, b]), np.clip(f, 0, 255)


def _random_set(shape, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape).astype(np.float64)
    b = rng.integers(0, 256, shape).astype(np.float64)
    f = np.clip(matlab_round(0.6 * a + 0.4 * b + rng.normal(0, 8, shape)), 0, 255)
    return np.stack([a, b]), f


def _camera_set(shape):
    sharp = skimage.data.camera().astype(np.float64)[100 : 100 + shape[0], 180 : 180 + shape[1]]
    return _multifocus_set(sharp)


def _release_set(release_dir, shape):

    folder = release_dir / "datasets" / "CMFDataset"
    grays = [metrics.to_gray_255(read_image(folder / f"lytro-01-{s}.jpg")).astype(np.float64) for s in "AB"]
    top, left = 200, 180
    a, b = (g[top : top + shape[0], left : left + shape[1]] for g in grays)
    return np.stack([a, b]), matlab_round((a + b) / 2)


@pytest.fixture(params=["random", "camera", "lytro"])
def image_set(request):
    if request.param == "random":
        return _random_set(SHAPE)
    if request.param == "camera":
        return _camera_set(SHAPE)
    return _release_set(request.getfixturevalue("release_dir"), SHAPE)


@pytest.fixture(params=["random", "camera", "lytro"])
def large_set(request):
    if request.param == "random":
        return _random_set(LARGE_SHAPE, seed=1)
    if request.param == "camera":
        return _camera_set(LARGE_SHAPE)
    return _release_set(request.getfixturevalue("release_dir"), LARGE_SHAPE)


# ------------------------------------------------------ JAX against the references

REFERENCES = {
    "EN": lambda s, f: ref_entropy(f),
    "SD": lambda s, f: ref_sd(f),
    "SF": lambda s, f: ref_sf(f),
    "AG": lambda s, f: ref_ag(f),
    "MI": ref_mi,
    "NMI": ref_nmi,
    "FMI_pixel": lambda s, f: ref_fmi(s, f, "pixel"),
    "FMI_gradient": lambda s, f: ref_fmi(s, f, "gradient"),
    "Qabf": ref_qabf,
    "SCD": ref_scd,
    "VIF": ref_vif,
    "SSIM_mean": lambda s, f: float(np.mean([ref_ssim(x, f) for x in s])),
    "SSIM_sum": lambda s, f: float(np.sum([ref_ssim(x, f) for x in s])),
    "CC": ref_cc,
    "PSNR": ref_psnr_fusion,
    "Qcb": ref_qcb,
    "Qy": ref_qy,
    "CE": ref_ce,
    "EI": lambda s, f: ref_ei(f),
    "MSE": ref_mse,
    "RMSE": ref_rmse,
    "Qw": ref_qw,
    "Qe": ref_qe,
    "Nabf": ref_nabf,
    "MEF_SSIM": ref_mef_ssim,
    "Qcv": ref_qcv,
}


def test_every_no_reference_metric_has_a_reference_here():
    tested_elsewhere = {"MS_SSIM_mean", "MS_SSIM_sum"} | {"Q_TE", "Q_NCIE", "Q_M"}  # test_metrics_liu.py
    assert set(metrics.NO_REFERENCE_METRICS) == set(REFERENCES) | tested_elsewhere


@pytest.mark.parametrize("name", list(REFERENCES))
def test_metric_matches_numpy_reference(name, image_set):
    sources, fused = image_set
    expected = REFERENCES[name](sources, fused)
    actual = float(
        metrics.NO_REFERENCE_METRICS[name](jnp.asarray(sources, jnp.float32), jnp.asarray(fused, jnp.float32))
    )
    assert np.isfinite(expected)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_ms_ssim_matches_numpy_reference(reduce, large_set):
    sources, fused = large_set
    values = [ref_ms_ssim(s, fused) for s in sources]
    expected = np.mean(values) if reduce == "mean" else np.sum(values)
    actual = float(metrics.ms_ssim_fusion(sources, fused, reduce=reduce))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def test_ssim_matches_skimage(image_set):
    sources, fused = image_set
    for source in sources:
        expected = skimage.metrics.structural_similarity(
            source, fused, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        np.testing.assert_allclose(float(metrics.ssim(source, fused)), expected, rtol=RTOL, atol=ATOL)


def test_qabf_matlab_ties_match_the_matlab_branch(image_set):
    sources, fused = image_set
    fused = np.maximum(sources[0], sources[1])  # F = A or B almost everywhere: many ties
    expected = ref_qabf(sources, fused, matlab_ties=True)
    actual = float(metrics.qabf(sources, fused, matlab_ties=True))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)
    paper = float(metrics.qabf(sources, fused))
    np.testing.assert_allclose(paper, ref_qabf(sources, fused), rtol=RTOL, atol=ATOL)
    assert 0 <= actual - paper <= 5.6e-4  # the documented bound of the branch


@pytest.mark.parametrize(
    "name",
    [
        "MI",
        "NMI",
        "FMI_pixel",
        "Qabf",
        "VIF",
        "SSIM_mean",
        "SSIM_sum",
        "CC",
        "PSNR",
        "Qcb",
        "CE",
        "MSE",
        "Qw",
        "Qe",
        "Nabf",
        "MEF_SSIM",
        "Qcv",
    ],
)
def test_three_sources_match_reference(name):
    sources, fused = _camera_set(SHAPE)
    third = _blur(fused, 1.0)
    sources = np.concatenate([sources, third[None]])
    expected = REFERENCES[name](sources, fused)
    actual = float(metrics.NO_REFERENCE_METRICS[name](sources, fused))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def _medical_pair(release_dir, group):
    folder = release_dir / "datasets" / "MDDataset"
    a, b = (metrics.to_gray_255(read_image(folder / f"{group}_{k}.tif")).astype(np.float64) for k in (1, 2))
    return np.stack([a, b])


MEDICAL_GROUPS = [f"c{i:02d}" for i in range(1, 9)]


@pytest.mark.parametrize("group", MEDICAL_GROUPS)
def test_tiny_constant_metrics_on_zero_background_scans(group, release_dir):
    """The MDDataset scans have exact-zero backgrounds (up to 81% of the pixels), where
    Qcb's local contrast, Qy's, VIF's, Qw's and Qe's variances (constants of 2e-16 to
    6.5e-8) depend on round-off: float32 FFTs
    moved Qcb by up to 6% there. Against the float64 ports, with F = max(A, B) (half of
    the pairs) or the rounded mean."""
    sources = _medical_pair(release_dir, group)
    a, b = sources
    fused = np.maximum(a, b) if int(group[1:]) % 2 else matlab_round((a + b) / 2)
    as_f32 = jnp.asarray(sources, jnp.float32), jnp.asarray(fused, jnp.float32)
    # Float64 Qcb itself moves by up to 2e-5 when the images are transposed (a ratio of
    # round-off remains in the farthest background), so not RTOL; observed <= 1.6e-5.
    np.testing.assert_allclose(float(metrics.qcb(*as_f32)), ref_qcb(sources, fused), rtol=1e-4)
    for name in ("Qy", "VIF", "Qw", "Qe", "Nabf", "Qcv"):
        actual = float(metrics.NO_REFERENCE_METRICS[name](*as_f32))
        np.testing.assert_allclose(actual, REFERENCES[name](sources, fused), rtol=RTOL, err_msg=name)


def test_mef_ssim_on_an_exposure_sequence(release_dir):
    """Six exposures of MEDataset's igloo (a 96x128 crop): N = 6, against the port."""
    folder = release_dir / "datasets" / "MEDataset" / "igloo"
    grays = [
        metrics.to_gray_255(read_image(folder / f"igloo{i}.jpg")).astype(np.float64) for i in range(1, 7)
    ]
    sources = np.stack([g[100:196, 60:188] for g in grays])
    fused = matlab_round(sources.mean(axis=0))
    actual = float(metrics.mef_ssim(sources, fused))
    np.testing.assert_allclose(actual, ref_mef_ssim(sources, fused), rtol=RTOL)
    # The well-exposed mean scores higher than the darkest exposure alone.
    assert actual > float(metrics.mef_ssim(sources, sources[0]))


@pytest.mark.parametrize("name", ["Qcb", "Qcv"])
def test_frequency_filtered_metrics_at_odd_sizes(name):
    """45x61: odd FFT grids (no unpaired Nyquist bin) and, for Qcv, partial 16x16 blocks
    at the bottom and right (zero padded, as blkproc)."""
    sources, fused = _camera_set(SHAPE)
    sources, fused = sources[:, :45, :61], fused[:45, :61]
    actual = float(metrics.NO_REFERENCE_METRICS[name](sources, fused))
    np.testing.assert_allclose(actual, REFERENCES[name](sources, fused), rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------- analytic cases


def test_entropy_analytic():
    assert float(metrics.entropy(np.full(SHAPE, 77.0))) == 0.0
    half = np.zeros(SHAPE)
    half[:, SHAPE[1] // 2 :] = 200
    np.testing.assert_allclose(float(metrics.entropy(half)), 1.0, rtol=1e-6)
    levels = np.arange(256, dtype=np.float64).reshape(16, 16)
    np.testing.assert_allclose(float(metrics.entropy(levels)), 8.0, rtol=1e-6)


def test_sf_and_ag_analytic():
    constant = np.full(SHAPE, 123.0)
    assert float(metrics.spatial_frequency(constant)) == 0.0
    assert float(metrics.average_gradient(constant)) == 0.0
    m, n = SHAPE
    ramp = np.tile(np.arange(n, dtype=np.float64), (m, 1))  # +1 per column
    np.testing.assert_allclose(float(metrics.spatial_frequency(ramp)), math.sqrt((n - 1) / n), rtol=1e-6)
    np.testing.assert_allclose(
        float(metrics.average_gradient(ramp)), m * n * math.sqrt(0.5) / ((m - 1) * (n - 1)), rtol=1e-6
    )


def test_mi_of_fused_equal_to_a_source(image_set):
    sources, _ = image_set
    a, b = sources
    mi = float(metrics.mutual_information(sources, a))
    expected = ref_entropy(a) + ref_mi_pair(a, b)
    np.testing.assert_allclose(mi, expected, rtol=RTOL)
    # The same identity within the JAX functions: MI(A; A) = H(A).
    np.testing.assert_allclose(
        mi, float(metrics.entropy(a)) + float(metrics.mutual_information(np.stack([b, b]), a)) / 2, rtol=RTOL
    )


QABF_MAX = (0.9994 / (1 + math.exp(-15 * 0.5))) * (0.9879 / (1 + math.exp(-22 * 0.2)))


@pytest.mark.parametrize("n", [2, 3])
def test_equal_images_give_the_maximum(n):
    image = _camera_set(SHAPE)[0][0]
    sources = np.stack([image] * n)
    expected = {
        "FMI_pixel": 1.0,
        "FMI_gradient": 1.0,
        "Qabf": QABF_MAX,
        "VIF": float(n),
        "SSIM_mean": 1.0,
        "SSIM_sum": float(n),
        "CC": 1.0,
        "Qcb": 1.0,
        "NMI": float(n),
        "PSNR": math.inf,
        "CE": 0.0,
        "MSE": 0.0,
        "RMSE": 0.0,
        "Qw": 1.0,
        "Qe": 1.0,
        "Nabf": 0.0,
        "MEF_SSIM": 1.0,
        "Qcv": 0.0,
    }
    if n == 2:
        expected["Qy"] = 1.0
    for name, value in expected.items():
        actual = float(metrics.NO_REFERENCE_METRICS[name](sources, image))
        np.testing.assert_allclose(actual, value, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(QABF_MAX, 0.974794, atol=1e-6)  # the docstring's value


def test_ms_ssim_of_equal_images_is_one():
    image = _camera_set(LARGE_SHAPE)[0][0]
    np.testing.assert_allclose(float(metrics.ms_ssim_fusion(np.stack([image, image]), image)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(
        float(metrics.ms_ssim_fusion(np.stack([image, image]), image, reduce="sum")), 2.0, rtol=1e-6
    )


def test_scd_of_the_sum_is_two(image_set):
    sources, _ = image_set
    np.testing.assert_allclose(float(metrics.scd(sources, sources[0] + sources[1])), 2.0, rtol=1e-5)


def test_fusion_psnr_analytic():
    a = _camera_set(SHAPE)[0][0]
    sources = np.stack([a + 3.0, a - 3.0])
    np.testing.assert_allclose(float(metrics.psnr_fusion(sources, a)), 10 * math.log10(255**2 / 9), rtol=1e-6)


def test_mse_and_rmse_analytic():
    a = _camera_set(SHAPE)[0][0]
    sources = np.stack([a + 3.0, a - 5.0])
    np.testing.assert_allclose(float(metrics.mse_fusion(sources, a)), (9 + 25) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(metrics.rmse_fusion(sources, a)), math.sqrt(17), rtol=1e-6)
    np.testing.assert_allclose(  # the PSNR of the same MSE
        float(metrics.psnr_fusion(sources, a)), 10 * math.log10(255**2 / 17), rtol=1e-6
    )


def test_cross_entropy_analytic():
    half = np.zeros(SHAPE)
    half[:, SHAPE[1] // 2 :] = 200  # p = (1/2, 1/2) on levels 0 and 200
    quarter = np.full(SHAPE, 200.0)
    quarter[:, : SHAPE[1] // 4] = 0  # p = (1/4, 3/4)
    expected = 0.5 * math.log2(0.5 / 0.25) + 0.5 * math.log2(0.5 / 0.75)
    np.testing.assert_allclose(
        float(metrics.cross_entropy(np.stack([half, half]), quarter)), expected, rtol=1e-6
    )
    # Levels that only one histogram has are left out, as in VIFB's code.
    third = half.copy()
    third[0, 0] = 90  # F lacks level 90: its term is dropped from CE(S_2, F)
    value = float(metrics.cross_entropy(np.stack([half, third]), quarter))
    np.testing.assert_allclose(value, ref_ce([half, third], quarter), rtol=1e-6)
    assert float(metrics.cross_entropy(np.stack([half, half]), half)) == 0.0


def test_edge_intensity_analytic():
    assert float(metrics.edge_intensity(np.full(SHAPE, 9.0))) == 0.0
    m, n = SHAPE
    ramp = np.tile(np.arange(n, dtype=np.float64), (m, 1))  # +1 per column
    # Sobel response 8 inside; 4 in the first and last columns (replicated borders).
    expected = (8 * (n - 2) + 2 * 4) / n
    np.testing.assert_allclose(float(metrics.edge_intensity(ramp)), expected, rtol=1e-6)
    # The transposed ramp (+1 per row, n rows) gives the same value through gx.
    np.testing.assert_allclose(float(metrics.edge_intensity(ramp.T)), expected, rtol=1e-6)


def test_nabf_counts_only_stronger_edges(image_set):
    sources, _ = image_set
    a, b = sources
    # F = A: no pixel has an edge stronger than A's, so no artefacts at all.
    assert float(metrics.nabf(sources, a)) == 0.0
    # Stripes of +-20, two columns wide, added to the mean create edges stronger than
    # both sources' (a checkerboard would not: Sobel does not respond to it).
    cols = np.indices(SHAPE)[1]
    noisy = np.clip(matlab_round((a + b) / 2) + 20.0 * np.where(cols % 4 < 2, 1, -1), 0, 255)
    value = float(metrics.nabf(sources, noisy))
    assert value > 0.01
    np.testing.assert_allclose(value, ref_nabf(sources, noisy), rtol=RTOL)


def test_reference_metrics():
    reference = _camera_set(SHAPE)[0][0]
    fused = np.clip(reference + 3.0, 0, 255)
    assert float(metrics.mae(reference + 3.0, reference)) == pytest.approx(3.0, rel=1e-6)
    np.testing.assert_allclose(
        float(metrics.psnr(fused, reference)),
        skimage.metrics.peak_signal_noise_ratio(reference, fused, data_range=255),
        rtol=1e-6,
    )
    np.testing.assert_allclose(float(metrics.ssim(fused, reference)), ref_ssim(fused, reference), rtol=RTOL)
    assert float(metrics.ssim(reference, reference)) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics.psnr(reference, reference)) == math.inf


def test_min_max_stretch_rounds_exact_ties_up():
    # lo 9, hi 251: (130 - 9) / 242 * 255 = 127.5 exactly, which MATLAB rounds to 128;
    # a division done as a multiplication by 1/242 would give 127.
    rng = np.random.default_rng(11)
    fused = rng.integers(9, 252, SHAPE).astype(np.float64)
    fused[0, :2] = 9, 251
    fused[1:6, :] = 130
    sources = _random_set(SHAPE, seed=12)[0]
    assert ref_normalize1(fused)[3, 3] == 128
    for name, ref in (("NMI", ref_nmi), ("Qcb", ref_qcb)):
        np.testing.assert_allclose(
            float(metrics.NO_REFERENCE_METRICS[name](sources, fused)),
            ref(sources, fused),
            rtol=RTOL,
            atol=ATOL,
            err_msg=name,
        )


def test_qabf_is_scale_free_and_the_matlab_branch_is_not(image_set):
    sources, _ = image_set
    fused = np.maximum(sources[0], sources[1])
    on_255 = float(metrics.qabf(sources, fused))
    # Dividing by 256 is exact in floating point, so ties and sx == 0 survive the scaling
    # (with /255 rounding moves some of them, a ~1e-4 effect).
    np.testing.assert_allclose(float(metrics.qabf(sources / 256, fused / 256)), on_255, rtol=1e-6)
    # The MATLAB branch on a 0-1 scale scores every tie with G = g_F < 1: lower values.
    matlab_unit = float(metrics.qabf(sources / 256, fused / 256, matlab_ties=True))
    np.testing.assert_allclose(matlab_unit, ref_qabf(sources / 256, fused / 256, True), rtol=RTOL)
    assert matlab_unit < on_255


# ---------------------------------------------------------------------------- batching


def test_batched_equals_unbatched():
    batch = [_random_set(SHAPE, seed=3), _camera_set(SHAPE)]
    sources = np.stack([s for s, _ in batch], axis=1)  # (N, B, H, W)
    fused = np.stack([f for _, f in batch])  # (B, H, W)
    for name, metric in metrics.NO_REFERENCE_METRICS.items():
        if not metric.applies_to(2, *SHAPE):
            continue
        batched = np.asarray(metric(sources, fused))
        assert batched.shape == (2,), name
        single = [float(metric(s, f)) for s, f in batch]
        np.testing.assert_allclose(batched, single, rtol=1e-6, err_msg=name)
    two_axes = np.asarray(metrics.qabf(sources[:, None], fused[None]))
    assert two_axes.shape == (1, 2)


def test_batched_ms_ssim_and_reference_metrics():
    sets = [_random_set(LARGE_SHAPE, seed=4), _camera_set(LARGE_SHAPE)]
    sources = np.stack([s for s, _ in sets], axis=1)
    fused = np.stack([f for _, f in sets])
    batched = np.asarray(metrics.ms_ssim_fusion(sources, fused))
    single = [float(metrics.ms_ssim_fusion(s, f)) for s, f in sets]
    np.testing.assert_allclose(batched, single, rtol=1e-6)
    reference = sources[0]
    for fn in (metrics.psnr, metrics.ssim, metrics.mae):
        np.testing.assert_allclose(
            np.asarray(fn(fused, reference)), [float(fn(f, r)) for f, r in zip(fused, reference)], rtol=1e-6
        )


# ------------------------------------------------------------------------------ errors


def test_different_sizes_raise():
    sources, fused = _random_set(SHAPE)
    with pytest.raises(IFCNNError, match="sizes must match"):
        metrics.qabf(sources, fused[:, :-1])
    with pytest.raises(IFCNNError, match="sizes must match"):
        metrics.psnr(fused, fused[:-1])
    with pytest.raises(IFCNNError, match="source 2 is 48x63"):
        metrics.evaluate([sources[0], sources[1][:, :-1]], fused)
    with pytest.raises(IFCNNError, match="reference image is 47x64"):
        metrics.evaluate(sources, fused, reference=fused[:-1])


def test_nan_and_range_raise():
    sources, fused = _random_set(SHAPE)
    broken = fused.copy()
    broken[3, 4] = np.nan
    with pytest.raises(IFCNNError, match="fused image contains NaN"):
        metrics.evaluate(sources, broken)
    broken[3, 4] = np.inf
    with pytest.raises(IFCNNError, match="fused image contains infinite"):
        metrics.evaluate(sources, broken)
    with pytest.raises(IFCNNError, match="source 1 has values from .* 0-255 scale"):
        metrics.evaluate([sources[0] * 2, sources[1]], fused)


def test_source_count_and_size_rules():
    sources, fused = _random_set(SHAPE)
    with pytest.raises(IFCNNError, match="at least 2 sources"):
        metrics.evaluate(sources[:1], fused)
    with pytest.raises(IFCNNError, match="at least 2 sources"):
        metrics.mutual_information(sources[:1], fused)
    three = np.concatenate([sources, sources[:1]])
    with pytest.raises(IFCNNError, match="exactly 2 sources"):
        metrics.scd(three, fused)
    with pytest.raises(IFCNNError, match="at least 176"):
        metrics.ms_ssim_fusion(sources, fused)
    with pytest.raises(IFCNNError, match="needs images of at least 176x176"):
        metrics.evaluate(sources, fused, names=["MS_SSIM_mean"])
    with pytest.raises(IFCNNError, match="metric Qy needs exactly 2 sources"):
        metrics.evaluate(three, fused, names=["Qy"])
    with pytest.raises(IFCNNError, match="unknown metric"):
        metrics.evaluate(sources, fused, names=["BRISQUE"])
    with pytest.raises(IFCNNError, match="needs a reference"):
        metrics.evaluate(sources, fused, names=["PSNR_ref"])


def test_evaluate_defaults_skip_what_does_not_apply():
    sources, fused = _camera_set(SHAPE)
    result = metrics.evaluate(sources, fused, reference=fused)
    assert list(result) == list(metrics.ALL_METRICS)
    assert math.isnan(result["MS_SSIM_mean"]) and math.isnan(result["MS_SSIM_sum"])
    np.testing.assert_allclose(result["Qabf"], ref_qabf(sources, fused), rtol=RTOL)
    np.testing.assert_allclose(result["SSIM_sum"], 2 * result["SSIM_mean"], rtol=1e-7)
    assert result["MAE_ref"] == 0.0
    three = metrics.evaluate(np.concatenate([sources, sources[:1]]), fused)
    assert math.isnan(three["SCD"]) and math.isnan(three["Qy"])
    np.testing.assert_allclose(three["MI"], ref_mi(np.concatenate([sources, sources[:1]]), fused), rtol=RTOL)
    subset = metrics.evaluate(sources, fused, names=["EN", "Qy"])
    assert list(subset) == ["EN", "Qy"]


def test_colour_is_evaluated_on_luminance():

    rng = np.random.default_rng(7)
    rgb = [rng.integers(0, 256, SHAPE + (3,), dtype=np.uint8) for _ in range(3)]
    grays = [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in rgb]
    from_rgb = metrics.evaluate(rgb[:2], rgb[2], names=["EN", "MI", "Qabf"])
    from_gray = metrics.evaluate(grays[:2], grays[2], names=["EN", "MI", "Qabf"])
    assert from_rgb == from_gray
    np.testing.assert_allclose(
        np.asarray(metrics.luminance(rgb[0].astype(np.float32))),
        rgb[0].astype(np.float64) @ [0.299, 0.587, 0.114],
        rtol=1e-6,
    )
    sixteen = grays[0].astype(np.uint16) * 257
    np.testing.assert_array_equal(metrics.to_gray_255(sixteen), grays[0].astype(np.float32))


class TestEvaluateProgress:
    def test_counts_every_metric_and_changes_no_value(self):
        rng = np.random.default_rng(5)
        sources = [rng.integers(0, 256, (48, 64), dtype=np.uint8) for _ in range(2)]
        fused = np.maximum(*sources)
        names = ["EN", "SD", "Qabf", "SSIM_mean"]
        calls = []
        with_bar = metrics.evaluate(sources, fused, names=names, progress=lambda d, t: calls.append((d, t)))
        assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
        assert with_bar == metrics.evaluate(sources, fused, names=names)
