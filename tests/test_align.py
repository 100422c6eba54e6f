"""Registration of hand-held sources (``ifcnn_jax.align``, ``fuse(align=...)``,
``ifcnn-fuse --align``) on known synthetic warps of the release images.

Accuracy is checked independently of the code under test: the RMS distance, over every
pixel of the reference grid, between where the estimated and the true transform send
it. The multi-focus pairs are made from one release photo (a blur ramp on the left of
one copy, on the right of the other), so that they are registered exactly before the
known warp: the release Lytro pairs themselves differ by up to 2.5 px RMS (ECC finds the
same shift with the translation and homography models), which would swamp a 0.3 px test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import ifcnn_jax
from ifcnn_jax.cli.fuse import main
from ifcnn_jax.io.images import read_image, write_image

REPO = Path(__file__).resolve().parents[1]
MARGIN = 60  # the crops leave out the border that a synthetic warp leaves without data
MAX_RMS_PX = 0.3
MIN_PSNR_DB = 30.0


def rms_displacement(estimated: np.ndarray, true: np.ndarray, shape: tuple[int, int]) -> float:
    """RMS over the reference grid of |proj(estimated @ p) - proj(true @ p)| in pixels."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width]
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)]).astype(np.float64)
    a, b = estimated @ points, true @ points
    difference = a[:2] / a[2] - b[:2] / b[2]
    return float(np.sqrt(np.mean(np.sum(difference**2, axis=0))))


