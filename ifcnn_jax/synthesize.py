"""Collections of sharp photos, and ``ifcnn-synth``: write a synthetic multi-focus
dataset to disk.

A collection is random access: ``len(c)`` photos, ``c[i]`` a :class:`Photo` (RGB uint8
image, optional depth map where larger = farther, and a name). Three kinds:

* :class:`FolderCollection`: any folder of photos, optionally with depth maps;
* :class:`TfdsCollection`: a TensorFlow Datasets RGB-D set read with
  ``tfds.data_source`` (``nyu_depth_v2``, the paper's data; no TensorFlow needed);
* :class:`SkimageCollection`: photos shipped inside scikit-image (nothing to download).

Training (``train/input_pipeline.py``) reads the same collections.

Command line::

    ifcnn-synth --folder PHOTOS --out DATASET --count 1000
    ifcnn-synth --tfds nyu_depth_v2 --split train --out DATASET --count 5000
    ifcnn-synth --skimage --out DATASET --count 20 --crop-size 256

Each example ``NNNNNN`` becomes ``NNNNNN-A.png``, ``NNNNNN-B.png`` (``-C`` ... for
more focus planes), the ground truth ``NNNNNN-GT.png`` and the focus map
``NNNNNN-MAP.png`` (label k stored as gray level ``k * 255 // (N - 1)``), plus
``manifest.json`` listing every group in the manifest format of
``ifcnn_jax.testsets`` (so ``ifcnn-eval DATASET --model MODEL`` scores a model on it
against the ground truth) and ``synthesis.json`` with the settings and, per example,
the photo, crop box, flip and blur radii. Files are written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from pathlib import Path
from typing import Protocol, Sequence

import cv2
import numpy as np

from ifcnn_jax import synthesis
from ifcnn_jax.errors import IFCNNError, run_command
from ifcnn_jax.image_io import IMAGE_SUFFIXES, read_image, to_8bit, write_bytes_atomic, write_image

DEPTH_SUFFIXES = (".npy",) + IMAGE_SUFFIXES
SOURCE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Photos shipped inside scikit-image (colour, and gray ones used as RGB); no download.
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
    "immunohistochemistry", "retina", "motorcycle_left", "motorcycle_right",
    "camera", "brick", "grass", "gravel", "coins", "moon", "clock",
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

    def __init__(self, folder: str | os.PathLike, depth_folder: str | os.PathLike | None = None, *,
                 cache_size: int = 32):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise IFCNNError(f"{self.folder}: no such folder of photos")
        self.paths = sorted(p for p in self.folder.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
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
                raise IFCNNError(f"{self.depth_paths[index]}: depth map is {depth.shape[0]}x{depth.shape[1]} "
                                 f"but photo {self.paths[index].name} is {image.shape[0]}x{image.shape[1]}")
        return Photo(image, depth, self.paths[index].stem)

    def __getitem__(self, index: int) -> Photo:
        return self._load(int(index))


class TfdsCollection:
    """An RGB-D TensorFlow Datasets split through ``tfds.data_source`` (random access,
    ArrayRecord files, no TensorFlow at read time). Default: NYU Depth V2
    (``image`` 480x640x3 uint8, ``depth`` 480x640 in metres)."""

    def __init__(self, name: str = "nyu_depth_v2", split: str = "train", *,
                 data_dir: str | None = None, image_key: str = "image", depth_key: str | None = "depth"):
        import tensorflow_datasets as tfds  # Lazy: slow to import, only needed here.

        try:
            self.source = tfds.data_source(name, split=split, data_dir=data_dir or None)
        except Exception as exc:  # tfds raises many types for a missing dataset
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise IFCNNError(f"tfds dataset {name!r} split {split!r} is not available "
                             f"(download and prepare it with tfds first): {first}") from exc
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
    import skimage.data

    if name == "motorcycle_left":
        left, _, disparity = skimage.data.stereo_motorcycle()
        # Disparity is inverse depth: nearer objects shift more between the views.
        with np.errstate(divide="ignore"):
            depth = np.where(np.isfinite(disparity) & (disparity > 0), 1.0 / disparity, np.nan)
        return Photo(left, depth.astype(np.float32), name)
    if name == "motorcycle_right":
        _, right, _ = skimage.data.stereo_motorcycle()
        return Photo(right, None, name)
    return Photo(synthesis.to_rgb(getattr(skimage.data, name)()).astype(np.uint8), None, name)


class SkimageCollection:
    """Photos bundled inside scikit-image (no download). ``motorcycle_left`` comes with
    a depth map from its stereo disparity; the others have none."""

    def __init__(self, names: Sequence[str] = SKIMAGE_PHOTOS):
        unknown = [n for n in names if n not in SKIMAGE_PHOTOS]
        if unknown:
            raise IFCNNError(f"unknown scikit-image photo {unknown[0]!r}; choose from {', '.join(SKIMAGE_PHOTOS)}")
        if not names:
            raise IFCNNError("no scikit-image photos selected")
        self.photos = [_skimage_photo(n) for n in names]

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, index: int) -> Photo:
        return self.photos[int(index)]


def example_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of example ``index`` of a dataset drawn with ``seed``:
    each example depends only on (seed, index), so any subset can be regenerated."""
    return np.random.default_rng([int(seed), int(index)])


