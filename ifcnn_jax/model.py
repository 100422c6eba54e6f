"""The IFCNN network (Zhang et al., Information Fusion 2020) as a Flax NNX module.

Layout is channels-last. Sources are stacked on a leading axis, ``(N, B, H, W, C)``,
so that the number of sources N is part of the array shape rather than of the Python
call signature; every source runs through the same conv1/conv2 weights.
"""

from __future__ import annotations

import os
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ifcnn_jax.conv_ops import conv_replicate
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.folded import BN_EPSILON, FEATURES, FUSE_RULES, read_params
from ifcnn_jax.io.checkpoints import load_params
from ifcnn_jax.io.state_dicts import params_from_release_file
from ifcnn_jax.network import fuse_features

__all__ = [
    "BN_EPSILON",
    "FEATURES",
    "FUSE_RULES",
    "IFCNN",
    "fuse_features",
    "load",
    "model_from_params",
    "new_ifcnn",
]

FuseRule = Literal["max", "sum", "mean"]


class BatchNorm(nnx.Module):
    """BatchNorm over the channel axis with PyTorch's conventions.

    Training mode normalises with the biased batch variance and updates the running
    variance with the unbiased one, ``running = (1 - momentum) * running + momentum *
    batch`` (PyTorch's ``momentum=0.1`` convention, not Flax's). Inference mode uses
    the running statistics.

    ``group_axes`` lets one call normalise several independent groups: for the stacked
    sources ``(N, B, H, W, C)`` with ``group_axes=1`` each source gets its own batch
    statistics, exactly as the reference model, which calls the layer once per source.
    The running statistics are then updated once per group, in order.
    """

    def __init__(
        self,
        features: int,
        *,
        epsilon: float = BN_EPSILON,
        momentum: float = 0.1,
        use_running_average: bool = False,
    ):
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((features,), jnp.float32))
        self.epsilon = epsilon
        self.momentum = momentum
        self.use_running_average = use_running_average

    def __call__(self, x: jax.Array, group_axes: int = 0) -> jax.Array:
        if self.use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            reduce_axes = tuple(range(group_axes, x.ndim - 1))
            mean = jnp.mean(x, axis=reduce_axes, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), axis=reduce_axes, keepdims=True)
            count = 1
            for axis in reduce_axes:
                count *= x.shape[axis]
            unbiased = var * (count / max(count - 1, 1))
            running_mean, running_var = self.mean[...], self.var[...]
            group_means = mean.reshape(-1, x.shape[-1])
            group_vars = unbiased.reshape(-1, x.shape[-1])
            for g in range(group_means.shape[0]):
                running_mean = (1 - self.momentum) * running_mean + self.momentum * group_means[g]
                running_var = (1 - self.momentum) * running_var + self.momentum * group_vars[g]
            self.mean[...] = jax.lax.stop_gradient(running_mean)
            self.var[...] = jax.lax.stop_gradient(running_var)
        inv = jax.lax.rsqrt(var + self.epsilon) * self.scale[...]
        return (x - mean) * inv + self.bias[...]


def _he_fan_out() -> nnx.Initializer:
    # The reference initialises every conv with N(0, sqrt(2 / (k * k * out_channels))).
    return nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


