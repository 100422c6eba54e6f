"""``ifcnn_jax.inference.forward`` (folded BatchNorm, blocked matrix-product and XLA
convolutions) against the PyTorch reference of convert/torch_reference.py."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from convert.torch_reference import (
    params_from_reference,
    random_reference,
    run_reference,
)
from ifcnn_jax import inference
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.inference import folded_params, forward
from ifcnn_jax.model import model_from_params
from tests.helpers import max_abs_diff, random_sources

TOLERANCE = 1e-4  # largest absolute difference allowed against PyTorch


@pytest.mark.parametrize("rule", ["max", "sum", "mean"])
@pytest.mark.parametrize("method", ["matmul", "conv"])
def test_released_models_match_pytorch(released_models, rule, method):
    ours, reference = released_models[rule]
    sources = random_sources(3, 2, 23, 37, seed=1)  # odd sizes, N = 3, batch 2
    expected = run_reference(reference, sources)
    got = forward(ours, sources, tile=0, method=method)
    assert got.shape == expected.shape == (2, 23, 37, 3)
    assert max_abs_diff(got, expected) <= TOLERANCE


@pytest.mark.parametrize("per_item", [True, False])
def test_many_blocks_with_uneven_last_block_match_pytorch(released_models, monkeypatch, per_item):
    # Blocks of 8 x 11 output pixels on a 23 x 37 image: blocks that touch no image
    # border, blocks that touch one or two, and last blocks that overlap their neighbour;
    # per batch item or all items at once.
    monkeypatch.setitem(inference._BLOCK, "matmul", (8, 11))
    monkeypatch.setitem(inference._PER_ITEM, "matmul", per_item)
    ours, reference = released_models["max"]
    sources = random_sources(3, 2, 23, 37, seed=2)
    assert (
        max_abs_diff(forward(ours, sources, tile=0, method="matmul"), run_reference(reference, sources))
        <= TOLERANCE
    )


def test_image_smaller_than_receptive_field_matches_pytorch(released_models):
    ours, reference = released_models["mean"]
    sources = random_sources(2, 1, 2, 5, seed=3)
    assert max_abs_diff(forward(ours, sources, tile=0), run_reference(reference, sources)) <= TOLERANCE


def test_default_block_size_over_a_larger_image_matches_pytorch(released_models):
    ours, reference = released_models["max"]
    sources = random_sources(2, 1, 70, 150, seed=4)  # 2 x 2 default blocks
    assert max_abs_diff(forward(ours, sources), run_reference(reference, sources)) <= TOLERANCE


def test_jax_and_numpy_inputs_agree(released_models):
    ours, _ = released_models["max"]
    sources = random_sources(2, 1, 23, 37, seed=5)
    assert max_abs_diff(forward(ours, sources, tile=0), forward(ours, jnp.asarray(sources), tile=0)) == 0


def test_changed_weights_are_not_served_from_the_cache():
    reference = random_reference("max", seed=6).eval()
    ours = model_from_params(params_from_reference(reference), "max")
    sources = random_sources(2, 1, 23, 37, seed=6)
    assert max_abs_diff(forward(ours, sources, tile=0), run_reference(reference, sources)) <= TOLERANCE
    assert folded_params(ours) is folded_params(ours)  # unchanged weights: folded once

    # New weights and running statistics, on both sides.
    with torch.no_grad():
        reference.conv2.bn.running_var.mul_(3.0)
        reference.conv4.bias.add_(0.25)
    ours.conv2.bn.var[...] = jnp.asarray(reference.conv2.bn.running_var.numpy())
    ours.conv4.bias[...] = jnp.asarray(reference.conv4.bias.detach().numpy())
    assert max_abs_diff(forward(ours, sources, tile=0), run_reference(reference, sources)) <= TOLERANCE


def test_training_mode_model_uses_batch_statistics_like_pytorch():
    reference = random_reference("mean", seed=7).train()
    ours = model_from_params(params_from_reference(reference), "mean")
    ours.train()
    sources = random_sources(2, 2, 23, 37, seed=7)
    with torch.no_grad():
        tensors = [torch.from_numpy(s).permute(0, 3, 1, 2) for s in sources]
        expected = reference(*tensors).permute(0, 2, 3, 1).numpy()
    assert max_abs_diff(forward(ours, sources), expected) <= TOLERANCE
    with pytest.raises(IFCNNError, match="inference-mode"):
        forward(ours, sources, tile=8)


@pytest.mark.parametrize("tile", [-1, 2.5, True, "64"])
def test_invalid_tile_is_a_user_error(released_models, tile):
    ours, _ = released_models["max"]
    with pytest.raises(IFCNNError, match="tile"):
        forward(ours, random_sources(2, 1, 8, 8), tile=tile)


def test_invalid_method_and_shapes_are_rejected(released_models):
    ours, _ = released_models["max"]
    with pytest.raises(IFCNNError, match="method"):
        forward(ours, random_sources(2, 1, 8, 8), method="winograd")
    with pytest.raises(ValueError, match="at least 2 sources"):
        forward(ours, random_sources(1, 1, 8, 8))
    with pytest.raises(ValueError, match="stacked sources"):
        forward(ours, np.zeros((2, 8, 8, 3), np.float32))


def test_automatic_tiling_above_the_threshold(released_models, monkeypatch):
    ours, reference = released_models["max"]
    sources = random_sources(2, 1, 23, 37, seed=8)
    calls = []
    real_tiled_apply = inference.tiled_apply

    def counting(region, srcs, tile, halo, **kwargs):
        calls.append(tile)
        return real_tiled_apply(region, srcs, tile, halo, **kwargs)

    monkeypatch.setattr(inference, "tiled_apply", counting)
    monkeypatch.setattr(inference, "DEFAULT_TILE", 16)
    below = forward(ours, sources, auto_tile_pixels=23 * 37)
    assert calls == []
    above = forward(ours, sources, auto_tile_pixels=23 * 37 - 1)
    assert calls == [16]
    assert max_abs_diff(above, below) <= 1e-5
    assert max_abs_diff(above, run_reference(reference, sources)) <= TOLERANCE
