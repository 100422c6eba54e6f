"""The IFCNN inference program in plain JAX (no Flax): the network on folded weights,
evaluated block by block.

:func:`fuse_window` takes the folded weights of :class:`ifcnn_jax.folded.FoldedIFCNN`
(BatchNorm folded into conv2 and conv3) and a haloed window of stacked, normalised
sources, and returns the exact fused centre. :mod:`ifcnn_jax.inference` calls it for
every model (a Flax ``IFCNN`` is folded first), and :mod:`ifcnn_jax.aot` compiles it
ahead of time. How it runs:

* all N sources go through conv1 and conv2 as one batch;
* on CPU the convolutions are matrix products on small blocks of one image (64 x 128
  output pixels for two sources, fewer rows for more): the im2col buffers then stay in
  cache and are reused instead of being allocated and page-faulted in for the whole
  image, which is what made XLA's own convolution, and a whole-image im2col, slower
  than PyTorch. Each block carries the 5-pixel receptive-field halo and re-applies the
  replicate padding of every layer at the image border (see ``ifcnn_jax.tiling``);
  bench/NOTES.md has the measurements behind these choices;
* on GPU/TPU the convolutions are XLA's (cuDNN) at full float32 precision, on large
  blocks.
"""

from __future__ import annotations

import functools
import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from ifcnn_jax.folded import FUSE_RULES
from ifcnn_jax.tiling import HALO

METHODS = ("matmul", "conv")
# Output block (rows, cols) evaluated at a time inside one compiled call, per method,
# and whether a block holds one batch item (CPU: cache-sized blocks) or all of them.
_BLOCK = {"matmul": (64, 128), "conv": (1024, 1024)}
_PER_ITEM = {"matmul": True, "conv": False}
_HIGHEST = lax.Precision.HIGHEST  # no TF32/bf16 shortcuts on GPU/TPU: parity is 1e-4


def fuse_features(features: jax.Array, rule: str, axis: int = 0) -> jax.Array:
    """Combines per-source features elementwise over the source axis ``axis``."""
    if rule == "max":
        # Pairwise maxima, as the reference folds its sources: XLA on CPU runs and
        # differentiates this faster than a max-reduction (bench/NOTES.md), and ties
        # share the gradient as in PyTorch's torch.max(a, b).
        sources = jnp.moveaxis(features, axis, 0)
        return functools.reduce(jnp.maximum, [sources[i] for i in range(sources.shape[0])])
    if rule == "sum":
        return jnp.sum(features, axis=axis)
    if rule == "mean":
        return jnp.mean(features, axis=axis)
    raise ValueError(f"unknown fuse rule {rule!r}; expected one of {FUSE_RULES}")


# ---------------------------------------------------------------- the network on a block
# Blocks are "planar", (C, S, rows, cols) with S = sources x batch: im2col slices are
# then runs of whole image rows and the stacked taps form the contraction axis directly.


def _conv_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID convolution as one matrix product over all kh*kw*C_in taps.

    The taps are stacked in two steps, the kw horizontal shifts and then the kh
    vertical shifts of those: the same (dy, dx, C_in) contraction axis as stacking all
    kh*kw slices at once, and so the same product and result, but 14 slices instead of
    49 for conv1, which XLA compiles in 1.4 CPU-s instead of 3.6 (bench/NOTES.md)."""
    kh, kw, c_in, c_out = kernel.shape
    _, s, rows, cols = x.shape
    out_rows, out_cols = rows - kh + 1, cols - kw + 1
    across = jnp.stack([x[:, :, :, dx : dx + out_cols] for dx in range(kw)])
    taps = jnp.stack([across[:, :, :, dy : dy + out_rows] for dy in range(kh)])
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


def fuse_window(weights: dict, window, origin, image_hw, *, rule: str, method: str = "matmul") -> jax.Array:
    """:func:`_fuse_window` with the library's block settings for ``method``."""
    return _fuse_window(
        weights,
        window,
        origin,
        image_hw,
        rule=rule,
        method=method,
        block=_BLOCK[method],
        per_item=_PER_ITEM[method],
    )
