"""Checks made before any fusion work: the sources' headers agree in size, and the
memory a fusion needs fits in the memory available.

They read image headers only (``image_io.read_header``), so a 30000x30000 PNG of a
few megabytes is refused in milliseconds with the memory it would need, instead of
failing with ``MemoryError`` after minutes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import ImageHeader, available_memory, gib, read_header

# Peak bytes per pixel of a whole-image fusion through ifcnn-fuse, per source and
# fixed: decoded 8-bit, the float32 unit image and the stacked network input per
# source; the float32 output, its 8-bit copy and the post-processing besides. The
# measured peak for two RGB sources is 56-65 B/px (bench/large_pair.py).
BYTES_PER_PIXEL_PER_SOURCE = 28
BYTES_PER_PIXEL_FIXED = 10
# The runtime, the model and one tile's activations (tiles are at most 2048 px wide).
BYTES_OVERHEAD = 512 << 20
# Receptive-field halo of the network (``tiling.HALO``, not imported: that loads JAX)
# and the windows a streamed fusion holds at once.
HALO = 5
_WINDOWS_IN_FLIGHT = 2


def fusion_bytes(height: int, width: int, num_sources: int) -> int:
    """Estimated peak memory of fusing ``num_sources`` images of ``height x width``."""
    per_pixel = BYTES_PER_PIXEL_PER_SOURCE * num_sources + BYTES_PER_PIXEL_FIXED
    return height * width * per_pixel + BYTES_OVERHEAD


def streamed_fusion_bytes(
    height: int,
    width: int,
    num_sources: int,
    tile: int,
    *,
    channels: int = 3,
    bytes_per_sample: int = 4,
    in_memory_output: bool = False,
) -> int:
    """Estimated peak memory of a streamed fusion (``ifcnn_jax.streaming``) of
    ``num_sources`` images of ``height x width`` pixels with ``channels`` samples of
    ``bytes_per_sample`` bytes (the defaults are the largest), in tiles of ``tile``
    pixels.

    It is bounded by the tile, not the image: per source a band of ``tile + 10`` rows
    as stored (twice: a strip file's decoded strips and the window cut from them), the
    float32 windows in flight (the stacked input, its device copy and the network's
    buffers), an output band (at most 3 float32 samples), and the runtime. The image
    itself counts only with ``in_memory_output`` (a non-TIFF output assembled whole,
    3 copies: the result, the encoder's colour-order copy and the encoded file).
    """
    tile_h, tile_w = min(tile, height), min(tile, width)
    window = (tile_h + 2 * HALO) * (tile_w + 2 * HALO)
    bands = num_sources * 2 * (tile_h + 2 * HALO) * width * channels * bytes_per_sample
    windows = _WINDOWS_IN_FLIGHT * (num_sources + 3) * window * 3 * 4
    output = tile_h * width * 3 * 4
    whole = 3 * height * width * 3 * bytes_per_sample if in_memory_output else 0
    return bands + windows + output + whole + BYTES_OVERHEAD


def check_disk_space(path: str | os.PathLike, num_bytes: int) -> None:
    """Raises ``IFCNNError`` naming ``path`` when its folder's file system has less than
    ``num_bytes`` free (checked before a long fusion writes a large file)."""
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the write itself reports an unusable folder
    if free < num_bytes:
        raise IFCNNError(f"{path}: the result takes {gib(num_bytes)}; only {gib(free)} is free on its disk")


def check_sources(
    paths: Sequence[str | os.PathLike], *, streamed_tile: int | None = None, in_memory_output: bool = False
) -> list[ImageHeader | None]:
    """Reads every source's header and raises ``IFCNNError`` (naming the file) when the
    sizes differ or the fusion would need more memory than is available. Sources whose
    header Pillow cannot parse are checked later, when they are decoded.

    With ``streamed_tile`` the memory needed is that of a streamed fusion in tiles of
    that many pixels (:func:`streamed_fusion_bytes`), which does not grow with the
    image's height."""
    headers = [read_header(p) for p in paths]
    known = [(p, h) for p, h in zip(paths, headers) if h is not None]
    if not known:
        return headers
    first_path, first = known[0]
    for path, header in known[1:]:
        if (header.width, header.height) != (first.width, first.height):
            # The same words as the recipes' check on decoded images.
            raise IFCNNError(
                f"sources differ in size: {first_path} is {first.width}x{first.height}, "
                f"{path} is {header.width}x{header.height} (width x height)"
            )
    if streamed_tile is not None:
        needed = streamed_fusion_bytes(
            first.height,
            first.width,
            len(paths),
            streamed_tile,
            channels=max(h.channels for _, h in known),
            bytes_per_sample=max(h.bytes_per_sample for _, h in known),
            in_memory_output=in_memory_output,
        )
    else:
        needed = fusion_bytes(first.height, first.width, len(paths))
    available = available_memory()
    if needed > available:
        raise IFCNNError(
            f"{first_path}: fusing {len(paths)} sources of {first.width}x{first.height} "
            f"pixels needs about {gib(needed)} of memory; only {gib(available)} is "
            "available"
        )
    return headers
