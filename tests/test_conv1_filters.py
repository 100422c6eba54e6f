"""The fixed conv1 bank: its responses are the centre pixel and 2-D DCT coefficients."""

from __future__ import annotations

import numpy as np
from scipy import fft

from train.conv1_filters import LUMA_WEIGHTS, dct_filter_bank


def responses(bank: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """What conv1 computes at the centre of a 7x7x3 patch (cross-correlation, HWIO)."""
    return np.einsum("ijc,ijco->o", patch, bank)


def test_bank_shape_and_unit_norms():
    bank = dct_filter_bank()
    assert bank.shape == (7, 7, 3, 64) and bank.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bank.reshape(-1, 64), axis=0), 1.0, rtol=1e-6)


def test_impulses_pass_the_centre_pixel_and_the_dct_spans_the_luminance_patch():
    patch = np.random.default_rng(0).standard_normal((7, 7, 3))
    out = responses(dct_filter_bank().astype(np.float64), patch)
    np.testing.assert_allclose(out[:3], patch[3, 3], rtol=1e-6)
    luminance = patch @ LUMA_WEIGHTS
    expected = fft.dctn(luminance, type=2, norm="ortho") / np.linalg.norm(LUMA_WEIGHTS)
    np.testing.assert_allclose(out[3:52], expected.ravel(), rtol=1e-5, atol=1e-6)
    # The full basis keeps the whole luminance patch: it can be reconstructed exactly.
    rebuilt = fft.idctn(out[3:52].reshape(7, 7) * np.linalg.norm(LUMA_WEIGHTS), type=2, norm="ortho")
    np.testing.assert_allclose(rebuilt, luminance, atol=1e-5)


def test_colour_opponent_filters_ignore_gray():
    gray = np.repeat(np.random.default_rng(1).standard_normal((7, 7, 1)), 3, axis=2)
    out = responses(dct_filter_bank().astype(np.float64), gray)
    np.testing.assert_allclose(out[52:], 0.0, atol=1e-6)
    assert np.abs(out[:52]).max() > 0.1
