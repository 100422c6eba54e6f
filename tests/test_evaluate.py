"""``ifcnn-eval`` end to end: scoring existing fused images, fusing with the released
models, the report files, and one-line errors."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from ifcnn_jax import fuse, load, metrics
from ifcnn_jax.cli.evaluate import main, method_folders
from ifcnn_jax.cli.report import rank_values
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import read_image, write_image

SHAPE = (48, 64)  # the shape tests/test_metrics.py compiles for
FEW = "EN,MI,Qabf,SSIM_mean,SSIM_sum"


def _crop(top: int, left: int) -> np.ndarray:
    return skimage.data.camera()[top : top + SHAPE[0], left : left + SHAPE[1]]


@pytest.fixture
def scored_set(tmp_path):
    """Two multi-focus-style groups and a folder of fused results named after them."""
    testset, fused = tmp_path / "set", tmp_path / "fused"
    testset.mkdir()
    fused.mkdir()
    for i, (top, left) in enumerate([(100, 180), (300, 250)], start=1):
        sharp = _crop(top, left)
        a = sharp.copy()
        a[:, 32:] = cv2.GaussianBlur(sharp, (7, 7), 2)[:, 32:]
        b = sharp.copy()
        b[:, :32] = cv2.GaussianBlur(sharp, (7, 7), 2)[:, :32]
        write_image(testset / f"g{i}-A.png", a)
        write_image(testset / f"g{i}-B.png", b)
        write_image(fused / f"g{i}.png", np.maximum(a, b))
    return testset, fused


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_scores_existing_fused_images(scored_set, tmp_path, capsys):
    testset, fused = scored_set
    out = tmp_path / "out"
    assert main([str(testset), "--fused", str(fused), "--out", str(out), "--metrics", FEW, "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    rows = _read_csv(out / "metrics.csv")
    assert [r["group"] for r in rows] == ["g1", "g2"]
    assert list(rows[0]) == ["collection", "group", "task", "sources", "fused", *FEW.split(",")]
    assert rows[0]["task"] == "multifocus" and rows[0]["sources"] == "2"
    for row in rows:
        name = row["group"]
        # The same numbers from the library, on images decoded independently with OpenCV.
        sources = [cv2.imread(str(testset / f"{name}-{s}.png"), cv2.IMREAD_GRAYSCALE) for s in "AB"]
        expected = metrics.evaluate(
            sources, cv2.imread(str(fused / f"{name}.png"), cv2.IMREAD_GRAYSCALE), names=FEW.split(",")
        )
        for metric, value in expected.items():
            assert float(row[metric]) == pytest.approx(value, rel=1e-6), (name, metric)
    (summary,) = _read_csv(out / "summary.csv")
    assert summary["groups"] == "2"
    for metric in FEW.split(","):
        values = [float(r[metric]) for r in rows]
        assert float(summary[f"{metric}_mean"]) == pytest.approx(np.mean(values), rel=1e-9)
        assert float(summary[f"{metric}_std"]) == pytest.approx(np.std(values, ddof=1), rel=1e-9)
    report = (out / "metrics.md").read_text()
    assert "| group | EN | MI | Qabf | SSIM_mean | SSIM_sum |" in report
    assert "| **mean ± std** |" in report and "| g2 |" in report
    figure = Image.open(out / "figure_set.png")
    assert figure.height > 2 * 160 and figure.width > 3 * SHAPE[1] * 160 // SHAPE[0]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_float_and_16_bit_files_are_put_on_the_0_255_scale(scored_set, tmp_path):
    testset, fused = scored_set
    as_png = tmp_path / "png"
    assert (
        main(
            [
                str(testset),
                "--fused",
                str(fused),
                "--out",
                str(as_png),
                "--quiet",
                "--metrics",
                FEW,
                "--figure-rows",
                "0",
            ]
        )
        == 0
    )
    other = tmp_path / "other"
    other.mkdir()
    for name in ("g1", "g2"):
        image = cv2.imread(str(fused / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        if name == "g1":  # float TIFF in [0, 1], the package's float convention
            cv2.imwrite(str(other / f"{name}.tif"), image.astype(np.float32) / 255)
        else:
            cv2.imwrite(str(other / f"{name}.tif"), image.astype(np.uint16) * 257)
    assert (
        main(
            [
                str(testset),
                "--fused",
                str(other),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
                "--metrics",
                FEW,
                "--figure-rows",
                "0",
            ]
        )
        == 0
    )
    for expected, actual in zip(_read_csv(as_png / "metrics.csv"), _read_csv(tmp_path / "o" / "metrics.csv")):
        for metric in FEW.split(","):
            assert float(actual[metric]) == pytest.approx(float(expected[metric]), rel=1e-5)


def test_prints_the_table(scored_set, tmp_path, capsys):
    testset, fused = scored_set
    assert (
        main(
            [
                str(testset),
                "--fused",
                str(fused),
                "--out",
                str(tmp_path / "o"),
                "--metrics",
                "EN,Qabf",
                "--figure-rows",
                "0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.split()[:3] == ["group", "EN", "Qabf"] for line in lines)
    assert any(line.startswith("g1 ") for line in lines)
    assert any(line.startswith("mean ") for line in lines)
    assert any(line.startswith("± std ") for line in lines)
    assert "wrote metrics.csv, summary.csv, metrics.md to" in out
    assert not list((tmp_path / "o").glob("figure_*.png"))


def test_default_metrics_and_what_does_not_apply(scored_set, tmp_path):
    testset, fused = scored_set
    out = tmp_path / "out"
    assert main([str(testset), "--fused", str(fused), "--out", str(out), "--quiet"]) == 0
    rows = _read_csv(out / "metrics.csv")
    assert list(rows[0])[5:] == list(metrics.NO_REFERENCE_METRICS)
    assert rows[0]["MS_SSIM_mean"] == ""  # 48x64 is below MS-SSIM's 176 pixels
    assert all(rows[0][m] != "" for m in metrics.NO_REFERENCE_METRICS if "MS_SSIM" not in m)
    assert "n/a" in (out / "metrics.md").read_text()


def test_manifest_with_fused_and_reference(tmp_path):
    a, b, truth = _crop(100, 180), _crop(101, 181), _crop(100, 181)
    fused = np.clip(truth.astype(int) + 2, 0, 255).astype(np.uint8)
    for name, image in {"a.png": a, "b.png": b, "gt.png": truth, "f.png": fused}.items():
        write_image(tmp_path / name, image)
    (tmp_path / "manifest.csv").write_text(
        "name,source1,source2,fused,reference\npair,a.png,b.png,f.png,gt.png\n"
    )
    out = tmp_path / "out"
    assert (
        main(
            [str(tmp_path / "manifest.csv"), "--out", str(out), "--quiet", "--metrics", "EN,PSNR_ref,MAE_ref"]
        )
        == 0
    )
    (row,) = _read_csv(out / "metrics.csv")
    assert float(row["MAE_ref"]) == pytest.approx(np.mean(np.abs(fused - truth.astype(float))))
    assert float(row["PSNR_ref"]) == pytest.approx(float(metrics.psnr(fused, truth)), rel=1e-6)


def _error_of(argv: list[str], capsys) -> str:
    assert main([*argv, "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_user_errors_are_one_line(scored_set, tmp_path, capsys):
    testset, fused = scored_set
    out = str(tmp_path / "out")
    (fused / "g2.png").unlink()
    assert "no fused image for group 'g2'" in _error_of(
        [str(testset), "--fused", str(fused), "--out", out], capsys
    )
    write_image(fused / "g2.png", np.zeros((SHAPE[0] - 1, SHAPE[1]), np.uint8))
    message = _error_of([str(testset), "--fused", str(fused), "--out", out, "--metrics", "EN"], capsys)
    assert "g2.png is 47x64" in message and "sizes must match" in message
    assert "no such test-set folder" in _error_of([str(tmp_path / "nothing"), "--out", out], capsys)
    assert "unknown metric BRISQUE" in _error_of(
        [str(testset), "--fused", str(fused), "--metrics", "EN,BRISQUE"], capsys
    )
    assert "pass --model CKPT or --fused DIR" in _error_of([str(testset), "--out", out], capsys)
    assert "--fused" in _error_of([str(testset), "--fused", str(tmp_path / "none")], capsys)
    write_image(testset / "solo_1.png", _crop(0, 0))
    write_image(testset / "solo_2.png", _crop(0, 0))
    assert "cannot tell its fusion task" in _error_of(
        [str(testset), "--model", str(tmp_path), "--out", out], capsys
    )
    assert not (tmp_path / "out" / "metrics.csv").exists()
    # An output that would replace an input image: refused before anything is written.
    write_image(testset / "figure_set.png", _crop(0, 0))
    write_image(fused / "figure_set.png", _crop(0, 0))
    write_image(testset / "figure_set_IR.png", _crop(0, 0))
    write_image(testset / "figure_set_Vis.png", _crop(0, 0))
    (testset / "solo_1.png").unlink()
    (testset / "solo_2.png").unlink()
    write_image(fused / "g2.png", np.maximum(*(read_image(testset / f"g2-{s}.png") for s in "AB")))
    before = (testset / "figure_set.png").read_bytes()
    assert "refusing to overwrite input image" in _error_of(
        [str(testset), "--fused", str(fused), "--out", str(testset), "--metrics", "EN"], capsys
    )
    assert (testset / "figure_set.png").read_bytes() == before
    assert not (testset / "metrics.csv").exists()
    # With the progress bar on, the error is still the last line (the bar is cleared).
    write_image(fused / "g2.png", np.zeros((SHAPE[0] - 1, SHAPE[1]), np.uint8))
    assert main([str(testset), "--fused", str(fused), "--out", out, "--metrics", "EN"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.endswith("sizes must match\n")


def test_fuses_with_the_released_models(converted_checkpoints, release_dir, tmp_path):

    data = release_dir / "datasets"
    testset = tmp_path / "set"
    crops = {
        "IVDataset/Camp_Vis.png": data / "IVDataset" / "Camp_Vis.png",
        "IVDataset/Camp_IR.png": data / "IVDataset" / "Camp_IR.png",
        **{f"MEDataset/door/door{i}.jpg": data / "MEDataset" / "door" / f"door{i}.jpg" for i in (1, 3, 5)},
    }
    for name, source in crops.items():
        (testset / name).parent.mkdir(parents=True, exist_ok=True)
        # PNG keeps the crop lossless, so the fused result can be recomputed exactly.
        top, left = (150, 100) if "door" in name else (0, 0)  # door's corner is black
        write_image(
            (testset / name).with_suffix(".png"), read_image(source)[top : top + 48, left : left + 64]
        )
    checkpoints = converted_checkpoints["max"].parent
    out = tmp_path / "out"
    assert (
        main(
            [str(testset), "--model", str(checkpoints), "--out", str(out), "--quiet", "--metrics", "EN,Qabf"]
        )
        == 0
    )
    rows = {r["group"]: r for r in _read_csv(out / "metrics.csv")}
    assert rows["Camp"]["fused"] == "IFCNN-MAX" and rows["door"]["fused"] == "IFCNN-MEAN"
    assert rows["Camp"]["collection"] == "IVDataset" and rows["door"]["task"] == "exposure"
    visible, infrared = (read_image(testset / "IVDataset" / f"Camp_{s}.png") for s in ("Vis", "IR"))
    expected = fuse(load(str(converted_checkpoints["max"])), [visible, infrared], "infrared")
    np.testing.assert_array_equal(read_image(out / "fused" / "IVDataset" / "Camp.png"), expected)
    sequence = [read_image(testset / "MEDataset" / "door" / f"door{i}.png") for i in (1, 3, 5)]
    expected = fuse(load(str(converted_checkpoints["mean"])), sequence, "exposure")
    np.testing.assert_array_equal(read_image(out / "fused" / "MEDataset" / "door.png"), expected)
    assert float(rows["door"]["EN"]) == pytest.approx(
        metrics.evaluate(sequence, expected, names=["EN"])["EN"], rel=1e-6
    )
    # A per-task model overrides the folder's choice.
    assert (
        main(
            [
                str(testset),
                "--model",
                str(checkpoints),
                "--model",
                f"exposure={converted_checkpoints['max']}",
                "--out",
                str(tmp_path / "o2"),
                "--quiet",
                "--metrics",
                "EN",
                "--figure-rows",
                "0",
            ]
        )
        == 0
    )
    rows = {r["group"]: r for r in _read_csv(tmp_path / "o2" / "metrics.csv")}
    assert rows["door"]["fused"] == "IFCNN-MAX"


def test_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "ifcnn_jax.cli.evaluate", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "ifcnn-eval" in result.stdout


def test_compares_several_methods_with_ranks(scored_set, tmp_path, capsys):
    """Three methods on the same groups: the pixel maximum, the plain average and the sharp
    image itself (the ground truth of these groups). MSE and PSNR against the sources are
    minimised / maximised by the average (it minimises sum_k ||S_k - F||^2), so they rank
    the blurred average first, and so does SSIM against the sources; Qabf ranks the truth
    first."""
    testset, fused_max = scored_set
    mean_dir, truth_dir = tmp_path / "mean", tmp_path / "truth"
    mean_dir.mkdir()
    truth_dir.mkdir()
    for i, (top, left) in enumerate([(100, 180), (300, 250)], start=1):
        a, b = (
            cv2.imread(str(testset / f"g{i}-{s}.png"), cv2.IMREAD_GRAYSCALE).astype(np.float64) for s in "AB"
        )
        write_image(mean_dir / f"g{i}.png", np.floor((a + b) / 2 + 0.5).astype(np.uint8))
        write_image(truth_dir / f"g{i}.png", _crop(top, left))
    names = ["PSNR", "MSE", "SSIM_mean", "Qabf", "EN"]
    out = tmp_path / "out"
    argv = [
        str(testset),
        "--fused",
        f"max={fused_max}",
        "--fused",
        str(mean_dir),
        "--fused",
        f"truth={truth_dir}",
    ]
    assert main([*argv, "--out", str(out), "--metrics", ",".join(names)]) == 0
    printed = capsys.readouterr().out
    assert "mean rank" in printed and "truth" in printed
    rows = _read_csv(out / "metrics.csv")
    assert [(r["method"], r["group"]) for r in rows] == [
        (m, g) for m in ("max", "mean", "truth") for g in ("g1", "g2")
    ]
    ranks = {r["method"]: r for r in _read_csv(out / "ranks.csv")}
    assert list(ranks) == ["max", "mean", "truth"]
    for name in names:  # each rank follows from the per-group values and the direction
        means = {m: np.mean([float(r[name]) for r in rows if r["method"] == m]) for m in ranks}
        for m in ranks:
            assert float(ranks[m][f"{name}_mean"]) == pytest.approx(means[m], rel=1e-9)
        sign = 1 if metrics.ALL_METRICS[name].higher_is_better else -1
        for m in ranks:
            better = sum(sign * (means[o] - means[m]) > 0 for o in ranks)
            assert int(ranks[m][f"{name}_rank"]) == 1 + better, (name, m)
    # The blurred average first on every metric that compares F with each source, the
    # sharp truth first on edges. (max and truth tie on MSE and PSNR exactly: where one
    # source is sharp and the other blurred, both leave sum_k (S_k - F)^2 = (A - B)^2.)
    for name in ("PSNR", "MSE", "SSIM_mean"):
        assert ranks["mean"][f"{name}_rank"] == "1", name
    assert ranks["truth"]["Qabf_rank"] == "1"
    assert ranks["max"]["PSNR_rank"] == ranks["truth"]["PSNR_rank"] == "2"
    for m in ranks:
        own = [int(ranks[m][f"{n}_rank"]) for n in names]
        assert float(ranks[m]["mean_rank"]) == pytest.approx(np.mean(own))
    report = (out / "metrics.md").read_text()
    assert "| method | PSNR ↑ | MSE ↓ | SSIM_mean ↑ | Qabf ↑ | EN ↑ | mean rank |" in report
    assert "## truth" in report
    # the report warns that the metrics against each source favour the average
    (note,) = [line for line in report.splitlines() if "favour blur" in line]
    assert note.startswith("- PSNR, MSE, SSIM_mean compare F with each source")
    assert "plain average of the sources" in note and "ranks first on PSNR" in note
    assert (out / "figure_set.png").is_file()


def test_ranks_and_method_names():
    assert rank_values({"a": 1.0, "b": 3.0, "c": 3.0, "d": float("nan")}, True) == {
        "a": 3,
        "b": 1,
        "c": 1,
        "d": None,
    }
    assert rank_values({"a": 1.0, "b": 3.0}, False) == {"a": 1, "b": 2}
    assert method_folders(["x=some/dir", "other/dir/"]) == [("x", "some/dir"), ("dir", "other/dir/")]
    with pytest.raises(IFCNNError, match="two methods are named 'dir'"):
        method_folders(["a/dir", "b/dir"])


def test_opt_in_metrics_are_computed_when_named(scored_set, tmp_path):
    testset, fused = scored_set
    out = tmp_path / "out"
    assert (
        main([str(testset), "--fused", str(fused), "--out", str(out), "--metrics", "EN,FMI_dct", "-q"]) == 0
    )
    rows = _read_csv(out / "metrics.csv")
    assert list(rows[0])[-2:] == ["EN", "FMI_dct"]
    for row in rows:
        name = row["group"]
        sources = [cv2.imread(str(testset / f"{name}-{s}.png"), cv2.IMREAD_GRAYSCALE) for s in "AB"]
        image = cv2.imread(str(fused / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        expected = metrics.evaluate(sources, image, names=["FMI_dct"])["FMI_dct"]
        assert float(row["FMI_dct"]) == pytest.approx(expected, rel=1e-6)
        assert 0 < expected <= 1
