"""The training input: deterministic in (seed, step), sliced per process, resumable."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ifcnn_jax.errors import IFCNNError
from tests.helpers import write_random_photos
from train import input_pipeline
from train.configs import default


def photo_folder(path, count=5, size=(24, 30)):
    return list(write_random_photos(path, count, size, prefix="p").values())


def folder_config(folder, **overrides):
    config = default.get_config()
    config.data.source = "folder"
    config.data.folder = str(folder)
    config.data.eval_holdout = 1
    config.data.crop_size = 12
    config.data.blur_radius_min, config.data.blur_radius_max = 1, 3
    config.batch_size = 4
    config.num_train_steps = 10
    config.eval_examples = 3
    config.eval_crop_size = 16
    for key, value in overrides.items():
        config[key] = value
    return config


def test_batch_is_a_function_of_seed_and_step(tmp_path):
    photo_folder(tmp_path / "photos")
    config = folder_config(tmp_path / "photos")
    train, _ = input_pipeline.make_collections(config.data)
    one = input_pipeline.train_dataset(train, config)
    two = input_pipeline.train_dataset(input_pipeline.make_collections(config.data)[0], config)
    assert len(one) == config.num_train_steps
    first = one[3]
    assert first["sources"].shape == (4, 2, 12, 12, 3) and first["sources"].dtype == np.uint8
    assert first["target"].shape == (4, 12, 12, 3) and first["target"].dtype == np.uint8
    for key in ("sources", "target"):
        np.testing.assert_array_equal(first[key], two[3][key])
        assert not np.array_equal(first[key], one[4][key])
    other_seed = input_pipeline.train_dataset(train, folder_config(tmp_path / "photos", seed=1))
    assert not np.array_equal(first["target"], other_seed[3]["target"])


def test_process_slices_make_up_the_global_batch(tmp_path):
    photo_folder(tmp_path / "photos")
    config = folder_config(tmp_path / "photos", batch_size=8)
    train, _ = input_pipeline.make_collections(config.data)
    whole = input_pipeline.train_dataset(train, config)
    slices = [input_pipeline.train_dataset(train, config, process_index=p, process_count=2) for p in (0, 1)]
    for step in (0, 7):
        assert slices[0][step]["target"].shape[0] == 4
        for key in ("sources", "target"):
            np.testing.assert_array_equal(np.concatenate([s[step][key] for s in slices]), whole[step][key])


def test_iterator_state_resumes_exactly(tmp_path):
    photo_folder(tmp_path / "photos")
    config = folder_config(tmp_path / "photos")
    config.data.num_threads = 2
    dataset = input_pipeline.train_dataset(input_pipeline.make_collections(config.data)[0], config)
    iterator = input_pipeline.train_iterator(dataset, config)
    for _ in range(3):
        next(iterator)
    state = iterator.get_state()
    assert state == {"next_index": 3}
    resumed = input_pipeline.train_iterator(dataset, config, state)
    for step in (3, 4):
        expected, again, direct = next(iterator), next(resumed), dataset[step]
        np.testing.assert_array_equal(again["sources"], expected["sources"])
        np.testing.assert_array_equal(again["sources"], direct["sources"])


def test_every_photo_once_per_epoch():
    for seed in (0, 5):
        orders = [
            [input_pipeline.photo_index(seed, epoch * 7 + i, 7) for i in range(7)] for epoch in range(3)
        ]
        for order in orders:
            assert sorted(order) == list(range(7))
        assert orders[0] != orders[1] or orders[1] != orders[2]


def test_targets_are_crops_of_training_photos(tmp_path):
    photos = photo_folder(tmp_path / "photos", count=3, size=(16, 20))
    config = folder_config(tmp_path / "photos")
    train, held_out = input_pipeline.make_collections(config.data)
    assert len(train) == 2 and len(held_out) == 1
    batch = input_pipeline.train_dataset(train, config)[0]

    def found(crop, images):
        for image in images:
            for candidate in (image, image[:, ::-1]):
                for top in range(candidate.shape[0] - 11):
                    for left in range(candidate.shape[1] - 11):
                        if np.array_equal(candidate[top : top + 12, left : left + 12], crop):
                            return True
        return False

    for target in batch["target"]:
        assert found(target, photos[:2])  # a training photo, never the held-out one
        assert not found(target, photos[2:])


def test_eval_examples_are_fixed_and_checked(tmp_path):
    photo_folder(tmp_path / "photos", count=4)
    config = folder_config(tmp_path / "photos", eval_examples=5)
    _, held_out = input_pipeline.make_collections(config.data)
    first = input_pipeline.eval_examples(held_out, config)
    again = input_pipeline.eval_examples(held_out, config)
    assert first["sources"].shape == (5, 2, 16, 16, 3)
    np.testing.assert_array_equal(first["sources"], again["sources"])
    chunks = list(input_pipeline.batches(first, 2))
    assert [len(c["target"]) for c in chunks] == [2, 2, 1]

    photo_folder(tmp_path / "mixed", count=2, size=(20, 24))
    cv2.imwrite(str(tmp_path / "mixed" / "zz.png"), np.zeros((30, 30, 3), np.uint8))
    mixed = folder_config(tmp_path / "mixed", eval_crop_size=0)
    mixed.data.eval_holdout = 2
    with pytest.raises(IFCNNError, match="different sizes"):
        input_pipeline.eval_examples(input_pipeline.make_collections(mixed.data)[1], mixed)


def test_collection_errors(tmp_path):
    photo_folder(tmp_path / "few", count=2)
    config = folder_config(tmp_path / "few")
    config.data.eval_holdout = 2
    with pytest.raises(IFCNNError, match="eval_holdout"):
        input_pipeline.make_collections(config.data)
    config.data.source = "ftp"
    with pytest.raises(IFCNNError, match="data.source"):
        input_pipeline.make_collections(config.data)
    small = folder_config(tmp_path / "few")
    small.data.crop_size = 64
    small.data.eval_holdout = 1
    with pytest.raises(
        IFCNNError, match=r"^photo p\d+: image of size \d+x\d+ is smaller than the crop size 64$"
    ):
        input_pipeline.train_dataset(input_pipeline.make_collections(small.data)[0], small)[0]


def test_nyu_collections_on_mock_data():

    config = default.get_config()
    config.data.crop_size = 32
    config.batch_size = 3
    config.num_train_steps = 2
    with tfds.testing.mock_data(num_examples=3):
        train, held_out = input_pipeline.make_collections(config.data)
        assert len(train) == 3 and len(held_out) == 3
        assert train[0].depth is not None
        batch = input_pipeline.train_dataset(train, config)[1]
    assert batch["sources"].shape == (3, 2, 32, 32, 3)
