"""``ifcnn-fuse`` / ``python -m ifcnn_jax.cli.fuse``: single and batch mode, and user errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ifcnn_jax
from ifcnn_jax.cli.fuse import batch_groups, main
from ifcnn_jax.io.images import read_image, write_image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pair(release_dir):
    cmf = release_dir / "datasets" / "CMFDataset"
    # Crops keep the test quick; odd sizes on purpose.
    return [read_image(cmf / f"lytro-03-{s}.jpg")[100:171, 50:133] for s in "AB"]


def _cli(*args, cwd=None):
    proc = subprocess.run(
        [sys.executable, "-m", "ifcnn_jax.cli.fuse", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_single_mode_writes_the_fused_image(converted_checkpoints, pair, tmp_path):
    a, b = write_image(tmp_path / "a.png", pair[0]), write_image(tmp_path / "b.png", pair[1])
    code, out, err = _cli(
        "--task", "multifocus", "--model", converted_checkpoints["max"], a, b, "-o", tmp_path / "fused.png"
    )
    assert code == 0, err
    assert "wrote" in out
    expected = ifcnn_jax.fuse(ifcnn_jax.load(str(converted_checkpoints["max"])), pair, "multifocus")
    np.testing.assert_array_equal(read_image(tmp_path / "fused.png"), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "fused.png"]


def test_model_folder_picks_the_demo_model_per_task(converted_checkpoints, pair, tmp_path):
    folder = converted_checkpoints["max"].parent  # holds ifcnn-max, ifcnn-sum, ifcnn-mean
    paths = [write_image(tmp_path / f"e{i}.png", im) for i, im in enumerate(pair)]
    assert (
        main(
            [
                "--task",
                "exposure",
                "--model",
                str(folder),
                *map(str, paths),
                "-o",
                str(tmp_path / "e.png"),
                "-q",
            ]
        )
        == 0
    )
    mean_model = ifcnn_jax.load(str(converted_checkpoints["mean"]))
    np.testing.assert_array_equal(
        read_image(tmp_path / "e.png"), ifcnn_jax.fuse(mean_model, pair, "exposure")
    )


def test_batch_mode_fuses_every_group_and_reports_bad_ones(converted_checkpoints, pair, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "seq").mkdir(parents=True)
    for i in range(3):
        write_image(src / "seq" / f"shot{i}.png", np.roll(pair[i % 2], i, axis=1))
    write_image(src / "scene-A.png", pair[0])
    write_image(src / "scene-B.png", pair[1])
    write_image(src / "odd-A.png", pair[0])
    write_image(src / "odd-B.png", pair[1][:-2])  # a group whose sizes differ: fails when fused
    args = ["--task", "multifocus", "--model", str(converted_checkpoints["max"]), "--batch", str(src)]
    code = main([*args, "-o", str(tmp_path / "out")])
    assert code == 1  # one bad group, reported and skipped
    err = capsys.readouterr().err
    assert "sources differ in size" in err and "odd-B.png" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scene.png", "seq.png"]
    model = ifcnn_jax.load(str(converted_checkpoints["max"]))
    np.testing.assert_array_equal(
        read_image(tmp_path / "out" / "scene.png"), ifcnn_jax.fuse(model, pair, "multifocus")
    )
    # A file that fits no rule's partner is refused before any fusion, naming it.
    write_image(src / "lonely-A.png", pair[0])
    assert main([*args, "-o", str(tmp_path / "out2")]) == 2
    assert "lonely-A.png" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_grouping_rules(tmp_path):
    for name in [
        "lytro-01-A.jpg",
        "lytro-01-B.jpg",
        "Camp_Vis.png",
        "Camp_IR.png",
        "c01_1.tif",
        "c01_2.tif",
        "notes.txt",
        ".hidden.png",
    ]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "door").mkdir()
    for name in ["door1.jpg", "door2.jpg"]:
        (tmp_path / "door" / name).write_bytes(b"")
    groups, skipped = batch_groups(tmp_path, "multifocus")
    assert {g.name: [p.name for p in g.sources] for g in groups} == {
        "lytro-01": ["lytro-01-A.jpg", "lytro-01-B.jpg"],
        "Camp": ["Camp_Vis.png", "Camp_IR.png"],  # the demo's order: visible first
        "c01": ["c01_1.tif", "c01_2.tif"],
        "door": ["door1.jpg", "door2.jpg"],
    }
    assert skipped == []


def test_user_errors_are_one_line_without_traceback(converted_checkpoints, pair, tmp_path):
    a = write_image(tmp_path / "a.png", pair[0])
    small = write_image(tmp_path / "small.png", pair[1][:-1])
    code, _, err = _cli(
        "--task", "multifocus", "--model", converted_checkpoints["max"], a, small, "-o", tmp_path / "f.png"
    )
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: sources differ in size")
    assert "Traceback" not in err and "small.png" in err
    assert not (tmp_path / "f.png").exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("one_source", "at least 2 sources"),
        ("not_an_image", "not an image file"),
        ("missing", "no such file"),
        ("colour_gray_mix", "all colour or all gray"),
        ("overwrite_source", "refusing to overwrite source image"),
        ("no_suffix", "unknown image type"),
        ("bad_model", "no such checkpoint, .pth file or folder"),
        ("negative_tile", "--tile must be"),
    ],
)
def test_user_errors(converted_checkpoints, pair, tmp_path, capsys, case, message):
    a = write_image(tmp_path / "a.png", pair[0])
    b = write_image(tmp_path / "b.png", pair[1])
    before = a.read_bytes()
    model = str(converted_checkpoints["max"])
    out = str(tmp_path / "out.png")
    args = {
        "one_source": [str(a)],
        "not_an_image": [str(a), str(tmp_path / "notes.png")],
        "missing": [str(a), str(tmp_path / "nope.png")],
        "colour_gray_mix": [str(a), str(write_image(tmp_path / "g.png", pair[1][..., 0]))],
        "overwrite_source": [str(a), str(b)],
        "no_suffix": [str(a), str(b)],
        "bad_model": [str(a), str(b)],
        "negative_tile": [str(a), str(b), "--tile", "-4"],
    }[case]
    (tmp_path / "notes.png").write_text("not a png")
    if case == "overwrite_source":
        out = str(a)
    if case == "no_suffix":
        out = str(tmp_path / "fused")
    if case == "bad_model":
        model = str(tmp_path / "no-model")
    assert main(["--task", "multifocus", "--model", model, *args, "-o", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert a.read_bytes() == before
    assert not list(tmp_path.glob(".*tmp"))
