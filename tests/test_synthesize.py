"""Photo collections and the ``ifcnn-synth`` dataset writer."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import skimage.data
import tensorflow_datasets as tfds

from ifcnn_jax.cli import synth
from ifcnn_jax.data import photos as collections
from ifcnn_jax.data import synthesis
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io import testsets
from tests.helpers import write_random_photos


def write_photos(folder, count=3, size=(48, 64), seed=0):
    return write_random_photos(folder, count, size, seed=seed)


def read_png(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_folder_collection_reads_rgb_and_depth(tmp_path):
    photos = write_photos(tmp_path / "photos")
    (tmp_path / "depth").mkdir()
    depth = np.random.default_rng(1).uniform(0.5, 4.0, (48, 64)).astype(np.float32)
    depth[0, 0] = 0.0
    np.save(tmp_path / "depth" / "photo1.npy", depth)
    collection = collections.FolderCollection(tmp_path / "photos", tmp_path / "depth")
    assert len(collection) == 3
    np.testing.assert_array_equal(collection[0].image, photos["photo0"])
    assert collection[0].depth is None
    got = collection[1].depth
    assert np.isnan(got[0, 0])
    np.testing.assert_array_equal(got[1:], depth[1:])


def test_folder_collection_errors(tmp_path):
    with pytest.raises(IFCNNError, match="no such folder"):
        collections.FolderCollection(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IFCNNError, match="no photos"):
        collections.FolderCollection(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(IFCNNError, match="broken.jpg"):
        collections.FolderCollection(tmp_path / "bad")[0]
    write_photos(tmp_path / "p", count=1)
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "photo0.npy", np.ones((5, 5), np.float32))
    with pytest.raises(IFCNNError, match="depth map is 5x5"):
        collections.FolderCollection(tmp_path / "p", tmp_path / "d")[0]


def test_skimage_collection_has_depth_for_the_motorcycle():

    collection = collections.SkimageCollection(["motorcycle_left", "coffee"])
    left, _, disparity = skimage.data.stereo_motorcycle()
    photo = collection[0]
    np.testing.assert_array_equal(photo.image, left)
    finite = np.isfinite(disparity) & (disparity > 0)
    np.testing.assert_allclose(photo.depth[finite], 1.0 / disparity[finite], rtol=1e-6)
    assert np.isnan(photo.depth[~finite]).all()
    assert collection[1].depth is None and collection[1].image.shape[2] == 3
    with pytest.raises(IFCNNError, match="unknown scikit-image photo"):
        collections.SkimageCollection(["nonexistent"])


def test_write_dataset_round_trips(tmp_path):
    photos = write_photos(tmp_path / "photos", count=2)
    out = tmp_path / "dataset"
    status = synth.main(
        [
            "--folder",
            str(tmp_path / "photos"),
            "--out",
            str(out),
            "--count",
            "3",
            "--crop-size",
            "32",
            "--num-sources",
            "3",
            "--radius-min",
            "1",
            "--radius-max",
            "3",
            "--seed",
            "4",
            "--quiet",
        ]
    )
    assert status == 0
    manifest = json.loads((out / "manifest.json").read_text())
    details = json.loads((out / "synthesis.json").read_text())
    assert len(manifest["groups"]) == 3 and details["num_sources"] == 3
    for index, (group, detail) in enumerate(zip(manifest["groups"], details["examples"])):
        assert set(group) == {"name", "task", "sources", "reference"}
        assert group["sources"] == [f"{index:06d}-{x}.png" for x in "ABC"]
        assert detail["photo"] == f"photo{index % 2}"
        photo = photos[detail["photo"]]
        top, left, h, w = detail["box"]
        crop = photo[top : top + h, left : left + w]
        gt = read_png(out / group["reference"])
        np.testing.assert_array_equal(gt, crop[:, ::-1] if detail["flipped"] else crop)
        # The files hold exactly the rounded synthesis of example (seed, index).
        example = synthesis.synthesize_example(
            photo, rng=synthesis.example_rng(4, index), crop_size=32, num_sources=3, radius_range=(1, 3)
        )
        for name, source in zip(group["sources"], example.sources):
            np.testing.assert_array_equal(read_png(out / name), np.round(source.astype(np.float64) * 255))
        labels = cv2.imread(str(out / detail["focus_map"]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(labels, example.labels.astype(np.int32) * 255 // 2)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_written_dataset_is_a_testset_for_ifcnn_eval(tmp_path):

    write_photos(tmp_path / "photos", count=1)
    out = tmp_path / "dataset"
    assert (
        synth.main(
            [
                "--folder",
                str(tmp_path / "photos"),
                "--out",
                str(out),
                "--count",
                "2",
                "--crop-size",
                "16",
                "--quiet",
            ]
        )
        == 0
    )
    found = testsets.find_groups(out)
    assert [g.name for g in found.groups] == ["000000", "000001"]
    assert found.groups[0].task == "multifocus"
    assert found.groups[0].sources == (out / "000000-A.png", out / "000000-B.png")
    assert found.groups[1].reference == out / "000001-GT.png"


def test_cli_errors_are_one_line(tmp_path, capsys):
    write_photos(tmp_path / "photos", count=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    cases = [
        (
            ["--folder", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o1"), "--count", "1"],
            "no such folder",
        ),
        (
            ["--folder", str(tmp_path / "photos"), "--out", str(tmp_path / "full"), "--count", "1"],
            "not empty",
        ),
        (
            [
                "--folder",
                str(tmp_path / "photos"),
                "--out",
                str(tmp_path / "photos"),
                "--count",
                "1",
                "--force",
            ],
            "photo folder itself",
        ),
        (
            [
                "--folder",
                str(tmp_path / "photos"),
                "--out",
                str(tmp_path / "o2"),
                "--count",
                "1",
                "--crop-size",
                "500",
            ],
            "smaller than the crop size",
        ),
        (["--folder", str(tmp_path / "photos"), "--out", str(tmp_path / "o3"), "--count", "0"], "--count"),
        (
            [
                "--folder",
                str(tmp_path / "photos"),
                "--out",
                str(tmp_path / "o4"),
                "--count",
                "1",
                "--num-sources",
                "1",
            ],
            "--num-sources",
        ),
    ]
    for argv, message in cases:
        assert synth.main(argv + ["--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["photo0.png"]


def test_tfds_collection_on_mock_nyu(tmp_path):

    with tfds.testing.mock_data(num_examples=2):
        collection = collections.TfdsCollection("nyu_depth_v2", "train")
        assert len(collection) == 2
        photo = collection[1]
        assert photo.image.shape == (480, 640, 3) and photo.image.dtype == np.uint8
        assert photo.depth.shape == (480, 640) and photo.depth.dtype == np.float32
        out = tmp_path / "nyu"
        assert (
            synth.main(
                ["--tfds", "nyu_depth_v2", "--out", str(out), "--count", "2", "--crop-size", "64", "--quiet"]
            )
            == 0
        )
    details = json.loads((out / "synthesis.json").read_text())
    assert [e["photo"] for e in details["examples"]] == ["nyu_depth_v2/train/0", "nyu_depth_v2/train/1"]
