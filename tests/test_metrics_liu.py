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
from numpy.lib.stride_tricks import sliding_window_view

from ifcnn_jax import metrics
from tests.test_metrics import (
    ATOL,
    RTOL,
    SHAPE,
    _camera_set,
    _random_set,
    _release_set,
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
