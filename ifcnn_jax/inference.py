"""Fast IFCNN inference: the one entry point the fusion recipes use.

For an inference-mode model, ``forward`` does not call the NNX module. It evaluates the
same function from weights prepared once per model:

* the BatchNorms are folded into the convolutions (``w * s`` and ``beta - mu * s`` with
  ``s = gamma / sqrt(var + eps)``, computed in float64);
* all N sources go through conv1 and conv2 as one batch;
* on CPU the convolutions are matrix products on small blocks of one image (64 x 128
  output pixels for two sources, fewer rows for more): the im2col buffers then stay in cache and are reused
  instead of being allocated and page-faulted in for the whole image, which is what
  made XLA's own convolution, and a whole-image im2col, slower than PyTorch. Each block
  carries the 5-pixel receptive-field halo and re-applies the replicate padding of
  every layer at the image border (see ``ifcnn_jax.tiling``); bench/NOTES.md has the
  measurements behind these choices;
* on GPU/TPU the convolutions are XLA's (cuDNN) at full float32 precision, on large
  blocks.

Very large images are fused in tiles (``ifcnn_jax.tiling``) so memory stays bounded;
the result equals the untiled one.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.model import IFCNN, fuse_features
from ifcnn_jax.tiling import HALO, RegionFn, tiled_apply

# Images with more pixels than this are tiled when ``tile`` is None.
AUTO_TILE_PIXELS = 4096 * 4096
# Tile side used by automatic tiling: small enough that the windows in flight stay a
# few hundred MB; the compute barely depends on it (blocks carry their own halo).
DEFAULT_TILE = 1024
METHODS = ("matmul", "conv")
# Output block (rows, cols) evaluated at a time inside one compiled call, per method,
# and whether a block holds one batch item (CPU: cache-sized blocks) or all of them.
_BLOCK = {"matmul": (64, 128), "conv": (1024, 1024)}
_PER_ITEM = {"matmul": True, "conv": False}
_HIGHEST = lax.Precision.HIGHEST  # no TF32/bf16 shortcuts on GPU/TPU: parity is 1e-4


# ---------------------------------------------------------------- folded weights

_FOLDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weight_arrays(model: IFCNN) -> tuple:
    """The arrays the folded weights derive from, in a fixed order."""
    return (
        model.conv1.kernel[...],
        model.conv2.conv.kernel[...],
        model.conv2.bn.scale[...],
        model.conv2.bn.bias[...],
        model.conv2.bn.mean[...],
        model.conv2.bn.var[...],
        model.conv3.conv.kernel[...],
        model.conv3.bn.scale[...],
        model.conv3.bn.bias[...],
        model.conv3.bn.mean[...],
        model.conv3.bn.var[...],
        model.conv4.kernel[...],
        model.conv4.bias[...],
    )


def _fold(arrays: tuple, eps2: float, eps3: float) -> dict[str, jax.Array]:
    (k1, k2, g2, b2, m2, v2, k3, g3, b3, m3, v3, k4, b4) = (np.asarray(a, np.float64) for a in arrays)
    s2 = g2 / np.sqrt(v2 + eps2)
    s3 = g3 / np.sqrt(v3 + eps3)
    folded = {
        "conv1": k1,
        "conv2": k2 * s2,
        "bias2": b2 - m2 * s2,
        "conv3": k3 * s3,
        "bias3": b3 - m3 * s3,
        "conv4": k4[0, 0],
        "bias4": b4,
    }
    return {name: jnp.asarray(value, jnp.float32) for name, value in folded.items()}


def folded_params(model: IFCNN) -> dict[str, jax.Array]:
    """The inference weights of ``model`` with BatchNorm folded into conv2 and conv3.

    Cached per model object and keyed on the identity of its parameter arrays: JAX
    arrays are immutable, so assigning new weights (``model.conv1.kernel[...] = w``,
    ``nnx.update``, a training step) replaces an array and invalidates the entry.
    (A NumPy array stored in a parameter and then modified in place would not be
    noticed; assign a new array instead.)
    """
    arrays = _weight_arrays(model)
    eps = (float(model.conv2.bn.epsilon), float(model.conv3.bn.epsilon))
    cached = _FOLDED.get(model)
    if cached is not None and cached[1] == eps and all(a is b for a, b in zip(cached[0], arrays)):
        return cached[2]
    folded = _fold(arrays, *eps)
    _FOLDED[model] = (arrays, eps, folded)
    return folded


def is_inference_mode(model: IFCNN) -> bool:
    """True when both BatchNorms use their running statistics (``model.eval()``)."""
    return bool(model.conv2.bn.use_running_average and model.conv3.bn.use_running_average)


# ---------------------------------------------------------------- the network on a block
# Blocks are "planar", (C, S, rows, cols) with S = sources x batch: im2col slices are
# then runs of whole image rows and the stacked taps form the contraction axis directly.


def _conv_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID convolution as one matrix product over all kh*kw*C_in taps."""
    kh, kw, c_in, c_out = kernel.shape
    _, s, rows, cols = x.shape
    out_rows, out_cols = rows - kh + 1, cols - kw + 1
    taps = jnp.stack(
        [x[:, :, dy : dy + out_rows, dx : dx + out_cols] for dy in range(kh) for dx in range(kw)]
    )
    weights = kernel.reshape(kh * kw * c_in, c_out).T
    out = jnp.dot(weights, taps.reshape(kh * kw * c_in, -1), precision=_HIGHEST)
    return out.reshape(c_out, s, out_rows, out_cols)


