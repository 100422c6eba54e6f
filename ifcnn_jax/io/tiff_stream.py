"""Reading and writing TIFF images region by region, so that memory stays bounded
whatever the image size.

* :class:`TiffRegions` reads rectangles of a TIFF's first image. Uncompressed,
  contiguously stored images are memory-mapped one rectangle's rows at a time (the
  mapping is dropped after each read, so the resident memory does not grow with the
  file). Strip and tiled images are read segment by segment: only the strips or tiles
  a rectangle touches are read and decoded, and a few are kept for the next rectangle.
* :func:`write_tiff` writes an image from an iterator of non-overlapping pieces in
  row-major order, as tiles (tile sides that are multiples of 16) or as strips of one
  band of pieces each, uncompressed, atomically (a temporary file beside the output,
  renamed into place).

What streams (``stream_support``): 8-bit, 16-bit and float32 gray (MinIsBlack, one
sample) or RGB (three samples) TIFFs, stored in strips or tiles, contiguous or
separate planes, uncompressed or with a lossless compression ``tifffile`` decodes
(Deflate, LZMA and PackBits always; LZW and Zstandard only with the ``imagecodecs``
package installed). Everything else (other formats, JPEG-compressed TIFFs, palettes,
alpha, orientations other than top-left, ...) is read whole by
``ifcnn_jax.io.images.read_image``. Samples come back as decoded, in the file's
order (RGB), native byte order; values are not scaled (0-255, 0-65535 or 0-1).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.atomic import atomic_path

TIFF_SUFFIXES = (".tif", ".tiff")
STREAM_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
# Lossless compressions whose decoding equals OpenCV's (libtiff's), when tifffile can
# decode them here: none, LZW, Deflate (two codes), PackBits, LZMA, Zstandard.
_LOSSLESS = {1, 5, 8, 32946, 32773, 34925, 50000}
_MINISBLACK, _RGB = 1, 2


class NotStreamable(Exception):
    """The file cannot be read region by region; ``str(exc)`` says why. Such a file is
    read whole instead (it is not a user error)."""


def is_tiff_path(path: str | os.PathLike) -> bool:
    """Whether the file name ends in ``.tif`` or ``.tiff`` (any case)."""
    return Path(path).suffix.lower() in TIFF_SUFFIXES


class TiffRegions:
    """Rectangles of the first image of a TIFF file, read without decoding the rest.

    ``shape`` is ``(height, width, channels)`` with 1 (gray) or 3 (RGB) channels and
    ``dtype`` uint8, uint16 or float32. Raises :class:`NotStreamable` when the file's
    layout is one this reader does not handle, and ``IFCNNError`` naming the file when
    its data are damaged (found at opening or while reading). Use as a context manager
    or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike):
        import tifffile  # noqa: PLC0415 - lazy: only streamed fusion reads TIFFs by region

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as exc:  # any parse failure: not a TIFF tifffile reads
            raise NotStreamable(f"tifffile cannot parse it ({exc})") from None
        try:
            self._setup(self._tif)
        except BaseException:
            self._tif.close()
            raise

    # ------------------------------------------------------------ layout

    def _setup(self, tif) -> None:
        if not tif.pages:
            raise NotStreamable("no image in the file")
        page = tif.pages.first
        self._page = page
        height, width = int(page.imagelength), int(page.imagewidth)
        spp = int(page.samplesperpixel)
        dtype = np.dtype(page.dtype) if page.dtype is not None else None
        why = None
        if getattr(page, "imagedepth", 1) != 1:
            why = "a volume (ImageDepth > 1)"
        elif height < 1 or width < 1:
            why = "an empty image"
        elif not (page.photometric == _MINISBLACK and spp == 1) and not (
            page.photometric == _RGB and spp == 3
        ):
            why = (
                f"photometric {page.photometric!r} with {spp} samples (only gray or RGB without alpha stream)"
            )
        elif dtype not in STREAM_DTYPES:
            why = f"sample type {dtype} (only 8-bit, 16-bit and float32 stream)"
        elif page.tags.valueof(274, 1) != 1:
            why = "an orientation other than top-left"
        elif page.fillorder != 1:
            why = "bit fill order 2"
        elif int(page.compression) not in _LOSSLESS:
            why = f"compression {page.compression!r}"
        if why is not None:
            raise NotStreamable(why)
        self.shape = (height, width, spp)
        self.dtype = dtype
        self._file_dtype = dtype.newbyteorder(tif.byteorder)
        self._separate = spp > 1 and int(page.planarconfig) == 2
        self._contig_samples = 1 if self._separate else spp
        self._cache: dict[int, tuple[int, int, int, int, int, np.ndarray]] = {}
        self._offset = None
        size = os.path.getsize(self.path)
        if page.is_contiguous and not self._separate and int(page.predictor) == 1:
            offset, nbytes = int(page.dataoffsets[0]), height * width * spp * dtype.itemsize
            if offset + nbytes > size:
                raise IFCNNError(
                    f"{self.path}: truncated TIFF ({size} bytes; the image needs {offset + nbytes})"
                )
            self._offset = offset
            self.layout = "contiguous"
            return
        if page.is_tiled:
            self.layout = "tiles"
            self._seg_h, self._seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            self.layout = "strips"
            self._seg_h, self._seg_w = max(1, min(int(page.rowsperstrip), height)), width
        self._down, self._across = math.ceil(height / self._seg_h), math.ceil(width / self._seg_w)
        planes = spp if self._separate else 1
        if len(page.dataoffsets) < planes * self._down * self._across:
            raise IFCNNError(f"{self.path}: damaged TIFF (fewer strips or tiles than the image needs)")
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            if count and offset + count > size:
                raise IFCNNError(
                    f"{self.path}: truncated TIFF (a strip or tile lies past the end of the file)"
                )
        try:
            self._segment(0)  # can this tifffile decode it (LZW etc. need imagecodecs)?
        except NotStreamable:
            raise
        except IFCNNError as exc:
            if "imagecodecs" in str(exc):
                raise NotStreamable(
                    f"compression {page.compression!r} needs the imagecodecs package"
                ) from None
            raise
        self._cache.clear()

    # ------------------------------------------------------------ reading

    def read(self, row_lo: int, row_hi: int, col_lo: int, col_hi: int) -> np.ndarray:
        """The rectangle ``[row_lo, row_hi) x [col_lo, col_hi)`` (inside the image) as
        ``(rows, cols, channels)`` in ``dtype``, native byte order."""
        height, width, spp = self.shape
        if not (0 <= row_lo < row_hi <= height and 0 <= col_lo < col_hi <= width):
            raise ValueError(
                f"region {row_lo}:{row_hi}, {col_lo}:{col_hi} outside the {height}x{width} image"
            )
        if self._offset is not None:
            return self._read_mapped(row_lo, row_hi, col_lo, col_hi)
        out = np.empty((row_hi - row_lo, col_hi - col_lo, spp), self.dtype)
        planes = range(spp) if self._separate else range(1)
        per_plane = self._down * self._across
        wanted = set()
        for plane in planes:
            for r in range(row_lo // self._seg_h, (row_hi - 1) // self._seg_h + 1):
                for c in range(col_lo // self._seg_w, (col_hi - 1) // self._seg_w + 1):
                    index = plane * per_plane + r * self._across + c
                    wanted.add(index)
                    top, left, seg = self._cached_segment(index, plane, r, c)
                    r0, r1 = max(row_lo, top), min(row_hi, top + seg.shape[0])
                    c0, c1 = max(col_lo, left), min(col_hi, left + seg.shape[1])
                    channels = slice(plane, plane + 1) if self._separate else slice(None)
                    out[r0 - row_lo : r1 - row_lo, c0 - col_lo : c1 - col_lo, channels] = seg[
                        r0 - top : r1 - top, c0 - left : c1 - left
                    ]
        # Later reads start at this row or below, and (in a band) at this column or to
        # the right: keep only what they can use.
        for index, (_, _, bottom, right, _, _) in list(self._cache.items()):
            if bottom <= row_lo or (self.layout == "tiles" and right <= col_lo and index not in wanted):
                del self._cache[index]
        return out

    def _read_mapped(self, row_lo: int, row_hi: int, col_lo: int, col_hi: int) -> np.ndarray:
        _, width, spp = self.shape
        row_bytes = width * spp * self.dtype.itemsize
        try:
            mapped = np.memmap(
                self.path,
                dtype=self._file_dtype,
                mode="r",
                offset=self._offset + row_lo * row_bytes,
                shape=(row_hi - row_lo, width, spp),
            )
        except (OSError, ValueError) as exc:
            raise IFCNNError(f"{self.path}: cannot read ({exc})") from None
        try:
            return np.array(mapped[:, col_lo:col_hi], dtype=self.dtype)
        finally:
            del mapped  # the only reference: unmapped now, so the pages read stop counting as ours

    def _cached_segment(self, index: int, plane: int, r: int, c: int) -> tuple[int, int, np.ndarray]:
        top, left = r * self._seg_h, c * self._seg_w
        hit = self._cache.get(index)
        if hit is None:
            seg = self._segment(index)
            height, width, _ = self.shape
            seg = seg[: height - top, : width - left]  # tiles are padded at the image edge
            hit = (top, left, top + seg.shape[0], left + seg.shape[1], plane, seg)
            self._cache[index] = hit
        return top, left, hit[5]

    def _segment(self, index: int) -> np.ndarray:
        """Strip or tile ``index`` decoded, ``(rows, cols, contiguous samples)``."""
        page = self._page
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        shape = (self._seg_h, self._seg_w, self._contig_samples)
        if count == 0:  # a missing segment reads as zeros, as in libtiff
            return np.zeros(shape, self.dtype)
        fh = self._tif.filehandle
        try:
            with fh.lock:
                fh.seek(offset)
                data = fh.read(count)
            if len(data) != count:
                raise IFCNNError(f"{self.path}: truncated TIFF (a strip or tile is cut short)")
            seg, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        except IFCNNError:
            raise
        except Exception as exc:  # zlib, lzma, ValueError...: damaged data
            raise IFCNNError(f"{self.path}: cannot decode strip/tile {index} ({exc})") from None
        if seg is None:
            return np.zeros(shape, self.dtype)
        seg = np.asarray(seg)
        seg = seg.reshape(seg.shape[-3], seg.shape[-2], seg.shape[-1])
        return seg.astype(self.dtype, copy=False)

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Closes the file."""
        self._cache.clear()
        self._tif.close()

    def __enter__(self) -> TiffRegions:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stream_support(path: str | os.PathLike) -> str | None:
    """None when ``path`` is a TIFF that :class:`TiffRegions` can read region by region;
    otherwise the reason it cannot (for messages). Reads the header and at most one
    strip or tile. A damaged file gives its reason too: the whole-image reader then
    reports it as the user error."""
    if not is_tiff_path(path):
        return f"{Path(path).suffix or 'no suffix'}: only TIFF files are read region by region"
    try:
        with TiffRegions(path):
            return None
    except (NotStreamable, IFCNNError) as exc:
        return str(exc)


# ---------------------------------------------------------------- writing


def write_tiff(
    path: str | os.PathLike,
    pieces: Iterator[tuple[tuple[int, int], np.ndarray]],
    shape: tuple[int, ...],
    dtype: np.dtype,
    grid: tuple[int, int],
    *,
    tile: int | None = None,
) -> Path:
    """Writes an uncompressed TIFF of ``shape`` ``(H, W)`` gray or ``(H, W, 3)`` RGB
    from ``pieces``: ``((top, left), array)`` in row-major order, the cells of a grid
    of ``grid`` (rows, cols) pixels (the last row and column of cells may be smaller)
    that together cover the image once.

    With ``tile`` (a multiple of 16, at least each grid step) the file is tiled, one
    tile per piece, and only one piece is held at a time; otherwise each band of
    pieces becomes one strip (``grid[0]`` rows per strip). The file is written to a
    temporary file beside ``path`` and renamed into place at the end; on any error
    (the pieces' producer failing included) the temporary file is removed and
    ``path`` is untouched. Raises ``IFCNNError`` naming ``path`` when it cannot be
    written.
    """
    import tifffile  # noqa: PLC0415 - lazy: only streamed fusion writes TIFFs by piece

    path = Path(path)
    dtype = np.dtype(dtype)
    height, width = shape[:2]
    nbytes = math.prod(shape) * dtype.itemsize
    photometric = "rgb" if len(shape) == 3 else "minisblack"
    options = {"shape": tuple(shape), "dtype": dtype, "photometric": photometric, "compression": None}
    if tile is not None:
        if tile % 16 or tile < max(grid):
            raise ValueError(f"a TIFF tile side must be a multiple of 16 and cover a grid cell, got {tile}")
        data = (_padded(piece, tile) for _, piece in pieces)
        options["tile"] = (tile, tile)
    else:
        data = _strips(pieces, width, grid[0])
        options["rowsperstrip"] = min(grid[0], height)
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=nbytes > 2**32 - 2**25) as writer:
            writer.write(data, **options)
    return path


def _padded(piece: np.ndarray, tile: int) -> np.ndarray:
    if piece.shape[:2] == (tile, tile):
        return np.ascontiguousarray(piece)
    out = np.zeros((tile, tile, *piece.shape[2:]), piece.dtype)
    out[: piece.shape[0], : piece.shape[1]] = piece
    return out


def _strips(pieces, width: int, rows: int) -> Iterator[bytes]:
    band = None
    band_top = None
    for (top, left), piece in pieces:
        if band is None or top != band_top:
            if band is not None:
                yield band.tobytes()
            band = np.empty((piece.shape[0], width, *piece.shape[2:]), piece.dtype)
            band_top = top
        band[:, left : left + piece.shape[1]] = piece
    if band is not None:
        yield band.tobytes()
