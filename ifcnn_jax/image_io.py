"""Reading and writing images: RGB order, alpha dropped, 8/16-bit kept, atomic writes.

Decoding uses OpenCV, which gives the same pixels as PIL (the authors' decoder) for
the JPEG and PNG files of the release; TIFFs with 16 bits per sample are kept as
``uint16``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ifcnn_jax.errors import IFCNNError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")
_SIXTEEN_BIT_WRITERS = (".png", ".tif", ".tiff", ".ppm", ".pgm")


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether the file name has one of the image suffixes this package reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


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
    try:
        data = np.fromfile(path, dtype=np.uint8)  # works for any file name, unlike cv2.imread
    except OSError as exc:
        raise IFCNNError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
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
            raise IFCNNError(f"{path}: unsupported sample type {image.dtype} (8-bit, 16-bit "
                             "or float images only)")
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


def refuse_overwriting(output: str | os.PathLike, inputs, *, what: str = "source image",
                       advice: str = "") -> None:
    """Raises ``IFCNNError`` if ``output`` is (resolves to) one of the ``inputs`` files."""
    target = Path(output).resolve()
    for src in inputs:
        if Path(src).resolve() == target:
            raise IFCNNError(f"refusing to overwrite {what} {src}{advice}")


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Writes ``(H, W)`` gray or ``(H, W, 3)`` RGB (uint8, uint16, or float in [0, 1])
    atomically: to a temporary file in the same folder, then renamed over ``path``.

    The format follows the suffix. Float images are written as 8-bit, rounded. The
    new file gets the usual permissions (0666 less the umask).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise IFCNNError(f"{path}: unknown image type {suffix or '(no suffix)'}; use one of "
                         + " ".join(IMAGE_SUFFIXES))
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


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to a temporary file beside ``path`` and renames it over ``path``:
    readers see the old file or the new one, never a part. Creates missing parent
    folders; the file gets the usual permissions (0666 less the umask)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
