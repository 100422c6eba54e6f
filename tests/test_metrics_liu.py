"""Metrics of Z. Liu's suite and Haghighat's FMI features beyond those of test_metrics.py:
Q_TE, Q_NCIE, FMI_dct.

Each metric is checked twice: against an analytic case or an independent NumPy formula
(written from the papers' definitions, vectorised), and against a NumPy port of the
public MATLAB code written here from reading it (loops and index rules as there).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
import scipy.signal
from numpy.lib.stride_tricks import sliding_window_view

from ifcnn_jax import metrics
from tests.test_metrics import (
    ATOL,
    LARGE_SHAPE,
    RTOL,
    SHAPE,
    _camera_set,
    _random_set,
    _release_set,
    fspecial_gaussian,
    matlab_round,
    ref_fmi_pair,
)

Q_TE_Q = 0.43137  # Nava's constant, metricMI.m sw = 3


# ------------------------------------------------------------------- reference code


def ref_normalize1(x):
    """Liu's normalize1.m: min-max to 0..255, round half up (values are >= 0)."""
    x = np.asarray(x, np.float64)
    hi, lo = x.max(), x.min()
    if hi == 0 and lo == 0:
        return x
    return matlab_round((x - lo) / (hi - lo) * 255)


def liu_joint_histogram(x, y):
    """h(x+1, y+1) += 1 over all pixels, as tsallis.m / NCC.m / mutual_info.m."""
    h = np.zeros((256, 256))
    np.add.at(h, (x.astype(np.int64).ravel(), y.astype(np.int64).ravel()), 1)
    return h / h.sum()


def liu_tsallis(x, y, q):
    """tsallis.m: note that sum(h) is the column marginal, used with the row index."""
    h = liu_joint_histogram(x, y)
    im1_marg = h.sum(axis=0)  # MATLAB sum(h): one value per column
    im2_marg = h.sum(axis=1)  # sum(h'): one value per row
    result = 0.0
    for i in range(256):
        buff = im1_marg[i] * im2_marg
        ok = buff != 0
        result += np.sum(h[i, ok] ** q / buff[ok] ** (q - 1))
    return (1 - result) / (1 - q)


def liu_entropies(x, y):
    """mutual_info.m's H_x and H_y (of the column and row marginals), bits."""
    h = liu_joint_histogram(x, y)
    m1, m2 = h.sum(axis=0), h.sum(axis=1)
    return -np.sum(m1 * np.log2(m1 + (m1 == 0))), -np.sum(m2 * np.log2(m2 + (m2 == 0)))


def liu_q_te(sources, f):
    """metricMI.m with sw = 3."""
    a, b, f = (ref_normalize1(x) for x in (sources[0], sources[1], f))
    i_fx, i_fy, i_xy = liu_tsallis(a, f, Q_TE_Q), liu_tsallis(b, f, Q_TE_Q), liu_tsallis(a, b, Q_TE_Q)
    h_x, h_y = liu_entropies(a, b)
    return (i_fx + i_fy) / (h_x**Q_TE_Q + h_y**Q_TE_Q + i_xy)


def liu_ncc(x, y):
    h = liu_joint_histogram(x, y)
    m1, m2 = h.sum(axis=0), h.sum(axis=1)
    h_x = -np.sum(m1 * np.log2(m1 + (m1 == 0))) / 8
    h_y = -np.sum(m2 * np.log2(m2 + (m2 == 0))) / 8
    h_xy = -np.sum(h * np.log2(h + (h == 0))) / 8
    return h_x + h_y - h_xy


def liu_ncie(sources, f):
    """metricWang.m (two sources)."""
    a, b, f = (ref_normalize1(x) for x in (sources[0], sources[1], f))
    xy, xf, yf = liu_ncc(a, b), liu_ncc(a, f), liu_ncc(b, f)
    r = np.linalg.eigvals(np.array([[1, xy, xf], [xy, 1, yf], [xf, yf, 1]]))
    hr = -np.sum(r * np.log2(r / 3) / 3) / np.log2(256)
    return float(np.real(1 - hr))


