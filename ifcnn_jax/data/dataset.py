"""Writing a synthetic multi-focus dataset to disk (what ``ifcnn-synth`` does).

Each example ``NNNNNN`` becomes ``NNNNNN-A.png``, ``NNNNNN-B.png`` (``-C`` ... for
more focus planes), the ground truth ``NNNNNN-GT.png`` and the focus map
``NNNNNN-MAP.png`` (label k stored as gray level ``k * 255 // (N - 1)``), plus
``manifest.json`` listing every group in the manifest format of
``ifcnn_jax.io.testsets`` (so ``ifcnn-eval DATASET --model MODEL`` scores a model on it
against the ground truth) and ``synthesis.json`` with the settings and, per example,
the photo, crop box, flip and blur radii. Files are written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ifcnn_jax.data import synthesis
from ifcnn_jax.data.photos import FolderCollection, PhotoCollection
from ifcnn_jax.data.synthesis import example_rng
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.atomic import write_bytes_atomic
from ifcnn_jax.io.images import to_8bit, write_image

SOURCE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def write_dataset(
    collection: PhotoCollection,
    out: str | os.PathLike,
    *,
    count: int,
    seed: int = 0,
    crop_size: int | None = 256,
    num_sources: int = 2,
    radius_range: tuple[int, int] = (2, 8),
    focus_map: str = "auto",
    flip: bool = True,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Synthesises ``count`` examples from ``collection`` into ``out`` (see module doc).

    Example i uses photo ``i % len(collection)`` and the generator
    :func:`example_rng` ``(seed, i)``. ``out`` must be new or empty unless ``force``.
    Returns the path of ``manifest.json``.
    """

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
            photo.image,
            photo.depth,
            rng=example_rng(seed, index),
            crop_size=crop_size,
            num_sources=num_sources,
            radius_range=radius_range,
            focus_map=focus_map,
            flip=flip,
        )
        stem = f"{index:06d}"
        names = [f"{stem}-{SOURCE_LETTERS[k]}.png" for k in range(num_sources)]
        for name, source in zip(names, example.sources):
            write_image(out / name, to_8bit(source))
        write_image(out / f"{stem}-GT.png", to_8bit(example.target))
        write_image(
            out / f"{stem}-MAP.png",
            (example.labels.astype(np.int32) * 255 // (num_sources - 1)).astype(np.uint8),
        )
        groups.append({"name": stem, "task": "multifocus", "sources": names, "reference": f"{stem}-GT.png"})
        details.append(
            {
                "name": stem,
                "photo": photo.name,
                "focus_map": f"{stem}-MAP.png",
                "radii": list(example.radii),
                "box": list(example.box),
                "flipped": example.flipped,
            }
        )
    settings = {
        "kind": "ifcnn-synthetic-multifocus",
        "seed": seed,
        "count": count,
        "num_sources": num_sources,
        "crop_size": crop_size,
        "radius_range": list(radius_range),
        "focus_map": focus_map,
        "flip": flip,
    }
    _write_json(out / "synthesis.json", dict(settings, examples=details))
    manifest_path = out / "manifest.json"
    _write_json(manifest_path, {"groups": groups})
    return manifest_path


def _write_json(path: Path, data: dict) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=1).encode())
