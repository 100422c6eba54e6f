"""Collections of sharp photos, the raw material of synthetic multi-focus data.

A collection is random access: ``len(c)`` photos, ``c[i]`` a :class:`Photo` (RGB uint8
image, optional depth map where larger = farther, and a name). Three kinds:

* :class:`FolderCollection`: any folder of photos, optionally with depth maps;
* :class:`TfdsCollection`: a TensorFlow Datasets RGB-D set read with
  ``tfds.data_source`` (``nyu_depth_v2``, the paper's data; no TensorFlow needed);
* :class:`SkimageCollection`: photos shipped inside scikit-image (nothing to download).

Training (``train/input_pipeline.py``) and the dataset writer
(``ifcnn_jax.data.dataset``) read the same collections.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ifcnn_jax.data import synthesis
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import IMAGE_SUFFIXES, read_image, to_8bit

DEPTH_SUFFIXES = (".npy",) + IMAGE_SUFFIXES

# Photos shipped inside scikit-image (colour, and gray ones used as RGB); no download.
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle_left",
    "motorcycle_right",
    "camera",
    "brick",
    "grass",
    "gravel",
    "coins",
    "moon",
    "clock",
)


@dataclasses.dataclass(frozen=True)
class Photo:
    """A sharp photo: ``image`` HxWx3 RGB uint8, ``depth`` HxW float32 (larger =
    farther; NaN where unknown) or None, and a ``name`` for manifests and messages."""

    image: np.ndarray
    depth: np.ndarray | None
    name: str


class PhotoCollection(Protocol):
    """Random-access photos: ``len(c)`` and ``c[i] -> Photo``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Photo: ...


def require_train_extra(module: str):
    """Imports ``module``, one of the [train] extra's (TFDS, scikit-image), or says how to
    install it (they are slow to import, and only these collections need them)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise IFCNNError(f"{module.split('.')[0]} is missing: pip install 'ifcnn-jax[train]'") from exc


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as HxWx3 RGB uint8 (gray copied to 3 channels, alpha
    dropped, 16-bit scaled to 8-bit). Raises ``IFCNNError`` naming the file."""
    return synthesis.to_rgb(to_8bit(read_image(path)))


def read_depth(path: str | os.PathLike) -> np.ndarray:
    """Reads a depth map, HxW float32, larger = farther: a ``.npy`` array or a
    single-channel image (any bit depth). Zero, negative or non-finite values mean
    'unknown'. Raises ``IFCNNError`` naming the file."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            depth = np.load(path, allow_pickle=False)
        else:
            depth = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)
    except (OSError, ValueError) as exc:
        raise IFCNNError(f"{path}: cannot read depth map ({exc})") from exc
    if depth is None or np.ndim(depth) != 2:
        raise IFCNNError(f"{path}: depth map must be a single-channel HxW array")
    depth = np.asarray(depth, np.float32)
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)


class FolderCollection:
    """The photos in a folder (sorted by file name; subfolders ignored).

    With ``depth_folder``, a photo ``NAME.ext`` takes its depth from ``NAME.npy`` or
    ``NAME.<image ext>`` there; photos without one get no depth. Decoded photos are
    kept in a small cache because training reads each many times.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        depth_folder: str | os.PathLike | None = None,
        *,
        cache_size: int = 32,
    ):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise IFCNNError(f"{self.folder}: no such folder of photos")
        self.paths = sorted(
            p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.paths:
            raise IFCNNError(f"{self.folder}: no photos ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        self.depth_paths: list[Path | None] = [None] * len(self.paths)
        if depth_folder:
            depth_dir = Path(depth_folder)
            if not depth_dir.is_dir():
                raise IFCNNError(f"{depth_dir}: no such folder of depth maps")
            by_stem = {}
            for p in sorted(depth_dir.iterdir()):
                if p.is_file() and p.suffix.lower() in DEPTH_SUFFIXES:
                    by_stem.setdefault(p.stem, p)
            self.depth_paths = [by_stem.get(p.stem) for p in self.paths]
        self._load = functools.lru_cache(maxsize=max(cache_size, 0))(self._read)

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, index: int) -> Photo:
        image = read_rgb(self.paths[index])
        depth = None
        if self.depth_paths[index] is not None:
            depth = read_depth(self.depth_paths[index])
            if depth.shape != image.shape[:2]:
                raise IFCNNError(
                    f"{self.depth_paths[index]}: depth map is {depth.shape[0]}x{depth.shape[1]} "
                    f"but photo {self.paths[index].name} is {image.shape[0]}x{image.shape[1]}"
                )
        return Photo(image, depth, self.paths[index].stem)

    def __getitem__(self, index: int) -> Photo:
        return self._load(int(index))


class TfdsCollection:
    """An RGB-D TensorFlow Datasets split through ``tfds.data_source`` (random access,
    ArrayRecord files, no TensorFlow at read time). Default: NYU Depth V2
    (``image`` 480x640x3 uint8, ``depth`` 480x640 in metres)."""

    def __init__(
        self,
        name: str = "nyu_depth_v2",
        split: str = "train",
        *,
        data_dir: str | None = None,
        image_key: str = "image",
        depth_key: str | None = "depth",
    ):
        tfds = require_train_extra("tensorflow_datasets")

        try:
            self.source = tfds.data_source(name, split=split, data_dir=data_dir or None)
        except Exception as exc:  # tfds raises many types for a missing dataset
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise IFCNNError(
                f"tfds dataset {name!r} split {split!r} is not available "
                f"(download and prepare it with tfds first): {first}"
            ) from exc
        self.name, self.split = name, split
        self.image_key, self.depth_key = image_key, depth_key
        if len(self.source) == 0:
            raise IFCNNError(f"tfds dataset {name!r} split {split!r} is empty")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Photo:
        record = self.source[int(index)]
        image = synthesis.to_rgb(np.asarray(record[self.image_key]))
        depth = None
        if self.depth_key:
            depth = np.asarray(record[self.depth_key], np.float32)
            depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
        return Photo(image.astype(np.uint8), depth, f"{self.name}/{self.split}/{index}")


def _skimage_photo(name: str) -> Photo:
    skimage_data = require_train_extra("skimage.data")

    if name == "motorcycle_left":
        left, _, disparity = skimage_data.stereo_motorcycle()
        # Disparity is inverse depth: nearer objects shift more between the views.
        with np.errstate(divide="ignore"):
            depth = np.where(np.isfinite(disparity) & (disparity > 0), 1.0 / disparity, np.nan)
        return Photo(left, depth.astype(np.float32), name)
    if name == "motorcycle_right":
        _, right, _ = skimage_data.stereo_motorcycle()
        return Photo(right, None, name)
    return Photo(synthesis.to_rgb(getattr(skimage_data, name)()).astype(np.uint8), None, name)


class SkimageCollection:
    """Photos bundled inside scikit-image (no download). ``motorcycle_left`` comes with
    a depth map from its stereo disparity; the others have none."""

    def __init__(self, names: Sequence[str] = SKIMAGE_PHOTOS):
        unknown = [n for n in names if n not in SKIMAGE_PHOTOS]
        if unknown:
            raise IFCNNError(
                f"unknown scikit-image photo {unknown[0]!r}; choose from {', '.join(SKIMAGE_PHOTOS)}"
            )
        if not names:
            raise IFCNNError("no scikit-image photos selected")
        self.photos = [_skimage_photo(n) for n in names]

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, index: int) -> Photo:
        return self.photos[int(index)]