def formula_tsallis_mi(x, y, q):
    """Cvejic et al.'s I_q(X; Y) with the marginals the formula names, from histogram2d."""
    joint, _, _ = np.histogram2d(x.ravel(), y.ravel(), bins=256, range=[[-0.5, 255.5], [-0.5, 255.5]])
    joint /= joint.sum()
    px, py = joint.sum(axis=1), joint.sum(axis=0)
    product = np.outer(px, py)
    nz = joint > 0
    return (1 - np.sum(joint[nz] ** q * product[nz] ** (1 - q))) / (1 - q)


def formula_shannon(x):
    p = np.bincount(x.astype(np.int64).ravel(), minlength=256) / x.size
    p = p[p > 0]
    return -np.sum(p * np.log2(p))


def formula_q_te(sources, f):
    a, b, f = (ref_normalize1(x) for x in (sources[0], sources[1], f))
    num = formula_tsallis_mi(a, f, Q_TE_Q) + formula_tsallis_mi(b, f, Q_TE_Q)
    return num / (
        formula_shannon(a) ** Q_TE_Q + formula_shannon(b) ** Q_TE_Q + formula_tsallis_mi(a, b, Q_TE_Q)
    )


def formula_ncie(sources, f):
    """Wang's NCIE of all N + 1 images, base-256 logs, from histogram2d and eigvalsh."""
    images = [ref_normalize1(x) for x in list(sources) + [f]]
    k = len(images)
    r = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            joint, _, _ = np.histogram2d(
                images[i].ravel(), images[j].ravel(), bins=256, range=[[-0.5, 255.5], [-0.5, 255.5]]
            )
            p = joint[joint > 0] / joint.sum()
            mi = formula_shannon(images[i]) + formula_shannon(images[j]) + np.sum(p * np.log2(p))
            r[i, j] = r[j, i] = mi / 8
    lam = np.linalg.eigvalsh(r) / k
    return 1 + np.sum(lam * np.log2(lam)) / 8


def _as_jax(sources, f):
    return jnp.asarray(sources, jnp.float32), jnp.asarray(f, jnp.float32)


def _four_level_image(shape=(48, 64)):
    """Gray levels 0, 85, 170, 255 on a quarter of the pixels each (stretch leaves them)."""
    levels = np.array([0.0, 85.0, 170.0, 255.0])
    index = (np.arange(shape[0])[:, None] % 2) * 2 + (np.arange(shape[1])[None, :] % 2)
    return levels[index]


@pytest.fixture(params=["random", "camera", "lytro"])
def group(request):
    """test_metrics.py's three image sets (48x64): noise, a natural and a Lytro crop."""
    if request.param == "random":
        return _random_set(SHAPE)
    if request.param == "camera":
        return _camera_set(SHAPE)
    return _release_set(request.getfixturevalue("release_dir"), SHAPE)


# ----------------------------------------------------------------------------- Q_TE


def test_q_te_matches_liu_code(group):
    sources, fused = group
    expected = liu_q_te(sources, fused)
    actual = float(metrics.tsallis_fusion(*_as_jax(sources, fused), liu_marginals=True))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def test_q_te_matches_the_formula(group):
    sources, fused = group
    expected = formula_q_te(sources, fused)
    actual = float(metrics.NO_REFERENCE_METRICS["Q_TE"](*_as_jax(sources, fused)))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def test_q_te_analytic():
    """All three images equal, four equally likely levels: I_q = (1 - 4^(q-1)) / (1 - q)
    for every pair, H = 2 bits, so Q_TE = 2 I / (2 * 2^q + I). Independent F (joint
    uniform on the product of two uniform marginals): I_q(S; F) = 0, Q_TE = 0."""
    x = _four_level_image()
    q = Q_TE_Q
    mi = (1 - 4 ** (q - 1)) / (1 - q)
    expected = 2 * mi / (2 * 2**q + mi)
    for marginals in (False, True):
        actual = float(metrics.tsallis_fusion(*_as_jax(np.stack([x, x]), x), liu_marginals=marginals))
        np.testing.assert_allclose(actual, expected, rtol=RTOL)
    rows = np.repeat(np.array([0.0, 255.0])[np.arange(48) % 2][:, None], 64, axis=1)
    cols = np.repeat(np.array([0.0, 255.0])[np.arange(64) % 2][None, :], 48, axis=0)
    value = float(metrics.tsallis_fusion(*_as_jax(np.stack([rows, rows]), cols)))
    assert abs(value) < 1e-7


