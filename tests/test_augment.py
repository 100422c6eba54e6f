"""train.augment: the colour transform against its defining formulas, and the claim that
augmenting a synthesised example equals synthesising from the augmented photo."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from ifcnn_jax.data import synthesis
from train.augment import augment_example, colour_transform


def _fixed_rng(permutation, saturation, log_gain):
    """A stand-in generator returning chosen draws, in the order colour_transform asks."""

    class Fixed:
        def permutation(self, n):
            return np.asarray(permutation)

        def uniform(self, low, high):
            # First call: saturation; second: log gain.
            return self.values.pop(0)

    rng = Fixed()
    rng.values = [saturation, log_gain]
    return rng


def test_identity_when_no_change():
    matrix = colour_transform(_fixed_rng([0, 1, 2], 1.0, 0.0))
    np.testing.assert_allclose(matrix, np.eye(3), atol=1e-7)


def test_permutation_gain_and_saturation_by_hand():
    pixel = np.array([200.0, 50.0, 10.0], np.float32)
    # Permutation [2, 0, 1]: output channel j takes input channel perm[j].
    matrix = colour_transform(_fixed_rng([2, 0, 1], 1.0, np.log(0.5)))
    np.testing.assert_allclose(pixel @ matrix, 0.5 * pixel[[2, 0, 1]], rtol=1e-6)
    # Saturation 0 gives gray at the BT.601 luma 0.299 R + 0.587 G + 0.114 B.
    gray = colour_transform(_fixed_rng([0, 1, 2], 0.0, 0.0))
    luma = 0.299 * 200 + 0.587 * 50 + 0.114 * 10
    np.testing.assert_allclose(pixel @ gray, [luma] * 3, rtol=1e-6)


def test_saturation_keeps_hue_and_luma_and_scales_chroma():
    pixel = np.array([180.0, 120.0, 60.0], np.float32)
    matrix = colour_transform(_fixed_rng([0, 1, 2], 1.5, 0.0))
    out = pixel @ matrix
    luma = lambda p: 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
    assert luma(out) == pytest.approx(luma(pixel), rel=1e-6)
    hue_in = colorsys.rgb_to_hsv(*(pixel / 255))[0]
    hue_out = colorsys.rgb_to_hsv(*(out / 255))[0]
    assert hue_out == pytest.approx(hue_in, abs=1e-6)
    np.testing.assert_allclose(out - luma(out), 1.5 * (pixel - luma(pixel)), rtol=1e-5)


def test_augmenting_the_example_equals_synthesising_from_the_augmented_photo():
    rng = np.random.default_rng(0)
    photo = rng.uniform(60 / 255, 190 / 255, (48, 48, 3)).astype(np.float32)
    matrix = colour_transform(np.random.default_rng(5), gain=(0.9, 1.0), saturation=(0.9, 1.1))
    example = synthesis.synthesize_example(photo, rng=np.random.default_rng(1), crop_size=32)
    again = synthesis.synthesize_example(photo @ matrix, rng=np.random.default_rng(1), crop_size=32)
    np.testing.assert_allclose(example.sources @ matrix, again.sources, atol=1e-3 / 255)
    np.testing.assert_allclose(example.target @ matrix, again.target, atol=1e-3 / 255)


def test_probability_and_clipping():
    sources = np.full((2, 4, 4, 3), 250 / 255, np.float32)
    target = np.full((4, 4, 3), 250 / 255, np.float32)
    same = augment_example(sources, target, np.random.default_rng(0), probability=0.0)
    assert same[0] is sources and same[1] is target
    for seed in range(20):
        out_sources, out_target = augment_example(
            sources, target, np.random.default_rng(seed), probability=1.0
        )
        assert out_sources.min() >= 0 and out_sources.max() <= 1
        np.testing.assert_array_equal(out_sources[0], out_target)
