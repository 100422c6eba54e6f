"""ResNet-101 feature stack: parity with torchvision, early stopping, loading, and
IFCNN's conv1 taken from it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.checkpoints import load_params, save_params
from ifcnn_jax.model import new_ifcnn
from ifcnn_jax.resnet import TAPS, load_resnet101, resnet101_from_params
from tests import torch_resnet


@pytest.fixture(autouse=True)
def full_float32_convolutions():
    """Compare at full float32 whatever the device (TPUs and TF32 GPUs round by default)."""
    with jax.default_matmul_precision("highest"):
        yield


def test_tap_names_in_network_order():
    assert TAPS == ("conv1", "relu", "layer1", "layer2", "layer3", "layer4")


def test_every_tap_matches_torchvision():
    images = np.random.default_rng(3).normal(size=(2, 97, 131, 3)).astype(np.float32)
    with torch.no_grad():
        reference = {k: v.permute(0, 2, 3, 1).numpy() for k, v in torch_resnet.torch_features(images).items()}
    resnet = torch_resnet.loaded_resnet101()
    ours = resnet(jnp.asarray(images), taps=TAPS)
    assert set(ours) == set(TAPS)
    for tap in TAPS:
        assert ours[tap].shape == reference[tap].shape, tap
        err = torch_resnet.relative_error(ours[tap], reference[tap])
        assert err <= 1e-4, f"{tap}: relative difference {err:.3g}"


def test_only_requested_taps_are_returned_and_match():
    images = np.random.default_rng(4).normal(size=(1, 40, 36, 3)).astype(np.float32)
    with torch.no_grad():
        reference = torch_resnet.torch_features(images)["layer2"].permute(0, 2, 3, 1).numpy()
    ours = torch_resnet.loaded_resnet101()(jnp.asarray(images), taps=("layer2", "conv1"))
    assert set(ours) == {"layer2", "conv1"}
    assert torch_resnet.relative_error(ours["layer2"], reference) <= 1e-4


def _convolutions_up_to(tap: str) -> int:
    """Conv2d modules torchvision runs to produce ``tap``."""
    net = torch_resnet.torch_resnet101()
    count = 1  # conv1
    for name in ("layer1", "layer2", "layer3", "layer4"):
        if TAPS.index(tap) < TAPS.index(name):
            break
        count += sum(isinstance(m, torch.nn.Conv2d) for m in getattr(net, name).modules())
    return count


@pytest.mark.parametrize("tap", TAPS)
def test_computes_only_up_to_the_deepest_tap(tap):
    resnet = torch_resnet.loaded_resnet101()
    jaxpr = jax.make_jaxpr(lambda x: resnet(x, taps=(tap,)))(jnp.zeros((1, 64, 64, 3)))
    convs = sum(eqn.primitive.name == "conv_general_dilated" for eqn in jaxpr.jaxpr.eqns)
    assert convs == _convolutions_up_to(tap)


def test_rejects_unknown_tap_and_bad_shape():
    resnet = torch_resnet.loaded_resnet101()
    with pytest.raises(IFCNNError, match="layer5"):
        resnet(jnp.zeros((1, 32, 32, 3)), taps=("layer5",))
    with pytest.raises(IFCNNError, match=r"\(1, 32, 32, 1\)"):
        resnet(jnp.zeros((1, 32, 32, 1)), taps=("layer1",))


def test_ifcnn_from_converted_resnet_has_exactly_its_conv1():

    ckpt_dir, _ = torch_resnet.converted_checkpoint()
    model = new_ifcnn("max", conv1_from=str(ckpt_dir))
    expected = torch_resnet.torch_resnet101().conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(np.asarray(model.conv1.kernel[...]), expected)


def test_load_rejects_other_checkpoint_kinds(tmp_path):
    save_params(
        tmp_path / "ifcnn",
        {"conv1": {"kernel": np.zeros((7, 7, 3, 64), np.float32)}},
        {"kind": "ifcnn", "fuse_rule": "max"},
    )
    with pytest.raises(IFCNNError, match="not a ResNet-101"):
        load_resnet101(tmp_path / "ifcnn")
    with pytest.raises(IFCNNError, match="no such checkpoint"):
        load_resnet101(tmp_path / "missing")


def test_params_tree_mismatch_is_named():

    params, _ = load_params(torch_resnet.converted_checkpoint()[0])
    del params["layer3"]["7"]["bn2"]["var"]
    with pytest.raises(IFCNNError, match="missing ResNet-101 parameter layer3/7/bn2/var"):
        resnet101_from_params(params)
    params["layer3"]["7"]["bn2"]["var"] = np.ones((255,), np.float32)
    with pytest.raises(IFCNNError, match=r"layer3/7/bn2/var has shape \(255,\), expected \(256,\)"):
        resnet101_from_params(params)