def test_liu_marginals_differ_where_histograms_differ(group):
    """The transposed pairing is not a no-op: it moves Q_TE on real images."""
    sources, fused = group
    s, f = _as_jax(sources, fused)
    fixed = float(metrics.tsallis_fusion(s, f))
    liu = float(metrics.tsallis_fusion(s, f, liu_marginals=True))
    assert abs(fixed - liu) > 1e-4


# --------------------------------------------------------------------------- Q_NCIE


def test_ncie_matches_liu_code(group):
    sources, fused = group
    expected = liu_ncie(sources, fused)
    actual = float(metrics.NO_REFERENCE_METRICS["Q_NCIE"](*_as_jax(sources, fused)))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def test_ncie_matches_the_formula_for_three_sources(group):
    sources, fused = group
    three = np.concatenate([sources, matlab_round((sources[:1] + fused[None]) / 2)])
    expected = formula_ncie(three, fused)
    actual = float(metrics.ncie(*_as_jax(three, fused)))
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def test_ncie_analytic():
    """Equal images with four equally likely levels: every NCC is 2/8, R has eigenvalues
    1.5, 0.75, 0.75. Mutually independent images: R = I, Q_NCIE = 1 - log_256(3)."""
    x = _four_level_image()
    lam = np.array([1.5, 0.75, 0.75]) / 3
    expected = 1 + np.sum(lam * np.log2(lam)) / 8
    np.testing.assert_allclose(float(metrics.ncie(*_as_jax(np.stack([x, x]), x))), expected, rtol=RTOL)
    # Three independent binary images: bits 0, 1, 2 of the pixel index (8 x 8 tiles).
    index = np.arange(48 * 64).reshape(48, 64) % 8
    a, b, f = ((index >> bit) % 2 * 255.0 for bit in range(3))
    expected = 1 - math.log(3, 256)
    np.testing.assert_allclose(float(metrics.ncie(*_as_jax(np.stack([a, b]), f))), expected, rtol=RTOL)


# -------------------------------------------------------------------------- FMI_dct


def ref_fmi_dct(sources, f):
    """fmi.m with feature 'dct': dct2 of each whole image (SciPy's orthonormal DCT-II),
    3x3 windows in column-major order, the port of test_metrics.py for each pair."""

    def windows(x):
        v = sliding_window_view(scipy.fft.dctn(np.asarray(x, np.float64), norm="ortho"), (3, 3))
        return v.transpose(0, 1, 3, 2).reshape(-1, 9)

    f_windows = windows(f)
    return float(np.mean([ref_fmi_pair(windows(s), f_windows) for s in sources], axis=0).mean())


def test_fmi_dct_matches_fmi_code(group):
    sources, fused = group
    actual = float(metrics.OPT_IN_METRICS["FMI_dct"](*_as_jax(sources, fused)))
    np.testing.assert_allclose(actual, ref_fmi_dct(sources, fused), rtol=RTOL, atol=ATOL)