def interior(transform: np.ndarray, shape: tuple[int, int], margin: int = 12, slack: int = 0) -> np.ndarray:
    """Reference pixels at least ``margin`` px from the border whose true source
    position lies at least ``margin`` px inside the source (or at most ``slack`` px
    outside)."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    w = transform[2, 0] * xs + transform[2, 1] * ys + transform[2, 2]
    u = (transform[0, 0] * xs + transform[0, 1] * ys + transform[0, 2]) / w
    v = (transform[1, 0] * xs + transform[1, 1] * ys + transform[1, 2]) / w
    low, high_x, high_y = margin - slack, width - 1 - margin + slack, height - 1 - margin + slack
    inside = (u >= low) & (u <= high_x) & (v >= low) & (v <= high_y)
    if margin:
        inside[:margin], inside[-margin:], inside[:, :margin], inside[:, -margin:] = (
            False,
            False,
            False,
            False,
        )
    return inside


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(diff[mask] ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse > 0 else float("inf")


def about_centre(matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    to_centre = np.array([[1, 0, -(width - 1) / 2], [0, 1, -(height - 1) / 2], [0, 0, 1.0]])
    return np.linalg.inv(to_centre) @ matrix @ to_centre


def in_crop(transform: np.ndarray, margin: int = MARGIN) -> np.ndarray:
    """The transform in the pixels of the crop ``[margin:-margin, margin:-margin]``."""
    shift = np.array([[1, 0, margin], [0, 1, margin], [0, 0, 1.0]])
    return np.linalg.inv(shift) @ transform @ shift


def moved(image: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """``S`` with ``S(transform @ p) = image(p)``: registering S to the image must give
    ``transform`` (reference pixel -> source pixel)."""
    height, width = image.shape[:2]
    return cv2.warpPerspective(image, transform, (width, height), flags=cv2.INTER_CUBIC)


def crop(image: np.ndarray, margin: int = MARGIN) -> np.ndarray:
    return np.ascontiguousarray(image[margin:-margin, margin:-margin])


ANGLE = np.deg2rad(2.0)
# kind: (motion model, true transform about the image centre, 520x520 pixels)
WARPS = {
    "shift": ("translation", np.array([[1, 0, 6.4], [0, 1, -3.7], [0, 0, 1.0]])),
    "rotation": (
        "euclidean",
        np.array([[np.cos(ANGLE), -np.sin(ANGLE), 2.2], [np.sin(ANGLE), np.cos(ANGLE), -1.4], [0, 0, 1]]),
    ),
    "scale": ("affine", np.array([[1.04, 0.005, -3.1], [-0.004, 1.04, 2.5], [0, 0, 1]])),
    "perspective": ("homography", np.array([[1.01, 0.015, 3.0], [-0.012, 0.995, -2.0], [5e-5, -4e-5, 1]])),
}


def focus_pair(photo: np.ndarray, sigma: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """Two copies of ``photo``, one blurred on the right, the other on the left (a
    40-pixel ramp between): a multi-focus pair registered exactly."""
    width = photo.shape[1]
    ramp = np.clip((np.arange(width) - width / 2) / 40 + 0.5, 0, 1).astype(np.float32)[None, :, None]
    sharp = photo.astype(np.float32)
    blurred = cv2.GaussianBlur(sharp, (0, 0), sigma)
    near = sharp * (1 - ramp) + blurred * ramp
    far = sharp * ramp + blurred * (1 - ramp)
    return tuple(np.clip(np.round(x), 0, 255).astype(np.uint8) for x in (near, far))


@pytest.fixture(scope="module")
def max_model(release_dir):
    return ifcnn_jax.load(str(release_dir / "snapshots" / "IFCNN-MAX.pth"))


@pytest.fixture(scope="module")
def mean_model(release_dir):
    return ifcnn_jax.load(str(release_dir / "snapshots" / "IFCNN-MEAN.pth"))


@pytest.fixture(scope="module")
def snapshots(release_dir):
    return release_dir / "snapshots"


@pytest.fixture(scope="module")
def lytro(release_dir):
    folder = release_dir / "datasets" / "CMFDataset"
    return lambda n, side: read_image(folder / f"lytro-{n:02d}-{side}.jpg")


@pytest.fixture(scope="module")
def bracket(release_dir):
    folder = release_dir / "datasets" / "MEDataset" / "chair"
    return [read_image(p) for p in sorted(folder.glob("*.jpg"))]


@pytest.mark.parametrize("kind", list(WARPS))
def test_known_warp_is_recovered_and_fused(kind, lytro, max_model):
    method, about = WARPS[kind]
    photo = lytro(13 if kind in ("shift", "scale") else 20, "A")
    true = about_centre(about, photo.shape[:2])
    near, far = focus_pair(photo)
    reference, source = crop(near), crop(moved(far, true))
    truth = in_crop(true)

    result = ifcnn_jax.align([reference, source], method=method)
    np.testing.assert_array_equal(result.transforms[0], np.eye(3))
    assert result.images[0] is reference and result.images[1].shape == reference.shape
    error = rms_displacement(result.transforms[1], truth, reference.shape[:2])
    assert error < MAX_RMS_PX, f"{kind}: {error:.3f} px RMS"

    fused = ifcnn_jax.fuse(max_model, [reference, source], "multifocus", align=method)
    registered = ifcnn_jax.fuse(max_model, [reference, crop(far)], "multifocus")
    score = psnr(fused, registered, interior(truth, reference.shape[:2]))
    assert score >= MIN_PSNR_DB, f"{kind}: {score:.1f} dB"


def test_release_pair_registers_consistently(lytro):
    """The real Lytro pair (its own focus difference, and its own small offset, which
    is unknown): warping B by a known T must change the estimate by exactly T."""
    a, b = crop(lytro(5, "A")), lytro(5, "B")
    true = about_centre(WARPS["perspective"][1], b.shape[:2])
    before = ifcnn_jax.align([a, crop(b)], method="homography").transforms[1]
    after = ifcnn_jax.align([a, crop(moved(b, true))], method="homography").transforms[1]
    assert rms_displacement(after, in_crop(true) @ before, a.shape[:2]) < MAX_RMS_PX


def test_exposure_bracket_with_one_frame_shifted(bracket, snapshots, mean_model, tmp_path):
    """MEDataset 'chair' (5 exposures), the brightest frame shifted by a known amount,
    registered to the middle exposure through the command line."""
    shift = np.array([[1, 0, 5.6], [0, 1, -3.3], [0, 0, 1.0]])
    margin = 16
    frames = [crop(f, margin) for f in bracket]
    shifted = [*frames[:-1], crop(moved(bracket[-1], shift), margin)]
    paths = [write_image(tmp_path / f"chair{i}.png", f) for i, f in enumerate(shifted)]
    out, report = tmp_path / "fused.png", tmp_path / "report.json"
    model = snapshots / "IFCNN-MEAN.pth"
    common = ["--task", "exposure", "--model", str(model), *map(str, paths), "-q"]
    code = main(
        [*common, "-o", str(out), "--align", "translation", "--align-reference", "2", "--json", str(report)]
    )
    assert code == 0
    data = json.loads(report.read_text())
    assert data["method"] == "translation" and data["reference"] == 2 and data["equalised"] is True
    assert [s["name"] for s in data["sources"]] == [str(p) for p in paths]
    transforms = [np.array(s["transform"]) for s in data["sources"]]
    np.testing.assert_array_equal(transforms[2], np.eye(3))
    # The unshifted bracket's own offsets are unknown (it may not be perfectly still):
    # the shifted frame must move by exactly the shift, the others not at all.
    unshifted = ifcnn_jax.align(frames, method="translation", reference=2, equalise=True).transforms
    shape = frames[0].shape[:2]
    assert rms_displacement(transforms[-1], in_crop(shift, margin) @ unshifted[-1], shape) < MAX_RMS_PX
    for estimated, before in zip(transforms[:-1], unshifted[:-1]):
        assert rms_displacement(estimated, before, shape) < 0.05
    score = psnr(
        read_image(out),
        ifcnn_jax.fuse(mean_model, frames, "exposure"),
        interior(in_crop(shift, margin), shape),
    )
    assert score >= MIN_PSNR_DB, f"{score:.1f} dB"


def tone_bracket(photo: np.ndarray, gains=(0.3, 1.0, 3.0)) -> list[np.ndarray]:
    """Exposures of one photo (gamma 2.2 undone, scaled, clipped, redone): a bracket
    registered exactly, with real clipping."""
    linear = (photo.astype(np.float32) / 255) ** 2.2
    return [np.round(255 * np.clip(linear * g, 0, 1) ** (1 / 2.2)).astype(np.uint8) for g in gains]


@pytest.mark.parametrize("frame", [0, 2])
def test_synthetic_exposure_bracket_known_warp(bracket, frame):
    """A bracket made from one release photo, one frame rotated and shifted: the exact
    transform is known, so the accuracy is checked directly."""
    photo = bracket[2]
    true = about_centre(WARPS["rotation"][1], photo.shape[:2])
    frames = tone_bracket(photo)
    frames[frame] = moved(frames[frame], true)
    margin = 16
    result = ifcnn_jax.align([crop(f, margin) for f in frames], method="euclidean", reference=1)
    assert result.equalised
    shape = result.images[0].shape[:2]
    assert rms_displacement(result.transforms[frame], in_crop(true, margin), shape) < MAX_RMS_PX


def test_no_overlap_is_one_line_and_exit_2(lytro, snapshots, tmp_path):
    photo = lytro(7, "A")
    a = write_image(tmp_path / "left.png", photo[:, :256])
    b = write_image(tmp_path / "right.png", photo[:, 264:])
    out = tmp_path / "fused.png"
    proc = subprocess.run(
        [sys.executable, "-m", "ifcnn_jax.cli.fuse", "--task", "multifocus", "--model", str(snapshots)]
        + [str(a), str(b), "-o", str(out), "--align", "homography"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(b) in lines[0], proc.stderr
    assert "registration to" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("offset", [(0, 264), (264, 264)])
def test_disjoint_crops_are_refused_by_the_api(lytro, offset):
    photo, other = lytro(6, "A"), lytro(6, "B")
    dy, dx = offset
    for method in ("translation", "affine"):
        with pytest.raises(ifcnn_jax.IFCNNError, match=r"^far: registration to near"):
            ifcnn_jax.align(
                [photo[:256, :256], other[dy : dy + 256, dx : dx + 256]], method=method, names=["near", "far"]
            )


def test_scale_change_over_ten_percent_is_refused(lytro):
    photo = lytro(13, "A")
    zoom = about_centre(np.diag([1.2, 1.2, 1.0]), photo.shape[:2])
    with pytest.raises(ifcnn_jax.IFCNNError, match=r"^zoomed: registration to source 1 "):
        ifcnn_jax.align(
            [crop(photo), crop(moved(photo, zoom))], method="affine", names=["source 1", "zoomed"]
        )


def test_align_off_is_bit_identical_and_reports_identity(lytro, snapshots, tmp_path):
    a = write_image(tmp_path / "a.png", lytro(3, "A")[100:356, 50:306])
    b = write_image(tmp_path / "b.png", lytro(3, "B")[100:356, 50:306])
    common = ["--task", "multifocus", "--model", str(snapshots), str(a), str(b), "-q"]
    assert main([*common, "-o", str(tmp_path / "plain.png")]) == 0
    assert (
        main([*common, "-o", str(tmp_path / "off.png"), "--align", "off", "--json", str(tmp_path / "r.json")])
        == 0
    )
    assert (tmp_path / "plain.png").read_bytes() == (tmp_path / "off.png").read_bytes()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["method"] == "off"
    assert all(np.array_equal(s["transform"], np.eye(3)) for s in report["sources"])


def test_crop_keeps_only_the_shared_area(lytro, max_model):
    photo = lytro(13, "A")
    true = about_centre(WARPS["rotation"][1], photo.shape[:2])
    near, far = focus_pair(photo)
    reference, source = crop(near), crop(moved(far, true))
    filled = ifcnn_jax.align([reference, source], method="euclidean")
    cropped = ifcnn_jax.align([reference, source], method="euclidean", crop=True)
    x, y, w, h = cropped.crop_box
    assert cropped.cropped and not filled.cropped and filled.crop_box == cropped.crop_box
    assert all(im.shape[:2] == (h, w) for im in cropped.images)
    assert w * h > 0.8 * reference.shape[0] * reference.shape[1]
    np.testing.assert_array_equal(cropped.images[0], reference[y : y + h, x : x + w])
    np.testing.assert_array_equal(cropped.images[1], filled.images[1][y : y + h, x : x + w])
    # Every pixel of the box has data: its true source position is inside the source.
    assert interior(in_crop(true), reference.shape[:2], margin=0)[y : y + h, x : x + w].all()
    # Where the source has no data (its true position 2 px or more outside it), the
    # filled result is the reference.
    outside = ~interior(in_crop(true), reference.shape[:2], margin=0, slack=2)
    assert outside.sum() > 1000
    np.testing.assert_array_equal(filled.images[1][outside], reference[outside])
    fused = ifcnn_jax.fuse(max_model, [reference, source], "multifocus", align="euclidean", crop=True)
    assert fused.shape[:2] == (h, w)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "infrared", "--align", "affine"], "--align is for multifocus and exposure sources only"),
        (["--task", "multifocus", "--crop"], "--crop applies to aligned sources only"),
        (
            ["--task", "multifocus", "--align", "affine", "--align-reference", "2"],
            "--align-reference 2 is out of range",
        ),
    ],
)
def test_alignment_option_errors(extra, message, lytro, snapshots, tmp_path, capsys):
    a = write_image(tmp_path / "a.png", lytro(3, "A")[:64, :64])
    b = write_image(tmp_path / "b.png", lytro(3, "B")[:64, :64])
    code = main([*extra, "--model", str(snapshots), str(a), str(b), "-o", str(tmp_path / "f.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "f.png").exists()


def test_api_errors(lytro):
    a, b = lytro(3, "A")[:128, :128], lytro(3, "B")[:128, :128]
    with pytest.raises(ifcnn_jax.IFCNNError, match="not supported"):
        ifcnn_jax.fuse(None, [a, b], "medical", align="translation")
    with pytest.raises(ifcnn_jax.IFCNNError, match="unknown alignment method 'rigid'"):
        ifcnn_jax.align([a, b], method="rigid")
    with pytest.raises(ifcnn_jax.IFCNNError, match="alignment reference 5 is out of range"):
        ifcnn_jax.align([a, b], reference=5)
    with pytest.raises(ifcnn_jax.IFCNNError, match="flat"):
        ifcnn_jax.align([a, np.full_like(b, 7)], names=["a", "flat one"])
    assert callable(ifcnn_jax.align) and "align" in dir(ifcnn_jax)


def test_batch_mode_aligns_each_group_and_reports_failures(lytro, snapshots, tmp_path):
    photo = lytro(13, "A")
    near, far = focus_pair(photo)
    shift = WARPS["shift"][1]
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "scene-A.png", crop(near, 132))
    write_image(src / "scene-B.png", crop(moved(far, shift), 132))
    write_image(src / "apart-A.png", photo[:200, :200])
    write_image(src / "apart-B.png", photo[300:500, 300:500])
    report = tmp_path / "report.json"
    common = ["--task", "multifocus", "--model", str(snapshots), "--batch", str(src), "-q"]
    code = main([*common, "-o", str(tmp_path / "out"), "--align", "translation", "--json", str(report)])
    assert code == 1  # one group failed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scene.png"]
    groups = json.loads(report.read_text())["groups"]
    assert "apart-B.png: registration to" in groups["apart"]["error"]
    estimated = np.array(groups["scene"]["sources"][1]["transform"])
    assert rms_displacement(estimated, in_crop(shift, 132), (256, 256)) < MAX_RMS_PX
