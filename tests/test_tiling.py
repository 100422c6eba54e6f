"""Tiled fusion (``ifcnn_jax.tiling``): tile layout, haloed windows, and tiled == untiled
for the network and for every task recipe."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from convert.torch_reference import load_reference, run_reference
from ifcnn_jax import preflight, recipes
from ifcnn_jax.inference import forward
from ifcnn_jax.model import load, new_ifcnn
from ifcnn_jax.tiling import HALO, extract_window, tile_starts, tiled_apply
from tests.helpers import max_abs_diff, random_sources

EXACT = 1e-5  # tiled vs untiled, float32


@pytest.fixture(scope="module")
def max_model(converted_checkpoints):
    return load(str(converted_checkpoints["max"]))


@pytest.fixture(scope="module")
def mean_model(converted_checkpoints):
    return load(str(converted_checkpoints["mean"]))


# ------------------------------------------------------------------ layout and windows


@pytest.mark.parametrize("length,tile", [(23, 10), (23, 23), (23, 40), (20, 5), (7, 1), (1, 4)])
def test_tile_starts_cover_the_image_with_equal_tiles(length, tile):
    starts = tile_starts(length, tile)
    size = min(tile, length)
    covered = np.zeros(length, int)
    for start in starts:
        assert 0 <= start and start + size <= length
        covered[start : start + size] += 1
    assert covered.min() == 1  # every pixel in some tile
    assert len(starts) == -(-length // size)  # no more tiles than needed
    assert starts == sorted(set(starts))


@pytest.mark.parametrize("as_jax", [False, True])
@pytest.mark.parametrize(
    "top,left,height,width", [(0, 0, 4, 6), (3, 7, 4, 6), (5, 10, 4, 6), (0, 0, 9, 16), (2, 0, 1, 1)]
)
def test_windows_are_the_edge_padded_image_cut_out(as_jax, top, left, height, width):
    sources = random_sources(2, 2, 9, 16, seed=1)
    padded = np.pad(sources, ((0, 0), (0, 0), (HALO, HALO), (HALO, HALO), (0, 0)), mode="edge")
    expected = padded[:, :, top : top + height + 2 * HALO, left : left + width + 2 * HALO]
    got = extract_window(jnp.asarray(sources) if as_jax else sources, top, left, height, width)
    assert isinstance(got, np.ndarray) != as_jax
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_tiled_apply_stitches_centres_in_place():
    # A region function that reports each output pixel's image coordinates exposes
    # any misplaced or missing tile.
    sources = random_sources(2, 1, 13, 17)

    def coordinates(window, origin, image_hw):
        h, w = window.shape[2] - 2 * HALO, window.shape[3] - 2 * HALO
        rows, cols = np.meshgrid(np.arange(h) + origin[0], np.arange(w) + origin[1], indexing="ij")
        centre = window[0, :, HALO : HALO + h, HALO : HALO + w, 0]
        return jnp.asarray(np.stack([rows, cols, centre[0]], -1)[None].astype(np.float32))

    out = np.asarray(tiled_apply(coordinates, sources, 5))
    rows, cols = np.meshgrid(np.arange(13), np.arange(17), indexing="ij")
    np.testing.assert_array_equal(out[0, :, :, 0], rows)
    np.testing.assert_array_equal(out[0, :, :, 1], cols)
    np.testing.assert_array_equal(out[0, :, :, 2], sources[0, 0, :, :, 0])


# ------------------------------------------------------------------ the network, tiled


@pytest.mark.parametrize(
    "num_sources,batch,height,width,tile",
    [
        (2, 1, 23, 37, 10),  # odd sizes, tiles that do not divide the image
        (3, 1, 23, 37, 16),  # three sources
        (2, 2, 19, 21, 4),  # tiles smaller than the halo, batch 2
        (2, 1, 11, 30, 64),  # one tile larger than the image
    ],
)
def test_tiled_equals_untiled(max_model, num_sources, batch, height, width, tile):
    sources = random_sources(num_sources, batch, height, width, seed=height + tile)
    untiled = forward(max_model, sources, tile=0)
    assert max_abs_diff(forward(max_model, sources, tile=tile), untiled) <= EXACT
    assert max_abs_diff(forward(max_model, jnp.asarray(sources), tile=tile), untiled) <= EXACT


def test_tiled_matches_pytorch_mean_rule(release_dir, mean_model):
    reference = load_reference(release_dir / "snapshots" / "IFCNN-MEAN.pth", "mean")
    sources = random_sources(3, 1, 23, 37, seed=9)
    assert max_abs_diff(forward(mean_model, sources, tile=10), run_reference(reference, sources)) <= 1e-4


def test_naive_tiling_would_show_seams(max_model):
    # Fusing tiles as separate images (replicate padding at tile borders) is what the
    # halo avoids; the comparison above is sensitive enough to see the difference.
    sources = random_sources(2, 1, 20, 20, seed=3)
    untiled = np.asarray(forward(max_model, sources, tile=0))
    naive = np.zeros_like(untiled)
    for top in (0, 10):
        for left in (0, 10):
            part = sources[:, :, top : top + 10, left : left + 10]
            naive[:, top : top + 10, left : left + 10] = np.asarray(forward(max_model, part, tile=0))
    assert max_abs_diff(naive, untiled) > 1e-2


# ------------------------------------------------------------------ every task recipe


def _unit_images(count: int, height: int, width: int, colour: bool, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if colour else (height, width)
    base = rng.uniform(0.1, 0.9, size=shape)
    return [np.clip(base + rng.normal(scale=0.15, size=shape), 0, 1).astype(np.float32) for _ in range(count)]


@pytest.mark.parametrize(
    "task,colour,count", [("multifocus", True, 2), ("infrared", False, 2), ("medical", False, 3)]
)
def test_recipes_tiled_equal_untiled(max_model, task, colour, count):
    # Float sources give float results, so the network's agreement is visible directly.
    images = _unit_images(count, 23, 37, colour, seed=count)
    tiled = recipes.fuse(max_model, images, task, tile=8)
    untiled = recipes.fuse(max_model, images, task, tile=0)
    assert tiled.dtype == untiled.dtype == np.float32
    assert tiled.shape == untiled.shape
    assert max_abs_diff(tiled, untiled) <= EXACT


def test_exposure_tiles_only_the_network_and_clahe_sees_the_whole_image(mean_model, monkeypatch):
    # The exposure recipe always quantises to uint8 before CLAHE, so its result is
    # compared through the network outputs it was given.
    calls = []
    real_forward = recipes.forward

    def recording(model, sources, *, tile=None, progress=None):
        out = real_forward(model, sources, tile=tile, progress=progress)
        calls.append((np.shape(sources), tile, np.asarray(out)))
        return out

    monkeypatch.setattr(recipes, "forward", recording)
    images = [(im * 255).astype(np.uint8) for im in _unit_images(3, 23, 37, True, seed=5)]
    tiled = recipes.fuse(mean_model, images, "exposure", tile=8)
    untiled = recipes.fuse(mean_model, images, "exposure", tile=0)
    (shape_t, tile_t, net_t), (shape_u, tile_u, net_u) = calls
    # One network call on the whole stacked image: tiling happens inside it, and the
    # fused Y that reaches CLAHE is the whole image.
    assert shape_t == shape_u == (3, 1, 23, 37, 3) and (tile_t, tile_u) == (8, 0)
    assert max_abs_diff(net_t, net_u) <= EXACT
    quantised = [(np.clip(n[0], 0, 1) * np.float32(255)).astype(np.uint8) for n in (net_t, net_u)]
    # Each result is the whole-image post-processing (CLAHE included) of its own network
    # output, whichever way the quantisation fell.
    ycbcr = np.stack([recipes.pil_rgb_to_ycbcr(im) for im in images])
    np.testing.assert_array_equal(tiled, recipes.finish_exposure(quantised[0], ycbcr))
    np.testing.assert_array_equal(untiled, recipes.finish_exposure(quantised[1], ycbcr))
    if np.array_equal(*quantised):
        np.testing.assert_array_equal(tiled, untiled)
    else:  # a value within float rounding of a quantisation step: explained, not a seam
        differs = quantised[0] != quantised[1]
        scaled = np.clip(net_u[0], 0, 1)[differs] * 255
        assert np.all(np.abs(scaled - np.round(scaled)) <= EXACT * 255)


def test_the_halo_is_the_receptive_field_radius_everywhere():
    # preflight keeps its own copy of the halo (importing tiling would load JAX); both
    # must be the network's receptive-field radius: the sum of (k - 1) / 2 over the
    # stacked convolutions (conv1 7x7, conv2 3x3, conv3 3x3, conv4 1x1).
    model = new_ifcnn("max", seed=0)
    kernels = [model.conv1.kernel, model.conv2.conv.kernel, model.conv3.conv.kernel, model.conv4.kernel]
    radius = sum((k[...].shape[0] - 1) // 2 for k in kernels)
    assert HALO == preflight.HALO == radius
