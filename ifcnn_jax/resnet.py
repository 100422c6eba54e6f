"""ResNet-101 feature stack (torchvision's ``resnet101``, v1.5) as a frozen Flax NNX module.

It serves two purposes: IFCNN's conv1 is ResNet-101's first convolution, and the
perceptual loss compares ResNet-101 features of the fused image and the ground truth.

Layout is channels-last, ``(B, H, W, 3)``. The input is RGB scaled to 0-1 and then
normalised with the ImageNet mean and standard deviation (``IMAGENET_MEAN``,
``IMAGENET_STD``), exactly what torchvision's ImageNet weights expect.

The stack is frozen: BatchNorm always uses the running statistics, and every weight is
a :class:`Frozen` variable rather than an ``nnx.Param``, so optimisers and ``nnx.grad``
(which select ``nnx.Param`` by default) leave it alone. The fully connected head is
not part of it.

Convolutions run at JAX's default precision, which is reduced on TPUs (and TF32 on
recent NVIDIA GPUs); wrap a call in ``jax.default_matmul_precision("highest")`` where
full float32 matters, as the converter's ``--verify`` does.

Checkpoints (written by ``convert/from_torch.py resnet101``) hold the pure-dict tree of
this module: ``conv1/kernel`` (7, 7, 3, 64) HWIO, ``bn1/{scale,bias,mean,var}``, and
``layer1`` ... ``layer4``, each a dict of blocks keyed ``'0'``, ``'1'``, ... with
``conv1..conv3``, ``bn1..bn3`` and, in each layer's first block, ``downsample/{conv,bn}``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ifcnn_jax import param_trees
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.imagenet import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401 - re-exported
from ifcnn_jax.io.checkpoints import load_params

# Feature taps in network order; each is the output of the stage of the same name.
TAPS: tuple[str, ...] = ("conv1", "relu", "layer1", "layer2", "layer3", "layer4")
LAYER_NAMES: tuple[str, ...] = ("layer1", "layer2", "layer3", "layer4")
BLOCKS_PER_LAYER: tuple[int, ...] = (3, 4, 23, 3)
BOTTLENECK_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
LAYER_STRIDES: tuple[int, ...] = (1, 2, 2, 2)
EXPANSION = 4
STEM_FEATURES = 64
BN_EPSILON = 1e-5
CHECKPOINT_KIND = "resnet101"

_CONV_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


class Frozen(nnx.Variable):
    """A weight or statistic of the frozen feature stack; never trained."""


class FrozenConv(nnx.Module):
    """Bias-free 2D convolution with symmetric zero padding, PyTorch ``Conv2d`` style."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        rngs: nnx.Rngs,
    ):
        # torchvision's init: He normal with fan_out. Only matters for untrained stacks.
        std = np.sqrt(2.0 / (kernel_size * kernel_size * out_features))
        shape = (kernel_size, kernel_size, in_features, out_features)
        self.kernel = Frozen(std * jax.random.normal(rngs.params(), shape, jnp.float32))
        self.stride = stride
        self.padding = padding

    def __call__(self, x: jax.Array) -> jax.Array:
        pad = ((self.padding, self.padding), (self.padding, self.padding))
        return jax.lax.conv_general_dilated(
            x,
            self.kernel[...],
            window_strides=(self.stride, self.stride),
            padding=pad,
            dimension_numbers=_CONV_DIMENSIONS,
        )


class FrozenBatchNorm(nnx.Module):
    """Inference-mode BatchNorm over the last axis: ``(x - mean) / sqrt(var + eps) * scale + bias``."""

    def __init__(self, features: int, *, epsilon: float = BN_EPSILON):
        self.scale = Frozen(jnp.ones((features,), jnp.float32))
        self.bias = Frozen(jnp.zeros((features,), jnp.float32))
        self.mean = Frozen(jnp.zeros((features,), jnp.float32))
        self.var = Frozen(jnp.ones((features,), jnp.float32))
        self.epsilon = epsilon

    def __call__(self, x: jax.Array) -> jax.Array:
        multiplier = jax.lax.rsqrt(self.var[...] + self.epsilon) * self.scale[...]
        return (x - self.mean[...]) * multiplier + self.bias[...]


