"""Finding image groups: the release's folder layouts, generic folders, manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import write_image
from ifcnn_jax.io.testsets import (
    ImageGroup,
    find_groups,
    fused_image_path,
    natural_key,
    read_manifest,
)


def _touch_images(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        write_image(path, np.zeros((4, 5), np.uint8))
        paths.append(path)
    return paths


# ----------------------------------------------------------------- the release's sets


def test_release_datasets(release_dir):
    image_set = find_groups(release_dir / "datasets")
    by_collection = {c: [g for g in image_set.groups if g.collection == c] for c in image_set.collections()}
    assert list(by_collection) == [
        "CMFDataset",
        "CMFDataset/Triple Series",
        "IVDataset",
        "MDDataset",
        "MEDataset",
    ]
    lytro = by_collection["CMFDataset"]
    assert [g.name for g in lytro] == [f"CMFDataset/lytro-{i:02d}" for i in range(1, 21)]
    assert all(
        g.task == "multifocus"
        and [p.name for p in g.sources] == [g.name[-8:] + "-A.jpg", g.name[-8:] + "-B.jpg"]
        for g in lytro
    )
    triples = by_collection["CMFDataset/Triple Series"]
    assert [g.name for g in triples] == [f"CMFDataset/Triple Series/lytro-0{i}" for i in range(1, 5)]
    assert all(len(g.sources) == 3 and g.task == "multifocus" for g in triples)
    infrared = by_collection["IVDataset"]
    assert len(infrared) == 14
    assert all(
        g.task == "infrared"
        and g.sources[0].name.endswith("_Vis.png")
        and g.sources[1].name.endswith("_IR.png")
        for g in infrared
    )
    medical = by_collection["MDDataset"]
    assert [g.name for g in medical] == [f"MDDataset/c0{i}" for i in range(1, 9)]
    assert all(
        g.task == "medical" and [p.name[-6:] for p in g.sources] == ["_1.tif", "_2.tif"] for g in medical
    )
    assert sorted(p.name for p in image_set.skipped) == sorted(
        p.name for p in (release_dir / "datasets" / "MDDataset").glob("010_*")
    )
    exposure = {g.name: [p.name for p in g.sources] for g in by_collection["MEDataset"]}
    assert {k: len(v) for k, v in exposure.items()} == {
        "MEDataset/chair": 5,
        "MEDataset/door": 5,
        "MEDataset/garage": 6,
        "MEDataset/house": 4,
        "MEDataset/igloo": 6,
        "MEDataset/window": 5,
    }
    assert exposure["MEDataset/chair"] == [f"chairs{i}.jpg" for i in range(1, 6)]
    assert all(g.task == "exposure" for g in by_collection["MEDataset"])


def test_release_subfolders_keep_their_task(release_dir):
    sequence = find_groups(release_dir / "datasets" / "MEDataset" / "door")
    assert [(g.name, g.task, g.collection) for g in sequence.groups] == [("door", "exposure", "")]
    lytro = find_groups(release_dir / "datasets" / "CMFDataset")
    assert lytro.groups[0].name == "lytro-01" and lytro.groups[-1].name == "Triple Series/lytro-04"


# ----------------------------------------------------------------------- folder rules


def test_generic_folder_patterns(tmp_path):
    _touch_images(
        tmp_path,
        "x-A.png",
        "x-B.png",
        "x-C.png",
        "road_IR.png",
        "road_Vis.png",
        "scan_2.tif",
        "scan_1.tif",
        "scan_10.tif",
        "notes.png",
    )
    (tmp_path / "readme.txt").write_text("not an image")
    _touch_images(tmp_path / "seq", "img10.jpg", "img2.jpg", "img1.jpg")
    image_set = find_groups(tmp_path)
    groups = {g.name: g for g in image_set.groups}
    assert list(groups) == ["road", "scan", "x", "seq"]
    assert [p.name for p in groups["x"].sources] == ["x-A.png", "x-B.png", "x-C.png"]
    assert groups["x"].task == "multifocus"
    assert [p.name for p in groups["road"].sources] == ["road_Vis.png", "road_IR.png"]
    assert groups["road"].task == "infrared"
    assert [p.name for p in groups["scan"].sources] == ["scan_1.tif", "scan_2.tif", "scan_10.tif"]
    assert groups["scan"].task is None
    assert [p.name for p in groups["seq"].sources] == ["img1.jpg", "img2.jpg", "img10.jpg"]
    assert groups["seq"].collection == "" and groups["x"].collection == ""
    assert [p.name for p in image_set.skipped] == ["notes.png"]


def test_task_override_and_release_folder_names(tmp_path):
    _touch_images(tmp_path / "MDDataset", "a_1.png", "a_2.png")
    _touch_images(tmp_path / "other", "b_1.png", "b_2.png")
    image_set = find_groups(tmp_path)
    assert {g.name: g.task for g in image_set.groups} == {"MDDataset/a": "medical", "other/b": None}
    forced = find_groups(tmp_path, task="infrared")
    assert {g.task for g in forced.groups} == {"infrared"}
    with pytest.raises(IFCNNError, match="unknown task 'fusion'"):
        find_groups(tmp_path, task="fusion")


def test_incomplete_groups_name_the_file(tmp_path):
    _touch_images(tmp_path / "a", "lytro-05-A.jpg")
    with pytest.raises(IFCNNError, match=r"lytro-05-A\.jpg: no matching lytro-05-B"):
        find_groups(tmp_path / "a")
    _touch_images(tmp_path / "b", "p-A.png", "p-C.png")
    with pytest.raises(IFCNNError, match="no matching p-B"):
        find_groups(tmp_path / "b")
    _touch_images(tmp_path / "c", "Camp_Vis.png")
    with pytest.raises(IFCNNError, match=r"Camp_Vis\.png: no matching Camp_IR"):
        find_groups(tmp_path / "c")
    _touch_images(tmp_path / "d", "q-A.png", "q-a.jpg", "q-B.png")
    with pytest.raises(IFCNNError, match="two source files for 'q'"):
        find_groups(tmp_path / "d")


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(IFCNNError, match="no such test-set folder"):
        find_groups(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IFCNNError, match="found no image groups"):
        find_groups(tmp_path / "empty")


def test_natural_key():
    assert sorted(["a10", "a2", "A1", "b"], key=natural_key) == ["A1", "a2", "a10", "b"]


# -------------------------------------------------------------------------- manifests


def test_csv_manifest(tmp_path):
    _touch_images(tmp_path / "img", "a.png", "b.png", "c.png", "f.png", "gt.png")
    (tmp_path / "manifest.csv").write_text(
        "name,task,source1,source2,source3,fused,reference\n"
        "first,multifocus,img/a.png,img/b.png,img/c.png,img/f.png,img/gt.png\n"
        ",,img/b.png,img/c.png,,,\n"
        "\n"
    )
    image_set = find_groups(tmp_path)  # the folder's manifest.csv wins over its images
    first, second = image_set.groups
    assert first == ImageGroup(
        "first",
        tuple(tmp_path / "img" / n for n in ("a.png", "b.png", "c.png")),
        "multifocus",
        "",
        tmp_path / "img" / "f.png",
        tmp_path / "img" / "gt.png",
    )
    assert second.name == "b" and len(second.sources) == 2 and second.task is None
    assert second.fused is None and second.reference is None
    assert read_manifest(tmp_path / "manifest.csv", task="medical").groups[1].task == "medical"


def test_json_manifest(tmp_path):
    _touch_images(tmp_path, "a.png", "b.png", "f.png")
    (tmp_path / "set.json").write_text(
        json.dumps(
            {"groups": [{"name": "g", "task": "infrared", "sources": ["a.png", "b.png"], "fused": "f.png"}]}
        )
    )
    (group,) = find_groups(tmp_path / "set.json").groups
    assert group.sources == (tmp_path / "a.png", tmp_path / "b.png")
    assert group.fused == tmp_path / "f.png" and group.task == "infrared"
    (tmp_path / "list.json").write_text(json.dumps([{"sources": ["a.png", "b.png"]}]))
    assert find_groups(tmp_path / "list.json").groups[0].name == "a"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,source1,source2\ng,a.png,missing.png\n", r"line 2: .*missing\.png: no such file"),
        ("name,source1\ng,a.png\n", "at least two source columns"),
        ("name,source1,source2,colour\ng,a.png,b.png,red\n", "unknown columns colour"),
        ("name,source1,source2\ng,a.png,\n", "line 2: a group needs at least 2 sources"),
        ("name,source1,source2\ng,a.png,b.png\ng,b.png,a.png\n", "line 3: group name 'g' already"),
        ("name,task,source1,source2\ng,fusion,a.png,b.png\n", "unknown task 'fusion'"),
        ("name,source1,source2\n", "lists no groups"),
        ("name,source1,source2\ng,a.png,b.png,extra,cells\n", "5 cells but the header has 3"),
    ],
)
def test_csv_manifest_errors(tmp_path, text, message):
    _touch_images(tmp_path, "a.png", "b.png")
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(IFCNNError, match=message):
        find_groups(tmp_path / "m.csv")


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not a readable JSON manifest"),
        ('{"groups": {"a": 1}}', "expected"),
        ('[{"sources": "a.png"}]', "must be a list of paths"),
        ('[{"sources": ["a.png", "b.png"], "colour": 1}]', "unknown keys colour"),
        ('[{"sources": ["a.png", 3]}]', "paths must be strings"),
    ],
)
def test_json_manifest_errors(tmp_path, text, message):
    _touch_images(tmp_path, "a.png", "b.png")
    (tmp_path / "m.json").write_text(text)
    with pytest.raises(IFCNNError, match=message):
        find_groups(tmp_path / "m.json")


def test_other_manifest_suffix_is_refused(tmp_path):
    (tmp_path / "m.txt").write_text("a b")
    with pytest.raises(IFCNNError, match="must be .csv or .json"):
        find_groups(tmp_path / "m.txt")


# ---------------------------------------------------------------------- fused lookup


def test_fused_image_path(tmp_path):
    group = ImageGroup("Triple Series/lytro-01", (Path("a"), Path("b")))
    with pytest.raises(IFCNNError, match=r"expected .*Triple Series/lytro-01\.png"):
        fused_image_path(tmp_path, group)
    (path,) = _touch_images(tmp_path / "Triple Series", "lytro-01.jpg")
    assert fused_image_path(tmp_path, group) == path
    _touch_images(tmp_path / "Triple Series", "lytro-01.png")
    with pytest.raises(IFCNNError, match="several fused images .* lytro-01.png, lytro-01.jpg"):
        fused_image_path(tmp_path, group)