def _conv_row_taps(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID convolution as one product over the kw horizontal taps that yields all kh
    kernel rows at once, then a sum of kh row-shifted slices: a third of the im2col
    buffer of ``_conv_im2col`` for the same arithmetic."""
    kh, kw, c_in, c_out = kernel.shape
    _, s, rows, cols = x.shape
    out_rows, out_cols = rows - kh + 1, cols - kw + 1
    taps = jnp.stack([x[:, :, :, dx : dx + out_cols] for dx in range(kw)])
    weights = jnp.transpose(kernel, (0, 3, 1, 2)).reshape(kh * c_out, kw * c_in)
    per_row = jnp.dot(weights, taps.reshape(kw * c_in, -1), precision=_HIGHEST)
    per_row = per_row.reshape(kh, c_out, s, rows, out_cols)
    return sum(per_row[dy, :, :, dy : dy + out_rows] for dy in range(kh))


def _conv_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID convolution by XLA (cuDNN on GPU). NHWC is the layout its emitters are
    built for: on CPU, the same convolution on planar operands ran 30x slower."""
    nhwc = jnp.transpose(x, (1, 2, 3, 0))
    out = lax.conv_general_dilated(
        nhwc, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HIGHEST
    )
    return jnp.transpose(out, (3, 0, 1, 2))


def _replicate_outside(
    x: jax.Array, top: jax.Array, left: jax.Array, image_hw: jax.Array, halo: int
) -> jax.Array:
    """Re-applies the layer's replicate padding to a planar block ``(C, S, rows, cols)``
    whose first row/col is image row ``top``, col ``left`` (negative in the halo above
    or left of the image): rows/cols outside the image take the nearest image row/col.

    The block's centre lies inside the image, so only its first and last ``halo``
    rows/cols can be outside: just those thin strips are rewritten, in place. (A
    gather over the whole block, fused by XLA into the next im2col, doubled the run
    time; see bench/NOTES.md.)
    """
    x = _replicate_strips(x, top, image_hw[0], axis=2, halo=halo)
    return _replicate_strips(x, left, image_hw[1], axis=3, halo=halo)


def _replicate_strips(
    x: jax.Array, start: jax.Array, length: jax.Array, *, axis: int, halo: int
) -> jax.Array:
    size = x.shape[axis]
    edge = min(halo + 1, size)  # the halo strip and the first centre row/col
    shape = [1] * x.ndim
    shape[axis] = edge
    head = lax.slice_in_dim(x, 0, edge, axis=axis)
    head_pos = (start + jnp.arange(edge)).reshape(shape)
    first = lax.dynamic_slice_in_dim(head, jnp.clip(-start, 0, edge - 1), 1, axis=axis)
    x = lax.dynamic_update_slice_in_dim(x, jnp.where(head_pos < 0, first, head), 0, axis=axis)
    tail = lax.slice_in_dim(x, size - edge, size, axis=axis)
    tail_pos = (start + size - edge + jnp.arange(edge)).reshape(shape)
    last = lax.dynamic_slice_in_dim(
        tail, jnp.clip(length - 1 - (start + size - edge), 0, edge - 1), 1, axis=axis
    )
    return lax.dynamic_update_slice_in_dim(
        x, jnp.where(tail_pos >= length, last, tail), size - edge, axis=axis
    )


def _fuse_planar(features: jax.Array, num_sources: int, rule: str) -> jax.Array:
    c, s = features.shape[:2]
    grouped = features.reshape(c, num_sources, s // num_sources, *features.shape[2:])
    return fuse_features(grouped, rule, axis=1)


def _network_block(
    p: dict,
    window: jax.Array,
    top: jax.Array,
    left: jax.Array,
    image_hw: jax.Array,
    num_sources: int,
    rule: str,
    method: str,
) -> jax.Array:
    """IFCNN on one planar window ``(3, S, h + 10, w + 10)`` whose centre starts at image
    row ``top``, col ``left``; returns the centre ``(3, B, h, w)``."""
    conv7, conv3 = (_conv_im2col, _conv_row_taps) if method == "matmul" else (_conv_xla, _conv_xla)
    bias = lambda b: b[:, None, None, None]  # noqa: E731
    x = conv7(window, p["conv1"])
    x = _replicate_outside(x, top - 2, left - 2, image_hw, halo=2)
    x = jax.nn.relu(conv3(x, p["conv2"]) + bias(p["bias2"]))
    x = _replicate_outside(x, top - 1, left - 1, image_hw, halo=1)
    x = _fuse_planar(x, num_sources, rule)
    x = jax.nn.relu(conv3(x, p["conv3"]) + bias(p["bias3"]))
    return jnp.einsum("cbhw,cd->dbhw", x, p["conv4"], precision=_HIGHEST) + bias(p["bias4"])


@partial(jax.jit, static_argnames=("rule", "method", "block", "per_item"))
def _fuse_window(
    p: dict,
    window: jax.Array,
    origin: jax.Array,
    image_hw: jax.Array,
    *,
    rule: str,
    method: str,
    block: tuple[int, int],
    per_item: bool,
) -> jax.Array:
    """The exact fused centre ``(B, h, w, 3)`` of a window ``(N, B, h + 10, w + 10, 3)``
    whose centre starts at image position ``origin`` (row, col) of an image of size
    ``image_hw``; the window is replicate-padded where it crosses the image border.
    Origin and image size are traced, so every tile of a tiled image shares one
    compiled program.

    ``block`` bounds the output block evaluated at once; with ``per_item`` each block
    holds one batch item, and its rows shrink as 2/N so that a block's buffers keep
    about the same size (and stay in cache) for any number of sources N."""
    n, b, rows, cols, _ = window.shape
    height, width = rows - 2 * HALO, cols - 2 * HALO
    items = b if per_item else 1
    block_rows = max(8, block[0] * 2 // n) if per_item else block[0]
    # As many blocks as the size limit needs, all of about equal size: little overlap.
    blocks_down, blocks_across = math.ceil(height / block_rows), math.ceil(width / block[1])
    block_h, block_w = math.ceil(height / blocks_down), math.ceil(width / blocks_across)
    planar = jnp.transpose(window, (4, 0, 1, 2, 3))  # (3, N, B, rows, cols)
    per_block = blocks_down * blocks_across

    def one_block(index, out):
        item, index = index // per_block, index % per_block
        # The last block of a row/column is shifted back inside: fixed shapes, and the
        # overlap is written twice with the same values.
        r = jnp.minimum((index // blocks_across) * block_h, height - block_h)
        c = jnp.minimum((index % blocks_across) * block_w, width - block_w)
        part = lax.dynamic_slice(
            planar,
            (0, 0, item * (b // items), r, c),
            (3, n, b // items, block_h + 2 * HALO, block_w + 2 * HALO),
        )
        part = part.reshape(3, n * (b // items), *part.shape[3:])
        fused = _network_block(p, part, origin[0] + r, origin[1] + c, image_hw, n, rule, method)
        return lax.dynamic_update_slice(out, fused, (0, item * (b // items), r, c))

    out = jnp.zeros((3, b, height, width), jnp.float32)
    out = lax.fori_loop(0, items * per_block, one_block, out)
    return jnp.transpose(out, (1, 2, 3, 0))


# ---------------------------------------------------------------- entry point


@nnx.jit
def _module_forward(model: IFCNN, sources: jax.Array) -> jax.Array:
    return model(sources)


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
