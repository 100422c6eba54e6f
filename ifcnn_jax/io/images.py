"""Reading and writing images: RGB order, alpha dropped, 8/16-bit kept, atomic writes.

Decoding uses OpenCV, which gives the same pixels as PIL (the authors' decoder) for
the JPEG and PNG files of the release; TIFFs with 16 bits per sample are kept as
``uint16``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.atomic import write_bytes_atomic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")
_SIXTEEN_BIT_WRITERS = (".png", ".tif", ".tiff", ".ppm", ".pgm")


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether the file name has one of the image suffixes this package reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What an image file declares, read without decoding its pixels."""

    width: int
    height: int
    channels: int  # as decoded by read_image: 1 (gray) or 3 (RGB); alpha is dropped
    bytes_per_sample: int  # 1 (8-bit), 2 (16-bit) or 4 (float)

    @property
    def decoded_bytes(self) -> int:
        """An upper bound of the bytes that decoding takes (OpenCV may decode an alpha
        channel too: 4 channels)."""
        return self.width * self.height * 4 * self.bytes_per_sample


def read_header(path: str | os.PathLike) -> ImageHeader | None:
    """The size, channels and sample size an image file declares, from its header only
    (Pillow reads it lazily; no pixel is decoded). ``None`` when Pillow cannot parse
    the header (``read_image`` may still decode the file with OpenCV)."""
    from PIL import Image  # noqa: PLC0415 - Imported here: only the pre-flight checks need Pillow

    # Pillow's own bomb guard would hide the size; the callers weigh it against memory.
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            width, height = image.size
            mode, bands = image.mode, len(image.getbands())
    except (OSError, ValueError, SyntaxError):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    sample = 4 if mode in ("F", "I") else 2 if mode.startswith("I;16") else 1
    channels = 1 if bands <= 2 and mode not in ("P", "PA") else 3
    return ImageHeader(int(width), int(height), channels, sample)


def available_memory() -> int:
    """Bytes of memory this process can still allocate without swapping (MemAvailable
    on Linux; elsewhere the free physical pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def gib(num_bytes: float) -> str:
    """``num_bytes`` as GiB with one decimal, for messages."""
    return f"{num_bytes / (1 << 30):.1f} GiB"


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image as ``(H, W)`` gray or ``(H, W, 3)`` RGB, ``uint8`` or ``uint16``.

    An alpha channel is dropped; gray+alpha (and RGBA with equal colour channels)
    becomes gray. Raises ``IFCNNError``
    naming the file when it is missing, unreadable, or not an image.
    """
    path = Path(path)
    if not path.exists():
        raise IFCNNError(f"{path}: no such file")
    if path.is_dir():
        raise IFCNNError(f"{path}: is a directory, not an image")
    header = read_header(path)
    if header is not None and header.decoded_bytes > available_memory():
        # A small compressed file may declare a huge image: refuse before decoding.
        raise IFCNNError(
            f"{path}: declares {header.width}x{header.height} pixels, which take "
            f"{gib(header.decoded_bytes)} to decode; only {gib(available_memory())} "
            "of memory is available"
        )
    try:
        data = np.fromfile(path, dtype=np.uint8)  # works for any file name, unlike cv2.imread
    except OSError as exc:
        raise IFCNNError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as exc:  # e.g. more pixels than OpenCV's CV_IO_MAX_IMAGE_PIXELS
        reason = str(exc).strip().splitlines()[-1].split("error: ")[-1][:120]
        raise IFCNNError(f"{path}: OpenCV cannot decode it ({reason})") from None
    if image is None:
        raise IFCNNError(f"{path}: not an image file OpenCV can decode")
    return _to_rgb(image, path)


def _to_rgb(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype not in (np.uint8, np.uint16):
        if image.dtype == np.float32 or image.dtype == np.float64:
            image = image.astype(np.float32)
            if np.isnan(image).any() or image.min() < 0 or image.max() > 1:
                raise IFCNNError(f"{path}: floating-point image must hold values in [0, 1]")
        else:
            raise IFCNNError(
                f"{path}: unsupported sample type {image.dtype} (8-bit, 16-bit or float images only)"
            )
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 2:  # gray + alpha
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image[:, :, ::-1])
    if image.ndim == 3 and image.shape[2] == 4:
        # OpenCV decodes gray+alpha as BGRA with equal colour channels: give it back as gray.
        if np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 0], image[:, :, 2]):
            return np.ascontiguousarray(image[:, :, 0])
        return np.ascontiguousarray(image[:, :, 2::-1])
    raise IFCNNError(f"{path}: unsupported image layout {image.shape}")


def to_8bit(image: np.ndarray) -> np.ndarray:
    """uint8 as it is, uint16 (0-65535) or float (0-1, clipped) to uint8, rounded."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return np.round(image / 257.0).astype(np.uint8)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def average_8bit(images: np.ndarray, axis: int = 0) -> np.ndarray:
    """The pixel-wise mean of uint8 images along ``axis``, rounded (half to even) to
    uint8: the plain-average baseline. Rounding the exact mean of the 0-255 values
    keeps a two-source average's halves on one side, which 0-1 floats would not."""
    return np.round(np.mean(np.asarray(images, np.float32), axis=axis)).astype(np.uint8)


def refuse_overwriting(
    output: str | os.PathLike, inputs, *, what: str = "source image", advice: str = ""
) -> None:
    """Raises ``IFCNNError`` if ``output`` is (resolves to) one of the ``inputs`` files."""
    target = Path(output).resolve()
    for src in inputs:
        if Path(src).resolve() == target:
            raise IFCNNError(f"refusing to overwrite {what} {output}{advice}")


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Writes ``(H, W)`` gray or ``(H, W, 3)`` RGB (uint8, uint16, or float in [0, 1])
    atomically: to a temporary file in the same folder, then renamed over ``path``.

    The format follows the suffix. Float images are written as 8-bit, rounded. The
    new file gets the usual permissions (0666 less the umask).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise IFCNNError(
            f"{path}: unknown image type {suffix or '(no suffix)'}; use one of " + " ".join(IMAGE_SUFFIXES)
        )
    image = np.asarray(image)
    if image.dtype.kind == "f":
        image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    if image.dtype == np.uint16 and suffix not in _SIXTEEN_BIT_WRITERS:
        raise IFCNNError(f"{path}: {suffix} cannot hold 16-bit samples; write .png or .tif")
    if image.ndim == 3:
        image = np.ascontiguousarray(image[:, :, ::-1])
    ok, encoded = cv2.imencode(suffix, image)
    if not ok:
        raise IFCNNError(f"{path}: OpenCV could not encode the image as {suffix}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise IFCNNError(f"{path}: output folder {folder} does not exist")
    return write_bytes_atomic(path, encoded.tobytes())
