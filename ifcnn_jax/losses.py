"""Training losses: pixel MSE and a perceptual loss over ResNet-101 features.

The paper trains IFCNN with a pixel loss plus a perceptual loss computed with
ResNet-101 but does not say which ResNet-101 features it compares. This project's
choice is the output of ``layer1`` (stride 4, 256 channels) with weight 1: it is cheap
(conv1 and layer1 are about a tenth of the multiply-adds of the whole feature stack,
which matters when training on CPUs) and keeps spatial detail at the scale of the
focus and blur edges that fusion is about.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet101, check_taps

__all__ = [
    "DEFAULT_TAPS",
    "DEFAULT_WEIGHTS",
    "perceptual_loss",
    "pixel_loss",
]

# This project's choice (the paper does not state its taps); see the module docstring.
DEFAULT_TAPS: tuple[str, ...] = ("layer1",)
DEFAULT_WEIGHTS: tuple[float, ...] = (1.0,)


def pixel_loss(fused: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared error over all elements of two equally shaped arrays (any units,
    typically ``(B, H, W, 3)`` in the model's normalised space); a scalar."""
    return jnp.mean(jnp.square(fused - target))


def perceptual_loss(
    fused: jax.Array,
    target: jax.Array,
    resnet: ResNet101,
    taps: Sequence[str] = DEFAULT_TAPS,
    weights: Sequence[float] | Mapping[str, float] | None = None,
    input_mean: Sequence[float] = IMAGENET_MEAN,
    input_std: Sequence[float] = IMAGENET_STD,
) -> jax.Array:
    """Weighted sum over ``taps`` of the MSE between ResNet-101 features of ``fused``
    and ``target``; a scalar.

    ``fused`` and ``target`` are ``(B, H, W, 3)`` RGB images in the IFCNN model's
    normalised space, ``x = (rgb - input_mean) / input_std`` with ``rgb`` in 0-1. They
    are mapped to the input ResNet-101 expects, ``(rgb - IMAGENET_MEAN) / IMAGENET_STD``;
    with the default ImageNet ``input_mean``/``input_std`` (the released models' space
    for multi-focus images) that mapping is the identity and is skipped.

    ``taps`` are names from ``ifcnn_jax.resnet.TAPS``; ``weights`` is one float per tap
    (a sequence in the order of ``taps``, or a mapping tap -> weight); ``None`` means 1.0
    each. The MSE of a tap is the mean over all of its elements. The default,
    ``layer1`` with weight 1, is this project's choice: the paper does not say which
    features it used. ResNet-101 runs only up to the deepest tap.

    The target's features are under ``stop_gradient``; the ResNet is frozen. The
    function is differentiable in ``fused`` and jit-able; pass ``resnet`` as a jit
    argument (its ~170 MB of weights would otherwise become constants) and keep
    ``taps`` static (bind it with ``functools.partial`` or a closure).
    """
    taps = check_taps(taps)
    tap_weights = _tap_weights(taps, weights)
    if fused.shape != target.shape:
        raise IFCNNError(
            f"perceptual loss: fused shape {tuple(fused.shape)} differs from "
            f"target shape {tuple(target.shape)}"
        )
    fused_in = _to_imagenet_space(fused, input_mean, input_std)
    target_in = _to_imagenet_space(jax.lax.stop_gradient(target), input_mean, input_std)
    fused_features = resnet(fused_in, taps=taps)
    target_features = jax.lax.stop_gradient(resnet(target_in, taps=taps))
    total = jnp.zeros((), jnp.float32)
    for tap, weight in zip(taps, tap_weights):
        total = total + weight * jnp.mean(jnp.square(fused_features[tap] - target_features[tap]))
    return total


def _tap_weights(
    taps: tuple[str, ...], weights: Sequence[float] | Mapping[str, float] | None
) -> tuple[float, ...]:
    if weights is None:
        return (1.0,) * len(taps)
    if isinstance(weights, Mapping):
        unknown = [name for name in weights if name not in taps]
        missing = [tap for tap in taps if tap not in weights]
        if unknown or missing:
            raise IFCNNError(
                f"perceptual loss weights {dict(weights)} must name exactly the taps {list(taps)}"
            )
        return tuple(weights[tap] for tap in taps)
    weights = tuple(weights)
    if len(weights) != len(taps):
        raise IFCNNError(
            f"perceptual loss: {len(weights)} weights {list(weights)} for "
            f"{len(taps)} taps {list(taps)}; give one weight per tap"
        )
    return weights


def _to_imagenet_space(x: jax.Array, input_mean: Sequence[float], input_std: Sequence[float]) -> jax.Array:
    input_mean = tuple(float(v) for v in input_mean)
    input_std = tuple(float(v) for v in input_std)
    if len(input_mean) != 3 or len(input_std) != 3:
        raise IFCNNError(
            f"perceptual loss: input_mean {input_mean} and input_std {input_std} "
            "need one value per RGB channel"
        )
    if input_mean == IMAGENET_MEAN and input_std == IMAGENET_STD:
        return x
    # x * std_in + mean_in recovers RGB in 0-1; then ImageNet's own normalisation.
    scale = jnp.asarray(input_std, jnp.float32) / jnp.asarray(IMAGENET_STD, jnp.float32)
    shift = (jnp.asarray(input_mean, jnp.float32) - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(
        IMAGENET_STD, jnp.float32
    )
    return x * scale + shift
