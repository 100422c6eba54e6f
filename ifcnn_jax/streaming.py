"""Fusing TIFF files tile by tile, from disk to disk, in bounded memory.

The sources are read region by region (:mod:`ifcnn_jax.io.tiff_stream`), the tiles
are visited by :func:`ifcnn_jax.tiling.iter_tiles` with the same windows
:func:`ifcnn_jax.tiling.tiled_apply` cuts, and the fused tiles are written to the
output as they come. Every step outside the network is the recipe's own per-pixel
arithmetic (:mod:`ifcnn_jax.recipes`), applied to each tile, so the result is
identical, bit for bit, to ``ifcnn_jax.fuse(model, images, task, tile=T)`` with the
same tile size ``T``; with the default tile (``tile=None``) that is also what
``ifcnn_jax.fuse`` does by default: one tile for images up to
``inference.AUTO_TILE_PIXELS`` pixels (the untiled fusion), tiles of
``inference.DEFAULT_TILE`` above.

Memory: per source a band of ``T + 10`` rows of the image as stored (strip TIFFs) or
a few tiles (tiled TIFFs, memory-mapped contiguous ones), a couple of windows of
``(T + 10)^2`` pixels in float32, and one output tile (tiled output) or band (strip
output). It does not grow with the image height, and grows with its width only
through the bands of strip files.

Streamed: the ``multifocus``, ``infrared`` and ``medical`` recipes (gray and colour,
8-bit, 16-bit and float32). Not streamed: ``exposure`` (CLAHE needs the whole fused
luminance), decision-map fusion (its cleaning works on the whole map) and ``--align``
(registration needs whole images): those take the in-memory path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.tiff_stream import NotStreamable, TiffRegions, is_tiff_path, stream_support, write_tiff
from ifcnn_jax.preflight import HALO, fusion_bytes  # preflight's HALO: tiling's imports JAX

STREAMED_TASKS = ("multifocus", "infrared", "medical")


@dataclasses.dataclass(frozen=True)
class StreamPlan:
    """How a fusion is streamed: the tile side (pixels) and whether the output is a
    TIFF written tile by tile (else the result is assembled in memory and written by
    ``write_image``)."""

    tile: int
    to_tiff: bool
    height: int
    width: int


def streamed_tile(tile: int | None, height: int, width: int) -> int:
    """The tile side (pixels) the streamed path uses for ``tile`` as ``ifcnn_jax.fuse``
    takes it: None gives what the in-memory path does (one tile, i.e. the untiled
    fusion, up to ``AUTO_TILE_PIXELS`` pixels; ``DEFAULT_TILE`` above), a positive
    int itself."""
    from ifcnn_jax.inference import _tile_size  # noqa: PLC0415 - lazy: imports JAX; only a streamed fusion needs it

    size = _tile_size(tile, height, width, _auto_tile_pixels())
    return size if size else max(height, width)


def _auto_tile_pixels() -> int:
    from ifcnn_jax.inference import AUTO_TILE_PIXELS  # noqa: PLC0415 - lazy: imports JAX

    return AUTO_TILE_PIXELS


def plan_streaming(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    task: str,
    *,
    tile: int | None = None,
    decision_map: bool = False,
    align: str = "off",
    available: int | None = None,
) -> StreamPlan | None:
    """The plan for fusing ``sources`` into ``output`` by streaming, or None for the
    in-memory path.

    Streamed when every source is a TIFF that reads region by region
    (:func:`~ifcnn_jax.io.tiff_stream.stream_support`), the task is one of
    ``STREAMED_TASKS`` without decision map or alignment, ``tile`` is not 0 (0 asks
    for the untiled in-memory fusion), and either the output is a TIFF or the
    in-memory fusion would need more than ``available`` bytes (default: the memory
    available now).
    """
    if task not in STREAMED_TASKS or decision_map or align != "off" or tile == 0 or len(sources) < 2:
        return None
    if not all(is_tiff_path(p) for p in sources):
        return None
    if any(stream_support(p) is not None for p in sources):
        return None
    with TiffRegions(sources[0]) as first:
        height, width, _ = first.shape
    to_tiff = is_tiff_path(output)
    if not to_tiff:
        from ifcnn_jax.io.images import available_memory  # noqa: PLC0415 - lazy: loads OpenCV

        available = available_memory() if available is None else available
        if fusion_bytes(height, width, len(sources)) <= available:
            return None
    return StreamPlan(streamed_tile(tile, height, width), to_tiff, height, width)


class _LazySource:
    """One source as ``tiling.extract_window`` sees a stacked array ``(1, 1, H, W, C)``:
    slicing it reads that rectangle from the file."""

    ndim = 5

    def __init__(self, reader: TiffRegions):
        self.reader = reader
        height, width, channels = reader.shape
        self.shape = (1, 1, height, width, channels)

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key[2], key[3]
        return self.reader.read(rows.start, rows.stop, cols.start, cols.stop)[None, None]


def _is_colour(reader: TiffRegions, band: int = 256) -> bool:
    """``recipes.is_colour`` over the whole file, band by band (stops at the first
    pixel whose channels differ)."""
    height, width, channels = reader.shape
    if channels == 1:
        return False
    for top in range(0, height, band):
        rgb = reader.read(top, min(top + band, height), 0, width)
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            return True
    return False


def fuse_tiff_files(
    model,
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    task: str,
    *,
    tile: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Fuses TIFF ``sources`` with the ``task`` recipe (one of ``STREAMED_TASKS``) and
    writes the result to ``output``, tile by tile, in bounded memory.

    Args:
      model: an inference-mode IFCNN (``ifcnn_jax.load``).
      sources: two or more TIFF files of one size that ``stream_support`` accepts:
        gray or RGB, 8-bit (0-255), 16-bit (0-65535) or float32 (0-1).
      output: a ``.tif``/``.tiff`` path (written uncompressed, tiled when the tile
        side is a multiple of 16, else in strips), or any other image path
        (``write_image``: the result is assembled in memory first).
      tile: as for ``ifcnn_jax.fuse`` (None: the same tiling the in-memory path would
        choose); must not be 0.
      progress: ``progress(done, total)`` after each tile.

    The result, its type and layout are those of ``ifcnn_jax.fuse(model, images, task,
    tile=...)`` on the pixels the files hold, bit for bit (these are OpenCV's decoded
    pixels too, except for 16-bit RGB in separate planes, which OpenCV misreads). The
    output is written atomically (temporary file beside it, renamed at the end): a
    failure part-way leaves no new file, and a file already at ``output`` unchanged.
    Raises ``IFCNNError`` naming the file for unreadable or damaged sources, sources
    of different sizes, a gray/colour mix the task cannot take, and float samples
    outside [0, 1].
    """
    from ifcnn_jax import recipes  # noqa: PLC0415 - lazy: imports JAX and OpenCV
    from ifcnn_jax.inference import region_function  # noqa: PLC0415 - lazy: imports JAX
    from ifcnn_jax.io.images import write_image  # noqa: PLC0415 - lazy: loads OpenCV
    from ifcnn_jax.tiling import extract_window, iter_tiles  # noqa: PLC0415 - lazy: imports JAX

    if task not in STREAMED_TASKS:
        raise IFCNNError(f"task {task} is not fused by streaming; choose one of {', '.join(STREAMED_TASKS)}")
    if tile == 0:
        raise IFCNNError("streamed fusion works in tiles: tile must be None or a positive size")
    names = [str(p) for p in sources]
    if len(sources) < 2:
        raise IFCNNError(f"fusion needs at least 2 sources, got {len(sources)}")
    with contextlib.ExitStack() as stack:
        readers = []
        for path in sources:
            try:
                readers.append(stack.enter_context(TiffRegions(path)))
            except IFCNNError:
                raise  # names the file already
            except (OSError, ValueError, NotStreamable) as exc:
                raise IFCNNError(f"{path}: cannot be read region by region ({exc})") from None
        height, width, _ = readers[0].shape
        for reader, name in zip(readers[1:], names[1:]):
            if reader.shape[:2] != (height, width):
                raise IFCNNError(
                    f"sources differ in size: {names[0]} is {width}x{height}, "
                    f"{name} is {reader.shape[1]}x{reader.shape[0]} (width x height)"
                )
        recipe = _Recipe(recipes, task, readers, names)
        size = streamed_tile(tile, height, width)
        lazy = [_LazySource(r) for r in readers]
        network = region_function(model)

        def read_window(top: int, left: int, h: int, w: int, halo: int) -> list[np.ndarray]:
            windows = [extract_window(s, top, left, h, w, halo)[0, 0] for s in lazy]
            for window, reader, name in zip(windows, readers, names):
                if reader.dtype.kind == "f" and (
                    not np.isfinite(window).all() or window.min() < 0 or window.max() > 1
                ):
                    raise IFCNNError(f"{name}: floating-point image must hold values in [0, 1]")
            return windows

        def region(windows, origin, image_hw):
            return network(recipe.network_input(windows), origin, image_hw)

        tiles = iter_tiles(region, read_window, (height, width), size, HALO, progress=progress)
        grid = (min(size, height), min(size, width))
        pieces = _pieces(tiles, recipe, grid)
        shape = (height, width, 3) if recipe.colour_out else (height, width)
        if is_tiff_path(output):
            return write_tiff(
                output, pieces, shape, recipe.out_dtype, grid, tile=size if size % 16 == 0 else None
            )
        fused = np.empty(shape, recipe.out_dtype)
        for (top, left), piece in pieces:
            fused[top : top + piece.shape[0], left : left + piece.shape[1]] = piece
    return write_image(output, fused)