class Downsample(nnx.Module):
    """The shortcut projection of a layer's first block: strided 1x1 conv and BatchNorm."""

    def __init__(self, in_features: int, out_features: int, stride: int, *, rngs: nnx.Rngs):
        self.conv = FrozenConv(in_features, out_features, 1, stride=stride, rngs=rngs)
        self.bn = FrozenBatchNorm(out_features)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


class Bottleneck(nnx.Module):
    """ResNet v1.5 bottleneck: 1x1, 3x3 (carrying the stride), 1x1, plus the shortcut."""

    def __init__(self, in_features: int, width: int, stride: int, *, rngs: nnx.Rngs):
        out_features = width * EXPANSION
        self.conv1 = FrozenConv(in_features, width, 1, rngs=rngs)
        self.bn1 = FrozenBatchNorm(width)
        self.conv2 = FrozenConv(width, width, 3, stride=stride, padding=1, rngs=rngs)
        self.bn2 = FrozenBatchNorm(width)
        self.conv3 = FrozenConv(width, out_features, 1, rngs=rngs)
        self.bn3 = FrozenBatchNorm(out_features)
        needs_projection = stride != 1 or in_features != out_features
        self.downsample = (
            Downsample(in_features, out_features, stride, rngs=rngs) if needs_projection else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        y = jax.nn.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return jax.nn.relu(y + shortcut)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    """3x3 max-pool, stride 2, padding 1 (padded cells never win), on ``(B, H, W, C)``."""
    return jax.lax.reduce_window(
        x,
        -jnp.inf,
        jax.lax.max,
        window_dimensions=(1, 3, 3, 1),
        window_strides=(1, 2, 2, 1),
        padding=((0, 0), (1, 1), (1, 1), (0, 0)),
    )


def check_taps(taps: Iterable[str]) -> tuple[str, ...]:
    """Returns ``taps`` as a tuple after checking every name is one of :data:`TAPS`.

    Raises ``IFCNNError`` naming an unknown tap, or if none is given.
    """
    if isinstance(taps, str):
        taps = (taps,)
    taps = tuple(taps)
    if not taps:
        raise IFCNNError(f"no ResNet-101 taps given; choose from {', '.join(TAPS)}")
    for tap in taps:
        if tap not in TAPS:
            raise IFCNNError(f"unknown ResNet-101 tap {tap!r}; choose from {', '.join(TAPS)}")
    return taps


class ResNet101(nnx.Module):
    """torchvision's ResNet-101 up to ``layer4`` (no pooling or classifier), frozen.

    Call it with ``x`` of shape ``(B, H, W, 3)``: RGB in 0-1, then ImageNet-normalised
    (``(rgb - IMAGENET_MEAN) / IMAGENET_STD``). It returns ``{tap: features}`` for the
    requested taps, NHWC float32, and runs the network only as far as the deepest one:
    ``conv1`` (stride 2, 64 channels), ``relu`` (after bn1), ``layer1`` (stride 4, 256),
    ``layer2`` (stride 8, 512), ``layer3`` (stride 16, 1024), ``layer4`` (stride 32, 2048).

    A freshly constructed stack has random He-initialised kernels and identity
    BatchNorm; use :func:`load_resnet101` for converted ImageNet weights.
    """

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = FrozenConv(3, STEM_FEATURES, 7, stride=2, padding=3, rngs=rngs)
        self.bn1 = FrozenBatchNorm(STEM_FEATURES)
        in_features = STEM_FEATURES
        for name, blocks, width, stride in zip(
            LAYER_NAMES, BLOCKS_PER_LAYER, BOTTLENECK_WIDTHS, LAYER_STRIDES
        ):
            layer = {}
            for index in range(blocks):
                layer[str(index)] = Bottleneck(in_features, width, stride if index == 0 else 1, rngs=rngs)
                in_features = width * EXPANSION
            setattr(self, name, nnx.Dict(layer))

    def __call__(self, x: jax.Array, taps: Iterable[str] = TAPS) -> dict[str, jax.Array]:
        taps = check_taps(taps)
        x = jnp.asarray(x, jnp.float32)  # the weights are float32; lax.conv does not promote
        if x.ndim != 4 or x.shape[-1] != 3:
            raise IFCNNError(f"ResNet-101 expects images (B, H, W, 3), got shape {tuple(x.shape)}")
        deepest = max(TAPS.index(tap) for tap in taps)
        features: dict[str, jax.Array] = {}

        def reached_deepest(name: str, value: jax.Array) -> bool:
            # Records the tap if requested; True once nothing deeper is needed.
            if name in taps:
                features[name] = value
            return TAPS.index(name) >= deepest

        x = self.conv1(x)
        if reached_deepest("conv1", x):
            return features
        x = jax.nn.relu(self.bn1(x))
        if reached_deepest("relu", x):
            return features
        x = max_pool_3x3_s2(x)
        for name, blocks in zip(LAYER_NAMES, BLOCKS_PER_LAYER):
            layer = getattr(self, name)
            for index in range(blocks):
                x = layer[str(index)](x)
            if reached_deepest(name, x):
                return features
        return features  # Unreachable: layer4 is the last tap.


def abstract_resnet101() -> ResNet101:
    """A ResNet101 whose arrays are shape/dtype placeholders (no memory, no random draws)."""
    return nnx.eval_shape(lambda: ResNet101(rngs=nnx.Rngs(0)))


def expected_param_shapes() -> dict:
    """The checkpoint tree of ResNet101 with each leaf replaced by its shape tuple."""
    state = nnx.to_pure_dict(nnx.state(abstract_resnet101()))
    return jax.tree.map(lambda leaf: tuple(leaf.shape), state)


def resnet101_from_params(params: dict, source: str = "parameter tree") -> ResNet101:
    """A ResNet101 holding ``params`` (pure-dict tree as written by the converter).

    Raises ``IFCNNError`` naming the first missing, unexpected or misshapen entry.
    """
    expected = param_trees.flatten(expected_param_shapes())
    got = param_trees.flatten(params)
    for key, shape in expected.items():
        if key not in got:
            raise IFCNNError(f"{source}: missing ResNet-101 parameter {key}")
        if tuple(np.shape(got[key])) != shape:
            raise IFCNNError(
                f"{source}: ResNet-101 parameter {key} has shape "
                f"{tuple(np.shape(got[key]))}, expected {shape}"
            )
    extra = [key for key in got if key not in expected]
    if extra:
        raise IFCNNError(f"{source}: unexpected ResNet-101 parameter {extra[0]}")
    model = abstract_resnet101()
    state = nnx.state(model)
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), params))
    nnx.update(model, state)
    return model


def load_resnet101(ckpt_dir: str | os.PathLike) -> ResNet101:
    """Loads a ResNet-101 checkpoint written by ``convert/from_torch.py resnet101``.

    Raises ``IFCNNError`` for a missing directory, a checkpoint of another kind, or a
    parameter tree that does not match ResNet-101.
    """

    params, metadata = load_params(ckpt_dir)
    kind = metadata.get("kind")
    if kind != CHECKPOINT_KIND:
        raise IFCNNError(
            f"{ckpt_dir}: checkpoint kind is {kind!r}, not a ResNet-101 feature "
            "stack (convert one with convert/from_torch.py resnet101)"
        )
    return resnet101_from_params(params, source=str(ckpt_dir))