def to_uint8(image: np.ndarray) -> np.ndarray:
    """0-255 float -> uint8 (rounded, clipped)."""
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def write_dataset(collection: PhotoCollection, out: str | os.PathLike, *, count: int, seed: int = 0,
                  crop_size: int | None = 256, num_sources: int = 2,
                  radius_range: tuple[int, int] = (2, 8), focus_map: str = "auto",
                  flip: bool = True, force: bool = False, progress: bool = True) -> Path:
    """Synthesises ``count`` examples from ``collection`` into ``out`` (see module doc).

    Example i uses photo ``i % len(collection)`` and the generator
    :func:`example_rng` ``(seed, i)``. ``out`` must be new or empty unless ``force``.
    Returns the path of ``manifest.json``.
    """
    from tqdm import tqdm

    if count < 1:
        raise IFCNNError(f"--count must be >= 1, got {count}")
    if num_sources > len(SOURCE_LETTERS):
        raise IFCNNError(f"--num-sources must be <= {len(SOURCE_LETTERS)}, got {num_sources}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise IFCNNError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise IFCNNError(f"{out} is not empty; pass --force to write into it")
    if isinstance(collection, FolderCollection) and out.resolve() == collection.folder.resolve():
        raise IFCNNError(f"{out} is the photo folder itself; choose another output folder")
    out.mkdir(parents=True, exist_ok=True)
    groups, details = [], []
    for index in tqdm(range(count), desc="synthesising", unit="example", disable=not progress):
        photo = collection[index % len(collection)]
        example = synthesis.synthesize_example(
            photo.image, photo.depth, rng=example_rng(seed, index), crop_size=crop_size,
            num_sources=num_sources, radius_range=radius_range, focus_map=focus_map, flip=flip)
        stem = f"{index:06d}"
        names = [f"{stem}-{SOURCE_LETTERS[k]}.png" for k in range(num_sources)]
        for name, source in zip(names, example.sources):
            write_image(out / name, to_uint8(source))
        write_image(out / f"{stem}-GT.png", to_uint8(example.target))
        write_image(out / f"{stem}-MAP.png",
                  (example.labels.astype(np.int32) * 255 // (num_sources - 1)).astype(np.uint8))
        groups.append({"name": stem, "task": "multifocus", "sources": names,
                       "reference": f"{stem}-GT.png"})
        details.append({"name": stem, "photo": photo.name, "focus_map": f"{stem}-MAP.png",
                        "radii": list(example.radii), "box": list(example.box),
                        "flipped": example.flipped})
    settings = {
        "kind": "ifcnn-synthetic-multifocus", "seed": seed, "count": count,
        "num_sources": num_sources, "crop_size": crop_size, "radius_range": list(radius_range),
        "focus_map": focus_map, "flip": flip,
    }
    _write_json(out / "synthesis.json", dict(settings, examples=details))
    manifest_path = out / "manifest.json"
    _write_json(manifest_path, {"groups": groups})
    return manifest_path


def _write_json(path: Path, data: dict) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=1).encode())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ifcnn-synth",
        description="Write a synthetic multi-focus dataset (sources, ground truth, focus maps) "
                    "made from sharp photos, as IFCNN's training data is made.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", help="folder of sharp photos")
    source.add_argument("--tfds", metavar="NAME", help="TensorFlow Datasets RGB-D set, e.g. nyu_depth_v2")
    source.add_argument("--skimage", action="store_true", help="the photos bundled with scikit-image")
    parser.add_argument("--depth-folder", help="with --folder: depth maps NAME.npy or NAME.png (larger = farther)")
    parser.add_argument("--split", default="train", help="with --tfds: the split (default train)")
    parser.add_argument("--data-dir", help="with --tfds: the TFDS data directory")
    parser.add_argument("--out", required=True, help="output folder (new or empty)")
    parser.add_argument("--count", type=int, required=True, help="number of examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop-size", type=int, default=256, help="square crop side; 0 = whole photos")
    parser.add_argument("--num-sources", type=int, default=2, help="focus planes per example (>= 2)")
    parser.add_argument("--radius-min", type=int, default=2, help="smallest blur radius kr (pixels)")
    parser.add_argument("--radius-max", type=int, default=8, help="largest blur radius kr (pixels)")
    parser.add_argument("--focus-map", default="auto", choices=("auto",) + synthesis.FOCUS_MAP_KINDS)
    parser.add_argument("--no-flip", action="store_true", help="no random left-right mirroring")
    parser.add_argument("--force", action="store_true", help="write into a non-empty output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 on bad input)."""
    args = _parser().parse_args(argv)

    def body() -> int:
        if args.crop_size < 0:
            raise IFCNNError(f"--crop-size must be >= 0, got {args.crop_size}")
        if args.num_sources < 2:
            raise IFCNNError(f"--num-sources must be >= 2, got {args.num_sources}")
        if args.folder:
            collection: PhotoCollection = FolderCollection(args.folder, args.depth_folder)
        elif args.tfds:
            collection = TfdsCollection(args.tfds, args.split, data_dir=args.data_dir)
        else:
            collection = SkimageCollection()
        manifest = write_dataset(
            collection, args.out, count=args.count, seed=args.seed, crop_size=args.crop_size or None,
            num_sources=args.num_sources, radius_range=(args.radius_min, args.radius_max),
            focus_map=args.focus_map, flip=not args.no_flip, force=args.force, progress=not args.quiet)
        print(f"wrote {args.count} examples and {manifest}")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
