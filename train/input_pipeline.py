"""Training and validation input: synthetic multi-focus batches from sharp photos.

The batch of step ``s`` is a pure function of ``(config.seed, s)``: example ``g`` of the
run (``g = s * batch_size + j``) takes photo ``permutation_e[g mod n]`` of epoch
``e = g // n`` and the generator ``example_rng(seed, g)`` for its crop, focus map, blur
radii and flip. A resumed run therefore sees exactly the batches an uninterrupted run
would have seen, whatever the number of devices or processes. Grain runs the synthesis
in threads ahead of the train step; its iterator state (the next step) goes into the
checkpoint.

In a run with P processes each process synthesises only its own contiguous slice of
``batch_size / P`` examples of every global batch.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import grain
import ml_collections
import numpy as np

from ifcnn_jax.data import synthesis
from ifcnn_jax.data.photos import (
    FolderCollection,
    PhotoCollection,
    SkimageCollection,
    TfdsCollection,
)
from ifcnn_jax.data.synthesis import example_rng
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import to_8bit
from train.augment import augment_example


class _Subset:
    """Photos ``indices`` of another collection."""

    def __init__(self, collection: PhotoCollection, indices: range):
        self.collection, self.indices = collection, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.collection[self.indices[int(index)]]


def make_collections(data: ml_collections.ConfigDict) -> tuple[PhotoCollection, PhotoCollection]:
    """The training and held-out photo collections named by ``config.data``."""
    if data.source == "tfds":
        train = TfdsCollection(data.tfds_name, data.train_split, data_dir=data.tfds_data_dir or None)
        held_out = TfdsCollection(data.tfds_name, data.eval_split, data_dir=data.tfds_data_dir or None)
        return train, held_out
    if data.source == "folder":
        photos = FolderCollection(data.folder, data.depth_folder or None, cache_size=data.cache_size)
        if data.eval_folder:
            return photos, FolderCollection(data.eval_folder, None, cache_size=data.cache_size)
        if len(photos) <= data.eval_holdout:
            raise IFCNNError(
                f"data.folder {data.folder} has {len(photos)} photos, not more than "
                f"data.eval_holdout={data.eval_holdout}; add photos, lower eval_holdout "
                "or set data.eval_folder"
            )
        split = len(photos) - data.eval_holdout
        return _Subset(photos, range(split)), _Subset(photos, range(split, len(photos)))
    if data.source == "skimage":
        return SkimageCollection(tuple(data.skimage_train)), SkimageCollection(tuple(data.skimage_eval))
    raise IFCNNError(f"config.data.source={data.source!r} is not one of 'tfds', 'folder', 'skimage'")


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_photos: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, num_photos, 0x9E3779B9]).permutation(num_photos)


def photo_index(seed: int, example_index: int, num_photos: int) -> int:
    """Which photo example ``example_index`` of the run uses: every photo once per
    epoch, in an order reshuffled each epoch."""
    epoch, offset = divmod(int(example_index), num_photos)
    return int(_epoch_permutation(int(seed), epoch, num_photos)[offset])


def make_example(
    collection: PhotoCollection,
    data: ml_collections.ConfigDict,
    seed: int,
    example_index: int,
    crop_size: int | None,
    *,
    augment: bool = False,
) -> dict[str, np.ndarray]:
    """Example ``example_index`` of the run drawn with ``seed``: ``sources`` (N, h, w, 3)
    and ``target`` (h, w, 3), uint8 0-255 (sources rounded, as 8-bit photos are). With
    ``augment`` and ``data.colour_augment > 0`` (training only), a random colour
    transform (``train.augment``) is applied with that probability."""
    photo = collection[photo_index(seed, example_index, len(collection))]
    try:
        example = synthesis.synthesize_example(
            photo.image,
            photo.depth,
            rng=example_rng(seed, example_index),
            crop_size=crop_size,
            num_sources=data.num_sources,
            radius_range=(data.blur_radius_min, data.blur_radius_max),
            focus_map=data.focus_map,
            flip=data.flip,
        )
    except IFCNNError as exc:
        raise IFCNNError(f"photo {photo.name}: {exc}") from exc
    sources, target = example.sources, example.target
    if augment and data.get("colour_augment", 0.0) > 0:
        # Its own generator, so runs without augmentation see exactly the old examples.
        rng = np.random.default_rng([int(seed), int(example_index), 0xC0102])
        sources, target = augment_example(sources, target, rng, probability=data.colour_augment)
    return {"sources": to_8bit(sources), "target": to_8bit(target)}


def global_example_index(local_index: int, local_batch: int, process_index: int, process_count: int) -> int:
    """Maps the k-th example this process reads to its index in the run: step
    ``k // local_batch``, slot ``process_index * local_batch + k % local_batch``."""
    step, slot = divmod(int(local_index), local_batch)
    return step * local_batch * process_count + process_index * local_batch + slot


def train_dataset(
    collection: PhotoCollection,
    config: ml_collections.ConfigDict,
    *,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.MapDataset:
    """A Grain ``MapDataset`` whose element ``s`` is this process's slice of the
    global batch of step ``s`` (for ``s < config.num_train_steps``): ``sources``
    (B/P, N, h, w, 3) and ``target`` (B/P, h, w, 3), uint8."""
    local_batch = config.batch_size // process_count
    data, seed, crop = config.data, config.seed, config.data.crop_size
    examples = grain.MapDataset.range(config.num_train_steps * local_batch).map(
        lambda k: make_example(
            collection,
            data,
            seed,
            global_example_index(k, local_batch, process_index, process_count),
            crop,
            augment=True,
        )
    )
    return examples.batch(local_batch)


def train_iterator(
    dataset: grain.MapDataset, config: ml_collections.ConfigDict, state: dict[str, Any] | None = None
) -> grain.DatasetIterator:
    """A prefetching iterator over ``dataset``; ``state`` (from ``get_state()``,
    stored in checkpoints) makes it continue where a previous run stopped."""
    options = grain.ReadOptions(
        num_threads=config.data.num_threads, prefetch_buffer_size=config.data.prefetch
    )
    iterator = iter(dataset.to_iter_dataset(options))
    if state is not None:
        iterator.set_state(state)
    return iterator


def eval_examples(collection: PhotoCollection, config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """The fixed held-out synthetic pairs: ``config.eval_examples`` examples cycling
    through the held-out photos, drawn with ``config.eval_seed`` (crops of
    ``config.eval_crop_size``, or whole photos when it is 0, which needs photos of one
    size). Returns ``sources`` (E, N, h, w, 3) and ``target`` (E, h, w, 3), uint8."""
    crop = config.eval_crop_size or None
    examples = [
        make_example(collection, config.data, config.eval_seed, i, crop) for i in range(config.eval_examples)
    ]
    shapes = {e["target"].shape for e in examples}
    if len(shapes) > 1:
        raise IFCNNError(f"held-out photos have different sizes {sorted(shapes)}; set eval_crop_size > 0")
    return {key: np.stack([e[key] for e in examples]) for key in ("sources", "target")}


def batches(arrays: dict[str, np.ndarray], batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Consecutive slices of ``batch_size`` along the first axis (the last may be shorter)."""
    total = len(next(iter(arrays.values())))
    for start in range(0, total, batch_size):
        yield {key: value[start : start + batch_size] for key, value in arrays.items()}
