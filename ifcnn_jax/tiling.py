"""Fusing an image in overlapping tiles, so that memory stays bounded for any image size.

IFCNN's output pixel depends on the input pixels within ``HALO`` = 5 of it (conv1 7x7
reaches 3, conv2 and conv3 3x3 reach 1 each, conv4 is 1x1). A tile's centre is
therefore exact if the network sees the tile plus a 5-pixel halo of real neighbours.

The network replicate-pads *every* layer at the image border, not just its input, so
a window cut out of the image is not enough on its own: the function that evaluates a
window must also be told where the window sits in the image, and re-apply the
replicate rule to its intermediate features at the image border (never at the tile
border, where the halo holds the real neighbours). ``tiled_apply`` supplies that
position; ``ifcnn_jax.inference`` evaluates the windows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Pixels of context each side that one output pixel depends on: 3 (7x7) + 1 + 1 (3x3).
HALO = 5

# (window (N, B, h + 2 * halo, w + 2 * halo, C), (top, left), (height, width) of the
# image) -> (B, h, w, C_out), the exact output for rows top..top+h, cols left..left+w.
RegionFn = Callable[[jax.Array, tuple[int, int], tuple[int, int]], jax.Array]

# Tiles allowed in flight at once: enough to overlap cutting the next window on the
# host with the network on the current one, few enough to keep memory bounded.
_MAX_TILES_IN_FLIGHT = 2


def tile_starts(length: int, tile: int) -> list[int]:
    """Start offsets of tiles of ``min(tile, length)`` pixels covering ``[0, length)``.

    The last tile is shifted back to end at the border, so every tile has the same
    shape (one compiled program) and a tile size that does not divide the image only
    makes the last two tiles overlap.
    """
    if length < 1 or tile < 1:
        raise ValueError(f"length and tile must be positive, got {length} and {tile}")
    size = min(tile, length)
    starts = list(range(0, length - size + 1, size))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def extract_window(
    sources: np.ndarray | jax.Array, top: int, left: int, height: int, width: int, halo: int = HALO
) -> np.ndarray | jax.Array:
    """The ``(N, B, height + 2 halo, width + 2 halo, C)`` window around a tile of stacked
    sources ``(N, B, H, W, C)``, replicate-padded where it crosses the image border.

    NumPy input gives a NumPy window (the full image never goes to the device); a JAX
    array gives a JAX array on its device.
    """
    full_h, full_w = sources.shape[2], sources.shape[3]
    if isinstance(sources, jax.Array):
        return _extract_window_device(
            sources, jnp.int32(top), jnp.int32(left), height=height, width=width, halo=halo
        )
    # Copy only the part inside the image, then pad it: one window-sized copy.
    row_lo, row_hi = max(top - halo, 0), min(top + height + halo, full_h)
    col_lo, col_hi = max(left - halo, 0), min(left + width + halo, full_w)
    inside = sources[:, :, row_lo:row_hi, col_lo:col_hi]
    pads = (
        (0, 0),
        (0, 0),
        (row_lo - (top - halo), top + height + halo - row_hi),
        (col_lo - (left - halo), left + width + halo - col_hi),
        (0, 0),
    )
    if not any(p for pair in pads for p in pair):
        return np.ascontiguousarray(inside)
    return np.pad(inside, pads, mode="edge")


@partial(jax.jit, static_argnames=("height", "width", "halo"))
def _extract_window_device(
    sources: jax.Array, top: jax.Array, left: jax.Array, *, height: int, width: int, halo: int
) -> jax.Array:
    rows = jnp.clip(top - halo + jnp.arange(height + 2 * halo), 0, sources.shape[2] - 1)
    cols = jnp.clip(left - halo + jnp.arange(width + 2 * halo), 0, sources.shape[3] - 1)
    return jnp.take(jnp.take(sources, rows, axis=2), cols, axis=3)


@partial(jax.jit, donate_argnums=0)
def _place(canvas: jax.Array, tile: jax.Array, top: jax.Array, left: jax.Array) -> jax.Array:
    # Donating the canvas lets XLA write the tile in place instead of copying the image.
    return lax.dynamic_update_slice(
        canvas, tile.astype(canvas.dtype), (jnp.int32(0), top, left, jnp.int32(0))
    )


def tile_origins(height: int, width: int, tile: int) -> list[tuple[int, int]]:
    """The ``(top, left)`` image positions of the tiles of side ``min(tile, height)`` x
    ``min(tile, width)`` pixels covering a ``height x width`` image, in row-major order
    (the order :func:`tiled_apply` and :func:`iter_tiles` visit them)."""
    tile_h, tile_w = min(tile, height), min(tile, width)
    return [(top, left) for top in tile_starts(height, tile_h) for left in tile_starts(width, tile_w)]


def tile_cell(top: int, left: int, tile_h: int, tile_w: int) -> tuple[int, int]:
    """Where the part of the tile at ``(top, left)`` that an image takes from it starts.

    Each pixel is taken from the first tile (in row-major order) that covers it. The
    kept parts are then the cells of a regular grid of ``tile_h x tile_w`` pixels
    (the last row and column of cells cut by the border): a tile shifted back at the
    border gives only the rows and columns past the previous tile. A file can thus be
    written tile by tile on that grid. Returns the cell's image position; the tile's
    kept part is ``centre[cell_top - top:, cell_left - left:]``.
    """
    return -(-top // tile_h) * tile_h, -(-left // tile_w) * tile_w


# (top, left, height, width, halo) -> the haloed window of that tile, as extract_window.
WindowFn = Callable[[int, int, int, int, int], np.ndarray | jax.Array]


def iter_tiles(
    region_fn: RegionFn,
    read_window: WindowFn,
    image_hw: tuple[int, int],
    tile: int,
    halo: int = HALO,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[tuple[int, int], np.ndarray | jax.Array, jax.Array]]:
    """Runs ``region_fn`` on the haloed window of every tile of an image of
    ``image_hw`` (height, width) pixels and yields ``((top, left), window, centre)``
    in row-major order (:func:`tile_origins`).

    ``read_window(top, left, height, width, halo)`` supplies each window (for an
    in-memory stack it is :func:`extract_window`; a file reader can cut it from disk),
    so only a couple of windows are held at once whatever the image size. The next
    tile is dispatched before the previous one is yielded, so the host's work on a
    yielded centre overlaps the network on the next. ``progress(done, total)`` is
    called after each tile is dispatched.
    """
    full_h, full_w = image_hw
    tile_h, tile_w = min(tile, full_h), min(tile, full_w)
    origins = tile_origins(full_h, full_w, tile)
    pending = None
    for done, (top, left) in enumerate(origins, start=1):
        window = read_window(top, left, tile_h, tile_w, halo)
        centre = region_fn(window, (top, left), (full_h, full_w))
        if progress is not None:
            progress(done, len(origins))
        if pending is not None:
            yield pending
        pending = ((top, left), window, centre)
    if pending is not None:
        yield pending


def tiled_apply(
    region_fn: RegionFn,
    sources: np.ndarray | jax.Array,
    tile: int,
    halo: int = HALO,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> jax.Array:
    """Applies ``region_fn`` tile by tile to stacked sources ``(N, B, H, W, C)`` and
    stitches the tile centres into ``(B, H, W, C_out)`` (float32).

    ``tile`` is the side of the square tile centre in pixels (clipped to the image);
    each call sees that centre plus ``halo`` pixels of real neighbours, replicate-padded
    only where the window crosses the image border. Each output pixel comes from the
    first tile that covers it (:func:`tile_cell`). Peak memory is the input, the
    output and a couple of windows, whatever the image size. ``progress(done, total)``
    is called after each tile is dispatched.
    """
    if sources.ndim != 5:
        raise ValueError(f"expected stacked sources (N, B, H, W, C), got shape {sources.shape}")
    _, batch, full_h, full_w, _ = sources.shape
    canvas = None
    in_flight: deque[jax.Array] = deque()
    tiles = iter_tiles(
        region_fn, partial(extract_window, sources), (full_h, full_w), tile, halo, progress=progress
    )
    tile_h, tile_w = min(tile, full_h), min(tile, full_w)
    for (top, left), _, centre in tiles:
        if canvas is None:
            canvas = jnp.zeros(
                (batch, full_h, full_w, centre.shape[-1]),
                jnp.float32,
                device=next(iter(centre.devices())),
            )
        cell_top, cell_left = tile_cell(top, left, tile_h, tile_w)
        kept = (
            centre[:, cell_top - top :, cell_left - left :]
            if (cell_top, cell_left) != (top, left)
            else centre
        )
        canvas = _place(canvas, kept, jnp.int32(cell_top), jnp.int32(cell_left))
        in_flight.append(centre)
        if len(in_flight) > _MAX_TILES_IN_FLIGHT:
            in_flight.popleft().block_until_ready()
    return canvas