class ConvBlock(nnx.Module):
    """Replicate padding 1, 3x3 convolution without bias, BatchNorm, ReLU."""

    def __init__(self, features: int = FEATURES, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(
            features, features, (3, 3), padding="VALID", use_bias=False, kernel_init=_he_fan_out(), rngs=rngs
        )
        self.bn = BatchNorm(features)

    def __call__(self, x: jax.Array, group_axes: int = 0) -> jax.Array:
        # The kernel is nnx.Conv's; the convolution is ifcnn_jax.conv_ops' (fast on CPU).
        y = conv_replicate(x, self.conv.kernel[...])
        return jax.nn.relu(self.bn(y, group_axes=group_axes))


class IFCNN(nnx.Module):
    """IFCNN: conv1 (7x7, ResNet-101's first layer) and conv2 per source, elementwise
    fusion, conv3, and a 1x1 conv4 back to three channels.

    Call it with stacked sources ``(N, B, H, W, 3)`` (any N >= 2, any H and W) in the
    normalised space of the task recipe; it returns ``(B, H, W, 3)`` in that same space.
    ``model.eval()`` switches BatchNorm to the running statistics (inference);
    ``model.train()`` to batch statistics.
    """

    def __init__(self, fuse_rule: FuseRule = "max", *, rngs: nnx.Rngs):
        if fuse_rule not in FUSE_RULES:
            raise ValueError(f"unknown fuse rule {fuse_rule!r}; expected one of {FUSE_RULES}")
        self.fuse_rule = fuse_rule
        self.conv1 = nnx.Conv(
            3, FEATURES, (7, 7), padding="VALID", use_bias=False, kernel_init=_he_fan_out(), rngs=rngs
        )
        self.conv2 = ConvBlock(rngs=rngs)
        self.conv3 = ConvBlock(rngs=rngs)
        self.conv4 = nnx.Conv(
            FEATURES, 3, (1, 1), padding="VALID", use_bias=True, kernel_init=_he_fan_out(), rngs=rngs
        )

    def __call__(self, sources: jax.Array) -> jax.Array:
        if sources.ndim != 5 or sources.shape[-1] != 3:
            raise ValueError(f"IFCNN expects stacked sources (N, B, H, W, 3), got {sources.shape}")
        x = conv_replicate(sources, self.conv1.kernel[...])
        x = self.conv2(x, group_axes=1)
        x = fuse_features(x, self.fuse_rule)
        x = self.conv3(x)
        # The 1x1 conv4 as a matrix product: XLA's convolution transposes its operands
        # for the kernel gradient.
        return jnp.dot(x, self.conv4.kernel[0, 0]) + self.conv4.bias[...]


def new_ifcnn(fuse_rule: FuseRule = "max", *, conv1_from: str | None = None, seed: int = 0) -> IFCNN:
    """A fresh, untrained IFCNN (training mode), as the paper initialises it.

    ``conv1_from`` names a checkpoint directory whose ``params['conv1']['kernel']``
    (7, 7, 3, 64, HWIO) becomes conv1: a converted torchvision ResNet-101 (the
    paper's initialisation) or any IFCNN checkpoint, whose conv1 is that same layer;
    one of the authors' released ``.pth`` files is read directly (without PyTorch).
    Without it conv1 is He-initialised at random. The other layers are always drawn
    from ``seed``.
    """

    model = IFCNN(fuse_rule, rngs=nnx.Rngs(seed))
    if conv1_from:
        if str(conv1_from).lower().endswith((".pth", ".pt")) and not os.path.isdir(conv1_from):
            params = params_from_release_file(conv1_from)  # an authors' IFCNN-*.pth
        else:
            params, _ = load_params(conv1_from)
        kernel = params.get("conv1", {}).get("kernel") if isinstance(params.get("conv1"), dict) else None
        if kernel is None:
            raise IFCNNError(f"{conv1_from}: checkpoint has no conv1/kernel to initialise IFCNN from")
        if tuple(kernel.shape) != tuple(model.conv1.kernel.shape):
            raise IFCNNError(
                f"{conv1_from}: conv1/kernel has shape {tuple(kernel.shape)}, "
                f"expected {tuple(model.conv1.kernel.shape)}"
            )
        model.conv1.kernel[...] = jnp.asarray(kernel, jnp.float32)
    return model


def load(path: str, fuse_rule: FuseRule | None = None) -> IFCNN:
    """Loads an IFCNN model in inference mode.

    ``path`` is a checkpoint directory (converted or trained; the fusion rule comes from
    its metadata), one of the authors' released ``.pth`` files, read without PyTorch
    (the rule comes from the file name, IFCNN-MAX/SUM/MEAN, or from ``fuse_rule``), or
    the name of a released model (``"IFCNN-MAX"``, ``"IFCNN-SUM"``, ``"IFCNN-MEAN"``),
    downloaded once into the user cache and checked against its recorded SHA-256
    (``ifcnn_jax.io.model_files``), or the name of a model shipped in the package
    (``"ifcnn-jax-mf"``; see docs/models.md) or any ``.npz`` weights file of that kind.
    Raises ``IFCNNError`` for a missing path, a checkpoint of another kind, or
    parameters of the wrong names or shapes.
    """
    params, rule = read_params(path, fuse_rule)
    try:
        return model_from_params(params, rule)
    except ValueError as exc:
        raise IFCNNError(f"{path}: {exc}") from exc


def model_from_params(params: dict, fuse_rule: FuseRule) -> IFCNN:
    """An inference-mode IFCNN holding ``params`` (the pure-dict layout of ``nnx.state``).

    Raises ``ValueError`` if the tree's names or shapes differ from IFCNN's, or if a
    value is NaN or infinite.
    """
    model = IFCNN(fuse_rule, rngs=nnx.Rngs(0))
    state = nnx.state(model)
    expected = jax.tree.map(lambda v: tuple(v.shape), nnx.to_pure_dict(state))
    got = jax.tree.map(lambda v: tuple(v.shape), params)
    if expected != got:
        raise ValueError(f"parameter tree does not match IFCNN (expected {expected}, got {got})")
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    bad = [jax.tree_util.keystr(path) for path, v in flat if not np.isfinite(np.asarray(v)).all()]
    if bad:
        raise ValueError(f"parameters {', '.join(bad)} hold NaN or infinite values")
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params))
    nnx.update(model, state)
    model.eval()
    return model
