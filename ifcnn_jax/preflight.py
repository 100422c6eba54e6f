"""Checks made before any fusion work: the sources' headers agree in size, and the
memory a fusion needs fits in the memory available.

They read image headers only (``image_io.read_header``), so a 30000x30000 PNG of a
few megabytes is refused in milliseconds with the memory it would need, instead of
failing with ``MemoryError`` after minutes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

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


def fusion_bytes(height: int, width: int, num_sources: int) -> int:
    """Estimated peak memory of fusing ``num_sources`` images of ``height x width``."""
    per_pixel = BYTES_PER_PIXEL_PER_SOURCE * num_sources + BYTES_PER_PIXEL_FIXED
    return height * width * per_pixel + BYTES_OVERHEAD


def check_sources(paths: Sequence[str | os.PathLike]) -> list[ImageHeader | None]:
    """Reads every source's header and raises ``IFCNNError`` (naming the file) when the
    sizes differ or the fusion would need more memory than is available. Sources whose
    header Pillow cannot parse are checked later, when they are decoded."""
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
    needed, available = fusion_bytes(first.height, first.width, len(paths)), available_memory()
    if needed > available:
        raise IFCNNError(
            f"{first_path}: fusing {len(paths)} sources of {first.width}x{first.height} "
            f"pixels needs about {gib(needed)} of memory; only {gib(available)} is "
            "available"
        )
    return headers
