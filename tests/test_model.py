"""IFCNN in JAX against the PyTorch reference (convert/torch_reference.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from convert.torch_reference import (
    params_from_reference,
    random_reference,
    run_reference,
)
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.checkpoints import save_params
from ifcnn_jax.model import IFCNN, fuse_features, load, model_from_params, new_ifcnn


@pytest.mark.parametrize("rule", ["max", "sum", "mean"])
@pytest.mark.parametrize("num_sources", [2, 3, 4])
def test_released_models_match_pytorch(released_models, rule, num_sources):
    ours, reference = released_models[rule]
    rng = np.random.default_rng(num_sources)
    # Odd sizes, batch 2, values spanning the normalised input range of the recipes.
    sources = rng.normal(size=(num_sources, 2, 37, 53, 3)).astype(np.float32)
    expected = run_reference(reference, sources)
    got = np.asarray(nnx.jit(lambda m, x: m(x))(ours, jnp.asarray(sources)))
    assert got.shape == expected.shape == (2, 37, 53, 3)
    assert np.max(np.abs(got - expected)) <= 1e-4


@pytest.mark.parametrize("rule", ["max", "mean"])
def test_training_mode_batch_statistics_match_pytorch(rule):
    reference = random_reference(rule, seed=1).train()
    model = model_from_params(params_from_reference(reference), rule)
    model.train()
    sources = np.random.default_rng(2).normal(size=(3, 4, 11, 13, 3)).astype(np.float32)
    expected = run_reference(reference, sources)  # updates torch's running stats, once per source
    got = np.asarray(model(jnp.asarray(sources)))
    assert np.max(np.abs(got - expected)) <= 1e-4
    for name in ("conv2", "conv3"):
        bn_ref = getattr(reference, name).bn
        bn = getattr(model, name).bn
        np.testing.assert_allclose(np.asarray(bn.mean[...]), bn_ref.running_mean.numpy(), atol=1e-5)
        np.testing.assert_allclose(np.asarray(bn.var[...]), bn_ref.running_var.numpy(), rtol=1e-5)


def test_gradients_match_pytorch():
    reference = random_reference("max", seed=3).eval()
    model = model_from_params(params_from_reference(reference), "max")
    sources = np.random.default_rng(4).normal(size=(2, 2, 9, 10, 3)).astype(np.float32)
    target = np.random.default_rng(5).normal(size=(2, 9, 10, 3)).astype(np.float32)

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(p):
        out = nnx.merge(graphdef, p, rest)(jnp.asarray(sources))
        return jnp.mean((out - target) ** 2)

    grads = nnx.to_pure_dict(jax.grad(loss_fn)(params))

    tensors = [torch.from_numpy(s).permute(0, 3, 1, 2) for s in sources]
    out = reference(*tensors).permute(0, 2, 3, 1)
    torch.mean((out - torch.from_numpy(target)) ** 2).backward()
    pairs = {
        ("conv2", "conv", "kernel"): reference.conv2.conv.weight.grad.permute(2, 3, 1, 0),
        ("conv3", "bn", "scale"): reference.conv3.bn.weight.grad,
        ("conv4", "kernel"): reference.conv4.weight.grad.permute(2, 3, 1, 0),
        ("conv4", "bias"): reference.conv4.bias.grad,
        ("conv1", "kernel"): reference.conv1.weight.grad.permute(2, 3, 1, 0),
    }
    for path, expected in pairs.items():
        got = grads
        for part in path:
            got = got[part]
        expected = expected.numpy()
        scale = np.max(np.abs(expected))
        assert scale > 0
        assert np.max(np.abs(np.asarray(got) - expected)) <= 1e-4 * scale, path


def test_jit_and_vmap_over_groups_agree_with_single_calls():
    model = new_ifcnn("mean", seed=0)
    model.eval()
    graphdef, state = nnx.split(model)

    def apply(state, sources):
        return nnx.merge(graphdef, state)(sources)

    groups = jnp.asarray(np.random.default_rng(6).normal(size=(3, 2, 1, 15, 17, 3)), jnp.float32)
    batched = jax.jit(jax.vmap(apply, in_axes=(None, 0)))(state, groups)
    for g in range(groups.shape[0]):
        single = apply(state, groups[g])
        np.testing.assert_allclose(np.asarray(batched[g]), np.asarray(single), atol=1e-5)


def test_fuse_rules_are_elementwise_max_sum_mean():
    # With conv3/conv4 removed from the picture, the rules can be checked analytically:
    # the fused features must be the max / sum / mean of the per-source conv2 outputs.

    feats = np.random.default_rng(7).normal(size=(4, 2, 3, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(fuse_features(jnp.asarray(feats), "max")), feats.max(0))
    np.testing.assert_allclose(np.asarray(fuse_features(jnp.asarray(feats), "sum")), feats.sum(0), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(fuse_features(jnp.asarray(feats), "mean")), feats.mean(0), rtol=1e-6
    )
    with pytest.raises(ValueError, match="unknown fuse rule"):
        fuse_features(jnp.asarray(feats), "median")


def test_new_ifcnn_takes_conv1_from_a_checkpoint(converted_checkpoints):
    released = load(str(converted_checkpoints["max"]))
    fresh = new_ifcnn("sum", conv1_from=str(converted_checkpoints["max"]), seed=3)
    np.testing.assert_array_equal(np.asarray(fresh.conv1.kernel[...]), np.asarray(released.conv1.kernel[...]))
    assert not np.allclose(
        np.asarray(fresh.conv2.conv.kernel[...]), np.asarray(released.conv2.conv.kernel[...])
    )
    assert fresh.fuse_rule == "sum"


def test_load_errors(tmp_path):
    with pytest.raises(IFCNNError, match="no such checkpoint"):
        load(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(IFCNNError, match="not an ifcnn-jax checkpoint"):
        load(str(tmp_path / "empty"))

    save_params(tmp_path / "other", {"w": np.zeros(2, np.float32)}, {"kind": "resnet101"})
    with pytest.raises(IFCNNError, match="not an IFCNN model"):
        load(str(tmp_path / "other"))
    save_params(tmp_path / "bad", {"w": np.zeros(2, np.float32)}, {"kind": "ifcnn", "fuse_rule": "max"})
    with pytest.raises(IFCNNError, match="does not match IFCNN"):
        load(str(tmp_path / "bad"))


def test_model_rejects_unknown_rule_and_bad_shapes():
    with pytest.raises(ValueError, match="unknown fuse rule"):
        IFCNN("median", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(N, B, H, W, 3\)"):
        new_ifcnn()(jnp.zeros((2, 8, 8, 3)))
