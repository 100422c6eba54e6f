"""Pixel and perceptual losses, checked against NumPy and against the same loss
computed in PyTorch with torchvision's ResNet-101 features."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.losses import DEFAULT_TAPS, perceptual_loss, pixel_loss
from ifcnn_jax.resnet import IMAGENET_MEAN, IMAGENET_STD, TAPS
from tests import torch_resnet

SHAPE = (2, 64, 64, 3)


@pytest.fixture(autouse=True)
def full_float32_convolutions():
    """Compare at full float32 whatever the device (TPUs and TF32 GPUs round by default)."""
    with jax.default_matmul_precision("highest"):
        yield


def _images(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.normal(size=SHAPE).astype(np.float32)
    fused = (target + 0.3 * rng.normal(size=SHAPE)).astype(np.float32)
    return fused, target


def _torch_perceptual(fused, target, taps, weights, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """The loss written directly with torchvision features: model space -> RGB 0-1 ->
    ImageNet normalisation -> MSE per tap, weighted sum. Returns (loss, d loss / d fused)."""

    def to_resnet_input(x):
        rgb = x * torch.tensor(std) + torch.tensor(mean)
        return (rgb - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)

    fused_t = torch.from_numpy(fused.copy()).requires_grad_(True)
    with torch.no_grad():
        target_features = torch_resnet.torch_features(to_resnet_input(torch.from_numpy(target)))
    fused_features = torch_resnet.torch_features(to_resnet_input(fused_t))
    loss = sum(w * torch.mean((fused_features[t] - target_features[t]) ** 2) for t, w in zip(taps, weights))
    loss.backward()
    return float(loss.detach()), fused_t.grad.numpy()


def test_pixel_loss_is_mean_squared_error():
    fused, target = _images(0)
    expected = np.mean((fused.astype(np.float64) - target) ** 2)
    np.testing.assert_allclose(
        float(pixel_loss(jnp.asarray(fused), jnp.asarray(target))), expected, rtol=1e-6
    )


def test_default_taps_are_valid_and_cheap():
    assert DEFAULT_TAPS and set(DEFAULT_TAPS) <= set(TAPS)
    # Training runs on CPUs too: the default must not need layer3/layer4.
    assert max(TAPS.index(t) for t in DEFAULT_TAPS) <= TAPS.index("layer2")


def test_zero_for_identical_and_positive_otherwise():
    resnet = torch_resnet.loaded_resnet101()
    fused, target = _images(1)
    assert float(perceptual_loss(jnp.asarray(target), jnp.asarray(target), resnet)) == 0.0
    assert float(perceptual_loss(jnp.asarray(fused), jnp.asarray(target), resnet)) > 0.0


@pytest.mark.parametrize(
    "taps, weights",
    [
        (DEFAULT_TAPS, None),
        (("conv1", "relu", "layer1", "layer2"), (0.5, 1.0, 2.0, 3.0)),
    ],
)
def test_matches_pytorch_loss_and_gradient(taps, weights):
    resnet = torch_resnet.loaded_resnet101()
    fused, target = _images(2)
    loss_fn = functools.partial(perceptual_loss, taps=taps, weights=weights)
    loss, grad = jax.jit(jax.value_and_grad(loss_fn))(jnp.asarray(fused), jnp.asarray(target), resnet)
    ref_loss, ref_grad = _torch_perceptual(fused, target, taps, weights or (1.0,) * len(taps))
    assert abs(float(loss) - ref_loss) / ref_loss <= 1e-4
    assert np.all(np.isfinite(np.asarray(grad)))
    assert torch_resnet.relative_error(grad, ref_grad) <= 1e-4


def test_other_input_space_is_converted_to_imagenet_normalisation():
    resnet = torch_resnet.loaded_resnet101()
    fused, target = _images(5)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.3, 0.35)
    ours = perceptual_loss(
        jnp.asarray(fused), jnp.asarray(target), resnet, taps=("relu",), input_mean=mean, input_std=std
    )
    reference, _ = _torch_perceptual(fused, target, ("relu",), (1.0,), mean, std)
    assert abs(float(ours) - reference) / reference <= 1e-4


def test_target_gets_no_gradient():
    resnet = torch_resnet.loaded_resnet101()
    fused, target = _images(3)
    grad_target = jax.grad(perceptual_loss, argnums=1)(
        jnp.asarray(fused), jnp.asarray(target), resnet, taps=("relu",)
    )
    assert not np.any(np.asarray(grad_target))


def test_jit_with_resnet_as_argument_matches_eager():
    resnet = torch_resnet.loaded_resnet101()
    fused, target = _images(4)
    loss_fn = functools.partial(
        perceptual_loss, taps=("relu", "layer1"), weights={"relu": 0.5, "layer1": 2.0}
    )
    eager = loss_fn(jnp.asarray(fused), jnp.asarray(target), resnet)
    jitted = jax.jit(jax.value_and_grad(loss_fn))(jnp.asarray(fused), jnp.asarray(target), resnet)
    np.testing.assert_allclose(float(jitted[0]), float(eager), rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(jitted[1])))


def test_bad_configuration_is_named():
    resnet = torch_resnet.loaded_resnet101()
    x = jnp.zeros((1, 16, 16, 3))
    with pytest.raises(IFCNNError, match="layer9"):
        perceptual_loss(x, x, resnet, taps=("layer9",))
    with pytest.raises(IFCNNError, match="one weight per tap"):
        perceptual_loss(x, x, resnet, taps=("relu", "layer1"), weights=(1.0,))
    with pytest.raises(IFCNNError, match="must name exactly the taps"):
        perceptual_loss(x, x, resnet, taps=("relu",), weights={"layer1": 1.0})
    with pytest.raises(IFCNNError, match="differs from target shape"):
        perceptual_loss(x, jnp.zeros((1, 16, 17, 3)), resnet)