def test_fmi_dct_is_fmi_pixel_of_the_dct_images():
    """The feature is the DCT: FMI_dct(S, F) = FMI_pixel(dct2(S), dct2(F)), with the
    transform by SciPy in float64; F equal to every source gives 1."""
    sources, fused = _camera_set(SHAPE)
    dct = [scipy.fft.dctn(x, norm="ortho") for x in (*sources, fused)]
    expected = float(metrics.feature_mutual_information(np.stack(dct[:2]), dct[2], feature="pixel"))
    actual = float(metrics.feature_mutual_information(*_as_jax(sources, fused), feature="dct"))
    np.testing.assert_allclose(actual, expected, rtol=RTOL)
    equal = float(
        metrics.feature_mutual_information(*_as_jax(np.stack([fused, fused]), fused), feature="dct")
    )
    assert equal == 1.0


def test_opt_in_metrics_only_when_named():
    sources, fused = _camera_set(SHAPE)
    default = metrics.evaluate(list(sources), fused)
    assert not set(metrics.OPT_IN_METRICS) & set(default)
    assert list(default) == list(metrics.NO_REFERENCE_METRICS)
    named = metrics.evaluate(list(sources), fused, names=["FMI_dct", "EN"])
    assert list(named) == ["FMI_dct", "EN"]
    expected = float(metrics.feature_mutual_information(*_as_jax(sources, fused), feature="dct"))
    assert named["FMI_dct"] == expected


def test_evaluate_shares_qw_with_qe_without_changing_it(group):
    """evaluate() forms Qe as Qw times the edge factor when it computes Qw as well: the
    value is the one qe() itself returns, bit for bit, in either order of the names."""
    sources, fused = group
    s, f = _as_jax(sources, fused)
    direct_qe, direct_qw = float(metrics.qe(s, f)), float(metrics.qw(s, f))
    for names in (["Qw", "Qe"], ["Qe", "Qw"], ["Qe"]):
        values = metrics.evaluate(list(sources), fused, names=names)
        assert values["Qe"] == direct_qe
        if "Qw" in names:
            assert values["Qw"] == direct_qw


# ------------------------------------------------------------------------------ Q_P