def _pieces(
    tiles: Iterator, recipe: _Recipe, grid: tuple[int, int]
) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """The finished tiles cut to the cells of the output grid (``tiling.tile_cell``:
    each pixel from the first tile that covers it, as ``tiled_apply``), in row-major
    order. A recipe whose last step must see whole image rows (``rows_whole``) is
    finished one band of cells at a time."""
    from ifcnn_jax.tiling import tile_cell  # noqa: PLC0415 - lazy: imports JAX

    band, band_top = None, None
    for (top, left), windows, centre in tiles:
        cell_top, cell_left = tile_cell(top, left, *grid)
        fused = recipe.finish(np.asarray(centre)[0], windows, centre.shape[1:3])
        piece = fused[cell_top - top :, cell_left - left :]
        if not recipe.rows_whole:
            yield (cell_top, cell_left), piece
            continue
        if band is not None and cell_top != band_top:
            yield from _cut_band(band_top, recipe.rows(band), grid[1])
            band = None
        if band is None:
            band, band_top = np.empty((piece.shape[0], recipe.width, *piece.shape[2:]), piece.dtype), cell_top
        band[:, cell_left : cell_left + piece.shape[1]] = piece
    if band is not None:
        yield from _cut_band(band_top, recipe.rows(band), grid[1])


