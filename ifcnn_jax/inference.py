"""Fast IFCNN inference: the one entry point the fusion recipes use.

For an inference-mode model, ``forward`` does not call the NNX module. It evaluates
:func:`ifcnn_jax.network.fuse_window` (plain JAX) on weights prepared once per model:
the BatchNorms folded into the convolutions (:mod:`ifcnn_jax.folded`). A
:class:`~ifcnn_jax.folded.FoldedIFCNN` (what ``ifcnn-fuse`` loads, without Flax) is
taken as it is, with the same result. ``ifcnn_jax.network`` describes how the program
runs on CPU and on accelerators.

Very large images are fused in tiles (``ifcnn_jax.tiling``) so memory stays bounded;
the result equals the untiled one. This module imports Flax only for a training-mode
model (which runs the NNX module itself).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.folded import FoldedIFCNN, fold_arrays, model_weight_arrays
from ifcnn_jax.network import _BLOCK, _PER_ITEM, METHODS, _fuse_window
from ifcnn_jax.tiling import HALO, RegionFn, tiled_apply

if TYPE_CHECKING:
    from ifcnn_jax.model import IFCNN

# Images with more pixels than this are tiled when ``tile`` is None.
AUTO_TILE_PIXELS = 4096 * 4096
# Tile side used by automatic tiling: small enough that the windows in flight stay a
# few hundred MB; the compute barely depends on it (blocks carry their own halo).
DEFAULT_TILE = 1024


# ---------------------------------------------------------------- folded weights

_FOLDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fold(arrays: tuple, eps2: float, eps3: float) -> dict[str, jax.Array]:
    return {name: jnp.asarray(value) for name, value in fold_arrays(arrays, eps2, eps3).items()}


def folded_params(model: IFCNN | FoldedIFCNN) -> dict[str, jax.Array]:
    """The inference weights of ``model`` with BatchNorm folded into conv2 and conv3.

    Cached per model object and keyed on the identity of its parameter arrays: JAX
    arrays are immutable, so assigning new weights (``model.conv1.kernel[...] = w``,
    ``nnx.update``, a training step) replaces an array and invalidates the entry.
    (A NumPy array stored in a parameter and then modified in place would not be
    noticed; assign a new array instead.) A ``FoldedIFCNN``'s read-only weights are
    put on the device once.
    """
    if isinstance(model, FoldedIFCNN):
        cached = _FOLDED.get(model)
        if cached is None:
            cached = _FOLDED[model] = {k: jnp.asarray(v) for k, v in model.weights.items()}
        return cached
    arrays = model_weight_arrays(model)
    eps = (float(model.conv2.bn.epsilon), float(model.conv3.bn.epsilon))
    cached = _FOLDED.get(model)
    if cached is not None and cached[1] == eps and all(a is b for a, b in zip(cached[0], arrays)):
        return cached[2]
    folded = _fold(arrays, *eps)
    _FOLDED[model] = (arrays, eps, folded)
    return folded


def is_inference_mode(model: IFCNN | FoldedIFCNN) -> bool:
    """True when both BatchNorms use their running statistics (``model.eval()``); always
    for a ``FoldedIFCNN``."""
    if isinstance(model, FoldedIFCNN):
        return True
    return bool(model.conv2.bn.use_running_average and model.conv3.bn.use_running_average)


# ---------------------------------------------------------------- entry point


_MODULE_FORWARD = []


def _module_forward(model: IFCNN, sources: jax.Array) -> jax.Array:
    """The NNX module itself (training mode: batch statistics), jitted once."""
    if not _MODULE_FORWARD:
        from flax import nnx  # noqa: PLC0415 - lazy: only a training-mode model needs Flax here

        _MODULE_FORWARD.append(nnx.jit(lambda model, sources: model(sources)))
    return _MODULE_FORWARD[0](model, sources)


def default_method(sources: np.ndarray | jax.Array | None = None) -> str:
    """'matmul' on CPU, 'conv' (XLA's convolutions) on accelerators: the platform of
    ``sources`` if it is a JAX array, else of the default device."""
    platform = None
    if isinstance(sources, jax.Array):
        platform = next(iter(sources.devices())).platform
    else:
        device = jax.config.jax_default_device
        if isinstance(device, str):
            platform = device
        elif device is not None:
            platform = device.platform
    return "matmul" if (platform or jax.default_backend()) == "cpu" else "conv"


def _tile_size(tile: int | None, height: int, width: int, auto_tile_pixels: int) -> int:
    """0 for untiled, else the tile side in pixels."""
    if tile is None:
        return DEFAULT_TILE if height * width > auto_tile_pixels else 0
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 0:
        raise IFCNNError(f"tile must be None (automatic), 0 (off) or a positive size in pixels, got {tile!r}")
    return int(tile)


def region_function(model: IFCNN, method: str | None = None) -> RegionFn:
    """The function that fuses one haloed window, as :func:`ifcnn_jax.tiling.tiled_apply`
    and :func:`ifcnn_jax.tiling.iter_tiles` call it: ``(window, (top, left), (H, W))``
    with ``window`` the stacked, normalised float32 sources ``(N, B, h + 10, w + 10, 3)``
    around the tile whose centre starts at image row ``top``, col ``left`` of an
    ``H x W`` image; returns the exact fused centre ``(B, h, w, 3)`` (a JAX array, in
    the normalised space). ``model`` must be in inference mode; ``method`` as for
    :func:`forward` (None: the faster for the default backend)."""
    if method is not None and method not in METHODS:
        raise IFCNNError(f"unknown inference method {method!r}; choose one of {METHODS}")
    if not is_inference_mode(model):
        raise IFCNNError("windowed fusion needs an inference-mode model (call model.eval())")
    method = method or default_method()
    fuse_window = partial(
        _fuse_window,
        folded_params(model),
        rule=model.fuse_rule,
        method=method,
        block=_BLOCK[method],
        per_item=_PER_ITEM[method],
    )

    def region(window, origin, image_hw):
        return fuse_window(
            jnp.asarray(window, jnp.float32),
            jnp.asarray(origin, jnp.int32),
            jnp.asarray(image_hw, jnp.int32),
        )

    return region


def forward(
    model: IFCNN,
    sources: np.ndarray | jax.Array,
    *,
    tile: int | None = None,
    auto_tile_pixels: int = AUTO_TILE_PIXELS,
    method: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> jax.Array:
    """Fuses stacked, already normalised sources ``(N, B, H, W, 3)`` float32 (N >= 2,
    any H and W) into ``(B, H, W, 3)`` float32 in the same normalised space.

    Args:
      model: an IFCNN. In inference mode (``model.eval()``, as ``ifcnn_jax.load``
        returns it) the fast path runs, with weights folded once per model. A model in
        training mode is called as it is (batch statistics, running averages updated),
        whole-image only.
      sources: NumPy or JAX array. NumPy input is cut into windows on the host when
        tiling, so a huge image is never copied to the device whole.
      tile: None: tile automatically when ``H * W > auto_tile_pixels`` (tiles of
        ``DEFAULT_TILE`` pixels); 0: never tile; a positive int: tiles of that side in
        pixels (each with a 5-pixel halo). Tiled and untiled results agree to float
        rounding (<= 1e-5).
      auto_tile_pixels: the automatic tiling threshold in pixels per image.
      method: 'matmul' or 'conv' (see the module docstring); None picks the faster
        for the default backend.
      progress: optional ``progress(done, total)`` called after each tile (tiled
        fusion only).

    Raises:
      IFCNNError: for an invalid ``tile`` or ``method``, or tiling a training-mode model.
      ValueError: for sources of the wrong shape.
    """
    if not isinstance(sources, jax.Array):
        sources = np.asarray(sources, np.float32)
    elif sources.dtype != jnp.float32:
        sources = sources.astype(jnp.float32)
    if sources.ndim != 5 or sources.shape[-1] != 3:
        raise ValueError(f"expected stacked sources (N, B, H, W, 3), got shape {sources.shape}")
    if sources.shape[0] < 2:
        raise ValueError(f"fusion needs at least 2 sources, got {sources.shape[0]}")
    if method is not None and method not in METHODS:
        raise IFCNNError(f"unknown inference method {method!r}; choose one of {METHODS}")
    height, width = int(sources.shape[2]), int(sources.shape[3])
    tile_size = _tile_size(tile, height, width, auto_tile_pixels)

    if not is_inference_mode(model):
        if tile:
            raise IFCNNError(
                "tiled fusion needs an inference-mode model (call model.eval()); "
                "training-mode BatchNorm uses whole-image statistics"
            )
        return _module_forward(model, jnp.asarray(sources))

    region = region_function(model, method or default_method(sources))
    if tile_size:
        return tiled_apply(region, sources, tile_size, HALO, progress=progress)
    pad = ((0, 0), (0, 0), (HALO, HALO), (HALO, HALO), (0, 0))
    window = jnp.pad(jnp.asarray(sources), pad, mode="edge")
    return region(window, (0, 0), (height, width))


__all__ = [
    "AUTO_TILE_PIXELS",
    "DEFAULT_TILE",
    "METHODS",
    "default_method",
    "folded_params",
    "forward",
    "is_inference_mode",
    "region_function",
]