def ref_phasecong(im):
    """myphasecong3.m with its defaults, orientation by orientation and scale by scale
    (nscale 4, norient 6, minWaveLength 3, mult 2.1, sigmaOnf 0.55, dThetaOnSigma 1.2,
    k 2, cutOff 0.5, g 10). Returns (phaseCongruency, M, m)."""
    nscale, norient, eps = 4, 6, 1e-4
    rows, cols = im.shape
    imagefft = np.fft.fft2(im)

    def axis_range(n):
        if n % 2:
            return np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / (n - 1)
        return np.arange(-n / 2, n / 2) / n

    x, y = np.meshgrid(axis_range(cols), axis_range(rows))
    radius = np.sqrt(x**2 + y**2)
    radius[rows // 2, cols // 2] = 1
    theta = np.arctan2(-y, x)
    radius, theta = np.fft.ifftshift(radius), np.fft.ifftshift(theta)
    # lowpassfilter([rows, cols], .45, 15)
    lx = (np.ones((rows, 1)) * np.arange(1, cols + 1) - (cols // 2 + 1)) / cols
    ly = (np.arange(1, rows + 1)[:, None] * np.ones((1, cols)) - (rows // 2 + 1)) / rows
    lp = np.fft.fftshift(1.0 / (1.0 + (np.sqrt(lx**2 + ly**2) / 0.45) ** 30))
    log_gabor = []
    for s in range(nscale):
        fo = 1.0 / (3 * 2.1**s)
        g = np.exp(-(np.log(radius / fo) ** 2) / (2 * np.log(0.55) ** 2)) * lp
        g[0, 0] = 0
        log_gabor.append(g)
    theta_sigma = np.pi / norient / 1.2
    total_energy = np.zeros((rows, cols))
    total_sum_an = np.zeros((rows, cols))
    covx2, covy2, covxy = np.zeros((rows, cols)), np.zeros((rows, cols)), np.zeros((rows, cols))
    for o in range(norient):
        angl = o * np.pi / norient
        ds = np.sin(theta) * np.cos(angl) - np.cos(theta) * np.sin(angl)
        dc = np.cos(theta) * np.cos(angl) + np.sin(theta) * np.sin(angl)
        spread = np.exp(-(np.abs(np.arctan2(ds, dc)) ** 2) / (2 * theta_sigma**2))
        sum_e = np.zeros((rows, cols))
        sum_o = np.zeros((rows, cols))
        sum_an = np.zeros((rows, cols))
        eo, ifft_filters = [], []
        for s in range(nscale):
            filt = log_gabor[s] * spread
            ifft_filters.append(np.real(np.fft.ifft2(filt)) * np.sqrt(rows * cols))
            eo.append(np.fft.ifft2(imagefft * filt))
            an = np.abs(eo[s])
            sum_an += an
            sum_e += np.real(eo[s])
            sum_o += np.imag(eo[s])
            if s == 0:
                em_n = np.sum(filt**2)
                max_an = an
            else:
                max_an = np.maximum(max_an, an)
        x_energy = np.sqrt(sum_e**2 + sum_o**2) + eps
        mean_e, mean_o = sum_e / x_energy, sum_o / x_energy
        energy = np.zeros((rows, cols))
        for s in range(nscale):
            e, od = np.real(eo[s]), np.imag(eo[s])
            energy += e * mean_e + od * mean_o - np.abs(e * mean_o - od * mean_e)
        median_e2n = np.median(np.abs(eo[0]).ravel() ** 2)
        noise_power = (-median_e2n / np.log(0.5)) / em_n
        est_sum_an2 = sum(f**2 for f in ifft_filters)
        est_sum_aiaj = sum(
            ifft_filters[i] * ifft_filters[j] for i in range(nscale) for j in range(i + 1, nscale)
        )
        est_noise_energy2 = 2 * noise_power * np.sum(est_sum_an2) + 4 * noise_power * np.sum(est_sum_aiaj)
        tau = np.sqrt(est_noise_energy2 / 2)
        t = (tau * np.sqrt(np.pi / 2) + 2.0 * np.sqrt((2 - np.pi / 2) * tau**2)) / 1.7
        energy = np.maximum(energy - t, 0)
        width = sum_an / (max_an + eps) / nscale
        weight = 1.0 / (1 + np.exp((0.5 - width) * 10))
        total_sum_an += sum_an
        total_energy += weight * energy
        pc_o = weight * energy / sum_an
        covx, covy = pc_o * np.cos(angl), pc_o * np.sin(angl)
        covx2 += covx**2
        covy2 += covy**2
        covxy += covx * covy
    pc = total_energy / (total_sum_an + eps)
    covx2, covy2, covxy = covx2 / (norient / 2), covy2 / (norient / 2), covxy / norient
    denom = np.sqrt(covxy**2 + (covx2 - covy2) ** 2) + eps
    return pc, (covy2 + covx2 + denom) / 2, (covy2 + covx2 - denom) / 2


def ref_zhao_correlation(im1, im2, im_max, imf, mask1, mask2, mask3):
    """metricZhao.m's correlation_coeffcient, with scipy's zero-padded correlation as
    filter2(..., 'same')."""
    window = fspecial_gaussian(11, 1.5)

    def filt(x):
        return scipy.signal.correlate2d(x, window, mode="same")

    im1, im2, im_max = mask1 * im1, mask2 * im2, mask3 * im_max
    mu1, mu2, muf, mu_max = filt(im1), filt(im2), filt(imf), filt(im_max)
    s1, s2 = filt(im1 * im1) - mu1**2, filt(im2 * im2) - mu2**2
    smax, sf = filt(im_max * im_max) - mu_max**2, filt(imf * imf) - muf**2
    s1f, s2f, smaxf = (
        filt(im1 * imf) - mu1 * muf,
        filt(im2 * imf) - mu2 * muf,
        filt(im_max * imf) - mu_max * muf,
    )
    c = 1e-4
    res1 = np.where(mask1, (s1f + c) / (np.sqrt(np.abs(s1 * sf)) + c), 0)
    res2 = np.where(mask2, (s2f + c) / (np.sqrt(np.abs(s2 * sf)) + c), 0)
    res3 = np.where(mask3, (smaxf + c) / (np.sqrt(np.abs(smax * sf)) + c), 0)
    return np.sum(np.max(np.stack([res1, res2, res3]), axis=0)) / np.sum(mask3)


def ref_qp(sources, f):
    """metricZhao.m."""
    (pc1, big1, small1), (pc2, big2, small2) = ref_phasecong(sources[0]), ref_phasecong(sources[1])
    pcf, bigf, smallf = ref_phasecong(f)
    mask = pc1 > pc2
    masks = (pc1 > 0.1, pc2 > 0.1, np.where(mask, pc1, pc2) > 0.1)
    value = 1.0
    for one, two, fused in ((pc1, pc2, pcf), (big1, big2, bigf), (small1, small2, smallf)):
        value *= ref_zhao_correlation(one, two, np.where(mask, one, two), fused, *masks)
    return value


def test_qp_matches_zhao_code(group):
    sources, fused = group
    actual = float(metrics.OPT_IN_METRICS["Q_P"](*_as_jax(sources, fused)))
    np.testing.assert_allclose(actual, ref_qp(sources, fused), rtol=RTOL, atol=ATOL)


def test_qp_at_an_odd_size():
    """45x61: the odd-size frequency grids ((n - 1) normalisation, and lowpassfilter.m's
    fftshift, which is not the inverse of the grid's ifftshift for odd n)."""
    sources, fused = _camera_set(SHAPE)
    sources, fused = sources[:, :45, :61], fused[:45, :61]
    np.testing.assert_allclose(float(metrics.qp(*_as_jax(sources, fused))), ref_qp(sources, fused), rtol=RTOL)


def test_qp_invariances():
    """Properties of the definition, independent of the code: the log-Gabor filters are 0
    at DC, so adding a constant to every image changes nothing."""
    sources, fused = _camera_set(SHAPE)
    expected = ref_qp(sources, fused)
    shifted = float(metrics.qp(*_as_jax(sources + 17.0, fused + 17.0)))
    np.testing.assert_allclose(shifted, expected, rtol=RTOL)


def test_phase_congruency_is_circularly_shift_equivariant():
    """Filtering by FFT commutes with circular translation: the PC, M and m maps of an
    image rolled by (5, 11) pixels are the rolled maps, to float64 round-off."""
    import jax  # noqa: PLC0415 - lazy: only this test calls the private float64 function

    from ifcnn_jax.metrics._phase import (  # noqa: PLC0415 - lazy: a private helper, only here
        _log_gabor_bank,
        _noise_factors,
        _phase_congruency,
    )

    image = _camera_set(SHAPE)[1]
    bank = _log_gabor_bank(*SHAPE)
    em_n, noise2 = _noise_factors(bank)
    with jax.enable_x64(True):
        args = (jnp.asarray(bank), jnp.asarray(em_n), jnp.asarray(noise2))
        maps = [np.asarray(m) for m in _phase_congruency(jnp.asarray(image, jnp.float64), *args)]
        rolled = np.roll(image, (5, 11), axis=(0, 1))
        maps_rolled = [np.asarray(m) for m in _phase_congruency(jnp.asarray(rolled, jnp.float64), *args)]
    reference = ref_phasecong(image)
    for m, r, ref in zip(maps, maps_rolled, reference, strict=True):
        np.testing.assert_allclose(np.roll(m, (5, 11), axis=(0, 1)), r, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(m, ref, rtol=1e-9, atol=1e-12)
    assert reference[0].max() > 0.5  # edges present: the maps are not trivially zero


# ------------------------------------------------------------------------------ Q_M


def ref_corr_dn(im, filt, axis, start):
    """matlabPyrTools' corrDn for a 2-tap filter along one axis, step 2: output k is
    sum_i filt[i] * im[start - 1 + 2k + i - 1 + 1 - fmid] with fmid = 1 (the filter's
    upper-left corner sits fmid before the start position); positions up to the size."""
    im = np.moveaxis(np.asarray(im, np.float64), axis, 0)
    n = im.shape[0]
    count = (n - start + 2) // 2  # corrDn.c's x_res_dim = (stop - start + step - 1) / step
    out = np.zeros((count,) + im.shape[1:])
    for k in range(count):
        corner = (start - 1) + 2 * k - 1  # C index of the result minus fmid
        for i, tap in enumerate(filt):
            out[k] += tap * im[corner + i]
    return np.moveaxis(out, 0, axis)


def ref_build_wpyr_haar(im, levels):
    """buildWpyr(im, levels, 'haar'): bands [lohi, hilo, hihi] per level, finest first."""
    lfilt = np.array([1.0, 1.0]) / np.sqrt(2)
    ind = np.array([2, 1])
    hfilt = lfilt[ind - 1] * (-1.0) ** (ind - 1)  # modulateFlip: sz2 = ceil(2 / 2) = 1
    stag = 2  # even-length filter
    bands = []
    for _ in range(levels):
        lo = ref_corr_dn(im, lfilt, 0, stag)
        hi = ref_corr_dn(im, hfilt, 0, 2)
        lolo = ref_corr_dn(lo, lfilt, 1, stag)
        bands.append(
            (ref_corr_dn(hi, lfilt, 1, stag), ref_corr_dn(lo, hfilt, 1, 2), ref_corr_dn(hi, hfilt, 1, 2))
        )
        im = lolo
    return bands


def ref_qm(sources, f):
    """metricPWW.m, with N sources summed as the two of the code."""
    pyramids = [ref_build_wpyr_haar(s, 2) for s in sources]
    fused = ref_build_wpyr_haar(f, 2)
    q = []
    for level in range(2):
        hf, vf, df = fused[level]
        num = den = 0.0
        for pyramid in pyramids:
            h, v, d = pyramid[level]
            w = h * h + v * v + d * d
            ep = np.exp(-np.abs(h - hf)) + np.exp(-np.abs(v - vf)) + np.exp(-np.abs(d - df))
            num += np.sum(ep * w)
            den += np.sum(w)
        q.append(num / den)
    return q[0] ** (2 / 3) * q[1] ** (1 / 3)


def test_qm_matches_pww_code(group):
    sources, fused = group
    actual = float(metrics.NO_REFERENCE_METRICS["Q_M"](*_as_jax(sources, fused)))
    np.testing.assert_allclose(actual, ref_qm(sources, fused), rtol=RTOL, atol=ATOL)


def test_qm_three_sources_and_odd_sizes():
    sources, fused = _camera_set(SHAPE)
    three = np.concatenate([sources, matlab_round((sources[:1] + fused[None]) / 2)])
    np.testing.assert_allclose(float(metrics.qm(*_as_jax(three, fused))), ref_qm(three, fused), rtol=RTOL)
    odd_s, odd_f = sources[:, :45, :61], fused[:45, :61]  # 45 -> 22 -> 11 rows: last ones dropped
    np.testing.assert_allclose(float(metrics.qm(*_as_jax(odd_s, odd_f))), ref_qm(odd_s, odd_f), rtol=RTOL)


def test_qm_analytic():
    """Haar detail coefficients ignore a constant offset: F = S_1 + 5 = S_2 - 9 has every
    source's details, so every EP is 3 and Q_M = 3^(2/3) 3^(1/3) = 3. A constant second
    source has no weight, so Q_M is source 1's alone. One Haar level of a 2x2 block
    [[a, b], [c, d]] is H = (c + d - a - b) / 2, V = (b + d - a - c) / 2,
    D = (a + d - b - c) / 2 (checked on a 4x4 image, whose second level is one block)."""
    image = _camera_set(SHAPE)[1]
    sources = np.stack([image, image + 14.0])
    np.testing.assert_allclose(float(metrics.qm(*_as_jax(sources, image + 5.0))), 3.0, rtol=RTOL)
    flat = np.stack([image, np.full(SHAPE, 80.0)])
    blurred = matlab_round((image + np.roll(image, 1, axis=1)) / 2)
    alone = float(metrics.qm(*_as_jax(np.stack([image, image]), blurred)))
    np.testing.assert_allclose(float(metrics.qm(*_as_jax(flat, blurred))), alone, rtol=RTOL)
    x = np.array([[3.0, 7, 1, 4], [9, 2, 6, 5], [0, 8, 3, 3], [4, 1, 7, 2]])  # exact in float32
    a, b, c, d = x[0:4:2, 0:4:2], x[0:4:2, 1:4:2], x[1:4:2, 0:4:2], x[1:4:2, 1:4:2]
    h, v, dd = (c + d - a - b) / 2, (b + d - a - c) / 2, (a + d - b - c) / 2
    low = (a + b + c + d) / 2
    weights = [np.sum(h * h + v * v + dd * dd)]
    h2 = (low[1, 0] + low[1, 1] - low[0, 0] - low[0, 1]) / 2
    v2 = (low[0, 1] + low[1, 1] - low[0, 0] - low[1, 0]) / 2
    d2 = (low[0, 0] + low[1, 1] - low[0, 1] - low[1, 0]) / 2
    weights.append(h2 * h2 + v2 * v2 + d2 * d2)
    # F = 0: EP = exp(-|H|) + exp(-|V|) + exp(-|D|) against zero details.
    q1 = np.sum((np.exp(-np.abs(h)) + np.exp(-np.abs(v)) + np.exp(-np.abs(dd))) * (h * h + v * v + dd * dd))
    q2 = (np.exp(-abs(h2)) + np.exp(-abs(v2)) + np.exp(-abs(d2))) * weights[1]
    expected = (q1 / weights[0]) ** (2 / 3) * (q2 / weights[1]) ** (1 / 3)
    actual = float(metrics.qm(*_as_jax(np.stack([x, x]), np.zeros((4, 4)))))
    np.testing.assert_allclose(actual, expected, rtol=RTOL)


@pytest.mark.parametrize("kind", ["random", "camera", "lytro"])
def test_evaluate_shares_ssim_with_ms_ssim_without_changing_them(kind, request):
    """With both selected, evaluate() takes SSIM_mean from MS-SSIM's first scale
    (ssim_and_ms_ssim_fusion): the values are those of the separate functions, bit for
    bit, and so are the sums derived from them."""
    if kind == "random":
        sources, fused = _random_set(LARGE_SHAPE, seed=1)
    elif kind == "camera":
        sources, fused = _camera_set(LARGE_SHAPE)
    else:
        sources, fused = _release_set(request.getfixturevalue("release_dir"), LARGE_SHAPE)
    s, f = _as_jax(sources, fused)
    ssim_mean, ms_mean = float(metrics.ssim_fusion(s, f)), float(metrics.ms_ssim_fusion(s, f))
    values = metrics.evaluate(
        list(sources), fused, names=["MS_SSIM_mean", "SSIM_sum", "SSIM_mean", "MS_SSIM_sum"]
    )
    assert values["SSIM_mean"] == ssim_mean
    assert values["MS_SSIM_mean"] == ms_mean
    assert values["SSIM_sum"] == 2 * ssim_mean
    assert values["MS_SSIM_sum"] == 2 * ms_mean
    both = np.asarray(metrics.ssim_and_ms_ssim_fusion(np.stack([s, s], axis=1), np.stack([f, f])))
    assert both.shape == (2, 2)
    assert (both == np.array([[ssim_mean] * 2, [ms_mean] * 2], np.float32)).all()