def _cut_band(top: int, band: np.ndarray, step: int) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    for left in range(0, band.shape[1], step):
        yield (top, left), band[:, left : left + step]


class _Recipe:
    """The per-pixel steps of a task recipe before and after the network, on one
    tile: the same operations, in the same order and types, as ``recipes``."""

    def __init__(self, recipes, task: str, readers: list[TiffRegions], names: list[str]):
        self.r = recipes
        colour = [_is_colour(reader) for reader in readers]
        dummies = [np.empty((1, 1), reader.dtype) for reader in readers]
        self.kind = recipes._output_kind(dummies)
        self.colour_index = None
        if task == "multifocus":
            if any(colour) and not all(colour):
                gray = [n for n, c in zip(names, colour) if not c]
                raise IFCNNError(f"{task} sources must be all colour or all gray; gray: {', '.join(gray)}")
            self.mean, self.std = recipes._IMAGENET_MEAN, recipes._IMAGENET_STD
            self.colour_out = any(colour)
        else:
            if sum(colour) > 1:
                listed = ", ".join(n for n, c in zip(names, colour) if c)
                raise IFCNNError(
                    f"{task} fusion takes at most one colour source (its chroma is kept); "
                    f"colour sources: {listed}"
                )
            self.mean, self.std = recipes._IDENTITY_MEAN, recipes._IDENTITY_STD
            self.colour_out = any(colour)
            if any(colour):
                self.colour_index = colour.index(True)
                self.kind = "uint8"
        self.task = task
        self.width = readers[0].shape[1]
        # OpenCV's float RGB2GRAY rounds the last pixels of each row (its scalar tail)
        # differently from the others: to be exact it must see whole image rows.
        self.rows_whole = self.kind == "float" and not self.colour_out
        self.out_dtype = {"float": np.dtype(np.float32), "uint16": np.dtype(np.uint16)}.get(
            self.kind, np.dtype(np.uint8)
        )

    @staticmethod
    def _image(window: np.ndarray) -> np.ndarray:
        return window[:, :, 0] if window.shape[2] == 1 else window  # (H, W) gray as read_image

    def _planes(self, windows: list[np.ndarray]) -> list[np.ndarray]:
        """What ``_run_network`` is given: the images (multifocus), their gray
        channels, or the luminances beside a colour source (8-bit)."""
        images = [self._image(w) for w in windows]
        r = self.r
        if self.task == "multifocus":
            return images
        if self.colour_index is None:
            return [r._gray_channel(im) for im in images]
        k = self.colour_index
        ycbcr = r.pil_rgb_to_ycbcr(r.to_8bit(images[k]))
        return [ycbcr[..., 0] if i == k else r.to_8bit(r._gray_channel(im)) for i, im in enumerate(images)]

    def network_input(self, windows: list[np.ndarray]) -> np.ndarray:
        """The stacked, normalised float32 window ``(N, 1, h, w, 3)``, as ``_run_network``."""
        planes = self._planes(windows)
        stacked = np.empty((len(planes), 1, *planes[0].shape[:2], 3), np.float32)
        for i, plane in enumerate(planes):
            unit = self.r._to_unit(plane)
            stacked[i, 0] = unit if unit.ndim == 3 else unit[:, :, None]
        stacked -= self.mean
        stacked /= self.std
        return stacked

    def rows(self, band: np.ndarray) -> np.ndarray:
        """The last step on a band of whole rows (``rows_whole``): RGB to gray."""
        return self.r._rgb_to_gray(band)

    def finish(self, centre: np.ndarray, windows: list[np.ndarray], hw: tuple[int, int]) -> np.ndarray:
        """The recipe's result for one tile from the network's centre ``(h, w, 3)``."""
        r = self.r
        out = centre * self.std  # as _run_network: de-normalise, clip
        out += self.mean
        out = np.clip(out, 0, 1, out=out)
        if self.colour_index is None:
            fused = r._quantise(out, self.kind)
            if (self.task == "multifocus" and self.colour_out) or self.rows_whole:
                return fused
            return r._rgb_to_gray(fused)
        h, w = hw
        rgb = self._image(windows[self.colour_index])[HALO : HALO + h, HALO : HALO + w]
        ycbcr = r.pil_rgb_to_ycbcr(r.to_8bit(rgb))
        y = r._rgb_to_gray(r._quantise(out, "uint8"))
        import cv2  # noqa: PLC0415 - lazy: OpenCV loads slowly; recipes has loaded it by now

        return cv2.cvtColor(np.dstack([y, ycbcr[..., 2], ycbcr[..., 1]]), cv2.COLOR_YCrCb2RGB)
