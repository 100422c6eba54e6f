"""Streamed fusion of TIFF files (``ifcnn_jax.io.tiff_stream``, ``ifcnn_jax.streaming``):
region reads equal the decoded file, the tile writer round-trips, the streamed result
equals the in-memory ``ifcnn_jax.fuse`` bit for bit, and ``ifcnn-fuse`` takes the
streamed path with the CLI's guarantees (atomic output, one-line errors, no overwriting
of sources)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from ifcnn_jax import recipes
from ifcnn_jax.cli import fuse as fuse_cli
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.inference import forward
from ifcnn_jax.io.images import read_image
from ifcnn_jax.io.tiff_stream import NotStreamable, TiffRegions, stream_support, write_tiff
from ifcnn_jax.model import load
from ifcnn_jax.preflight import check_sources, fusion_bytes, streamed_fusion_bytes
from ifcnn_jax.streaming import fuse_tiff_files, plan_streaming
from tests.helpers import max_abs_diff

H, W = 300, 500


@pytest.fixture(scope="module")
def max_model(converted_checkpoints):
    return load(str(converted_checkpoints["max"]))


def _images(count: int, colour: bool, dtype, seed: int) -> list[np.ndarray]:
    """Correlated random sources (one scene, independent noise) of H x W pixels."""
    rng = np.random.default_rng(seed)
    shape = (H, W, 3) if colour else (H, W)
    base = rng.uniform(0.1, 0.9, size=shape)
    units = [np.clip(base + rng.normal(scale=0.15, size=shape), 0, 1) for _ in range(count)]
    if dtype == np.uint8:
        return [(u * 255).astype(np.uint8) for u in units]
    if dtype == np.uint16:
        return [(u * 65535).astype(np.uint16) for u in units]
    return [u.astype(np.float32) for u in units]


LAYOUTS = {
    "contiguous": {},
    "strips-deflate": {"rowsperstrip": 7, "compression": "zlib"},
    "tiles": {"tile": (64, 48)},
    "tiles-deflate": {"tile": (32, 32), "compression": "zlib"},
    "planes": {"rowsperstrip": 16, "planarconfig": "separate"},
}


def _write(path, image: np.ndarray, layout: str):
    options = dict(LAYOUTS[layout])
    if image.ndim == 2:
        options.pop("planarconfig", None)
    elif "planarconfig" in options:
        image = np.moveaxis(image, 2, 0)  # tifffile takes separate planes first
    tifffile.imwrite(path, image, photometric="rgb" if image.ndim == 3 else "minisblack", **options)
    return path


# ------------------------------------------------------------------ reading regions


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("colour,dtype", [(False, np.uint8), (True, np.uint16), (False, np.float32)])
def test_regions_equal_the_decoded_file(tmp_path, layout, colour, dtype):
    image = _images(1, colour, dtype, seed=1)[0]
    path = _write(tmp_path / "a.tif", image, layout)
    expected = image if image.ndim == 3 else image[:, :, None]
    rng = np.random.default_rng(2)
    with TiffRegions(path) as reader:
        assert reader.shape == expected.shape and reader.dtype == image.dtype
        # One gray plane in uncompressed strips is stored contiguously: memory-mapped.
        planes = "strips" if image.ndim == 3 else "contiguous"
        assert reader.layout == {"planes": planes}.get(layout, layout.split("-")[0])
        boxes = [(0, H, 0, W), (H - 1, H, W - 1, W), (5, 6, 0, W)]
        for _ in range(20):
            r0, c0 = rng.integers(0, H - 1), rng.integers(0, W - 1)
            boxes.append((r0, rng.integers(r0 + 1, H + 1), c0, rng.integers(c0 + 1, W + 1)))
        for r0, r1, c0, c1 in sorted(boxes):
            np.testing.assert_array_equal(reader.read(r0, r1, c0, c1), expected[r0:r1, c0:c1])


def test_opencv_reads_the_same_pixels_as_the_region_reader(tmp_path):
    # The in-memory path decodes with OpenCV: both readers must agree.
    for layout in ("contiguous", "strips-deflate", "tiles"):
        image = _images(1, True, np.uint8, seed=3)[0]
        path = _write(tmp_path / f"{layout}.tif", image, layout)
        with TiffRegions(path) as reader:
            np.testing.assert_array_equal(reader.read(0, H, 0, W), read_image(path))


def test_opencv_misreads_16_bit_rgb_in_separate_planes(tmp_path):
    # Why streamed fusion of such files can differ from the in-memory path: the region
    # reader gives the pixels written, OpenCV (the in-memory decoder) does not. If this
    # starts failing, OpenCV was fixed and the README's note can go.
    image = _images(1, True, np.uint16, seed=13)[0]
    path = _write(tmp_path / "planes.tif", image, "planes")
    with TiffRegions(path) as reader:
        np.testing.assert_array_equal(reader.read(0, H, 0, W), image)
    assert not np.array_equal(read_image(path), image)


def test_what_does_not_stream_says_why(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    tifffile.imwrite(tmp_path / "int32.tif", np.zeros((20, 30), np.int32))
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    assert "alpha" in stream_support(tmp_path / "rgba.tif") or "samples" in stream_support(
        tmp_path / "rgba.tif"
    )
    assert "int32" in stream_support(tmp_path / "int32.tif")
    assert "tifffile cannot parse" in stream_support(tmp_path / "junk.tif")
    assert "only TIFF" in stream_support(tmp_path / "a.png")
    with pytest.raises(NotStreamable):
        TiffRegions(tmp_path / "int32.tif")


def test_a_truncated_file_is_a_user_error_naming_it(tmp_path):
    path = _write(tmp_path / "a.tif", _images(1, False, np.uint8, seed=4)[0], "contiguous")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IFCNNError, match="a.tif: truncated TIFF"):
        TiffRegions(path)


# ------------------------------------------------------------------ writing tiles


@pytest.mark.parametrize("tile", [64, None])
@pytest.mark.parametrize("colour,dtype", [(False, np.uint8), (True, np.uint16)])
def test_writer_round_trips_through_opencv(tmp_path, tile, colour, dtype):
    image = _images(1, colour, dtype, seed=5)[0]
    grid = (64, 64)
    pieces = (
        ((top, left), image[top : top + 64, left : left + 64])
        for top in range(0, H, 64)
        for left in range(0, W, 64)
    )
    path = write_tiff(tmp_path / "out.tif", pieces, image.shape, image.dtype, grid, tile=tile)
    np.testing.assert_array_equal(read_image(path), image)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_tiled == (tile is not None)


def test_a_failing_producer_leaves_no_file_and_keeps_the_old_one(tmp_path):
    old = tmp_path / "out.tif"
    old.write_bytes(b"the user's earlier result")

    def pieces():
        yield (0, 0), np.zeros((64, 64), np.uint8)
        raise IFCNNError("src.tif: damaged")

    with pytest.raises(IFCNNError, match="damaged"):
        write_tiff(old, pieces(), (128, 64), np.uint8, (64, 64), tile=64)
    assert old.read_bytes() == b"the user's earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


def test_the_temporary_file_is_registered_for_removal_on_ctrl_c(tmp_path):
    # run_command's Ctrl-C handler removes every registered temporary (temporaries.remove_all).
    from ifcnn_jax.io import temporaries  # noqa: PLC0415 - lazy: only this test looks inside

    seen = []

    def pieces():
        seen.extend(p for p in temporaries._paths if ".out.tif." in p)
        assert seen and all(Path(p).exists() for p in seen)  # being written
        yield (0, 0), np.zeros((64, 64), np.uint8)

    write_tiff(tmp_path / "out.tif", pieces(), (64, 64), np.uint8, (64, 64), tile=64)
    assert seen and not any(Path(p).exists() for p in seen)
    assert not any(".out.tif." in p for p in temporaries._paths)


# ------------------------------------------------------------------ streamed == in memory


CASES = [
    # task, colour (True, False or "one": one colour source), dtype, layout, tile
    ("infrared", False, np.uint8, "strips-deflate", 64),
    ("medical", False, np.uint16, "tiles", 100),
    ("multifocus", True, np.uint8, "tiles-deflate", 128),
    ("multifocus", True, np.uint16, "planes", 96),
    ("multifocus", False, np.float32, "contiguous", 100),
    ("infrared", "one", np.uint8, "contiguous", 64),
    ("medical", False, np.uint8, "contiguous", None),
]


@pytest.mark.parametrize("task,colour,dtype,layout,tile", CASES)
def test_streamed_equals_in_memory_fusion(max_model, tmp_path, task, colour, dtype, layout, tile):
    if colour == "one":
        images = [_images(1, True, dtype, seed=6)[0], _images(1, False, dtype, seed=7)[0]]
    else:
        images = _images(3 if task == "medical" else 2, colour, dtype, seed=8)
    paths = [_write(tmp_path / f"s{i}.tif", im, layout) for i, im in enumerate(images)]
    # The reference fuses the arrays written. (The in-memory path decodes with OpenCV,
    # which gets 16-bit RGB in separate planes wrong; see the test below.)
    expected = recipes.fuse(max_model, images, task, tile=tile)
    seen = []
    out = fuse_tiff_files(
        max_model, paths, tmp_path / "out.tif", task, tile=tile, progress=lambda d, t: seen.append((d, t))
    )
    got = read_image(out)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert seen and seen[-1][0] == seen[-1][1] == len(seen)
    if tile is None:  # one tile: also the untiled in-memory fusion
        np.testing.assert_array_equal(got, recipes.fuse(max_model, images, task, tile=0))


@pytest.mark.parametrize("names", [("c01_1.tif", "c01_2.tif"), ("010_MR-T2.tif", "010_SPECT-Tc.tif")])
def test_release_medical_tiffs_stream_to_the_in_memory_result(release_dir, max_model, tmp_path, names):
    # The release's own scans: PackBits strips, gray, and a colour SPECT beside an MR.
    paths = [release_dir / "datasets" / "MDDataset" / name for name in names]
    assert all(stream_support(p) is None for p in paths)
    expected = recipes.fuse(max_model, [read_image(p) for p in paths], "medical", tile=96)
    out = fuse_tiff_files(max_model, paths, tmp_path / "out.tif", "medical", tile=96)
    np.testing.assert_array_equal(read_image(out), expected)


def test_streamed_float_result_is_the_untiled_one_to_float_rounding(max_model, tmp_path):
    # Against the untiled fusion (a different summation order in the network's blocks)
    # the agreement is that of tiled_apply: float rounding.
    images = _images(2, True, np.float32, seed=9)
    paths = [_write(tmp_path / f"s{i}.tif", im, "tiles") for i, im in enumerate(images)]
    out = fuse_tiff_files(max_model, paths, tmp_path / "out.tif", "multifocus", tile=64)
    untiled = recipes.fuse(max_model, [read_image(p) for p in paths], "multifocus", tile=0)
    assert max_abs_diff(read_image(out), untiled) <= 1e-5


def test_tiled_apply_takes_each_pixel_from_the_first_tile_covering_it(max_model):
    # The rule the streamed output grid relies on: with tiles of 64 on 100 columns the
    # second tile starts at 36; columns 36..63 come from the first tile.
    rng = np.random.default_rng(10)
    sources = rng.normal(size=(2, 1, 70, 100, 3)).astype(np.float32)
    tiled = np.asarray(forward(max_model, sources, tile=64))
    first = np.asarray(forward(max_model, sources[:, :, :, :74], tile=64))  # tiles at cols 0 and 10
    np.testing.assert_array_equal(tiled[:, :, :64], first[:, :, :64])


# ------------------------------------------------------------------ ifcnn-fuse


def _tiff_pair(tmp_path, dtype=np.uint8, layout="strips-deflate"):
    return [
        _write(tmp_path / f"src{i}.tif", im, layout) for i, im in enumerate(_images(2, False, dtype, seed=11))
    ]


def _cli(release_dir, *args):
    return fuse_cli.main(["--model", str(release_dir / "snapshots" / "IFCNN-MAX.pth"), "-q", *map(str, args)])


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])


def test_cli_streams_tiff_to_tiff(release_dir, max_model, tmp_path, monkeypatch, capsys):
    paths = _tiff_pair(tmp_path)
    expected = recipes.fuse(max_model, [read_image(p) for p in paths], "infrared", tile=64)

    def whole_image_read(path):
        raise AssertionError(f"the streamed path decoded {path} whole")

    monkeypatch.setattr(fuse_cli, "read_image", whole_image_read)
    out = tmp_path / "fused.tif"
    assert _cli(release_dir, "--task", "infrared", "--tile", "64", *paths, "-o", out) == 0
    assert capsys.readouterr().err == ""  # -q, and stderr is not a terminal: no bar
    np.testing.assert_array_equal(read_image(out), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.tif", "src0.tif", "src1.tif"]


def test_cli_refuses_to_overwrite_a_source(release_dir, tmp_path, capsys):
    paths = _tiff_pair(tmp_path)
    before = paths[1].read_bytes()
    assert _cli(release_dir, "--task", "infrared", *paths, "-o", paths[1]) == 2
    _one_line_error(capsys, "refusing to overwrite source image", "src1.tif")
    assert paths[1].read_bytes() == before


@pytest.mark.parametrize("damage", ["nan in the last rows", "corrupt last strip"])
def test_bad_input_part_way_gives_one_line_and_no_output(release_dir, tmp_path, capsys, damage):
    if damage == "nan in the last rows":
        images = _images(2, False, np.float32, seed=12)
        images[1][-3, 7] = np.nan
        paths = [_write(tmp_path / f"src{i}.tif", im, "contiguous") for i, im in enumerate(images)]
    else:
        paths = _tiff_pair(tmp_path)
        with tifffile.TiffFile(paths[1]) as tif:
            offset = int(tif.pages.first.dataoffsets[-1])
        data = bytearray(paths[1].read_bytes())
        data[offset : offset + 8] = b"\xff" * 8  # the last zlib stream no longer decodes
        paths[1].write_bytes(bytes(data))
    out = tmp_path / "fused.tif"
    out.write_bytes(b"an earlier result")
    assert _cli(release_dir, "--task", "infrared", "--tile", "64", *paths, "-o", out) == 2
    _one_line_error(capsys, str(paths[1]))
    assert out.read_bytes() == b"an earlier result"  # atomic: the old file, no part of the new
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


# ------------------------------------------------------------------ preflight and the choice of path


def test_streamed_memory_estimate_is_bounded_by_the_tile():
    small, tall = (streamed_fusion_bytes(h, 16384, 2, 1024) for h in (16384, 1 << 20))
    assert small == tall  # the height does not count
    gray = {"channels": 1, "bytes_per_sample": 1}
    assert streamed_fusion_bytes(32768, 32768, 2, 1024, **gray) < 1.5 * (1 << 30)  # the 2 GB target
    assert streamed_fusion_bytes(32768, 32768, 2, 1024) < 3 << 30  # float32 RGB: the largest samples
    assert fusion_bytes(32768, 32768, 2) > 60 << 30


def test_a_huge_tiff_passes_the_streamed_check_only(tmp_path, monkeypatch):
    # Sparse files declaring 32768 x 32768 pixels: nothing is fused, only headers read.
    paths = []
    for i in range(2):
        mapped = tifffile.memmap(tmp_path / f"big{i}.tif", shape=(32768, 32768), dtype=np.uint8)
        del mapped
        paths.append(tmp_path / f"big{i}.tif")
    monkeypatch.setattr("ifcnn_jax.preflight.available_memory", lambda: 3 << 30)
    with pytest.raises(IFCNNError, match="big0.tif: fusing 2 sources of 32768x32768"):
        check_sources(paths)
    plan = plan_streaming(paths, tmp_path / "out.tif", "infrared")
    assert plan is not None and plan.to_tiff and plan.tile == 1024
    check_sources(paths, streamed_tile=plan.tile)
    # A PNG output is streamed only when the in-memory fusion would not fit.
    assert plan_streaming(paths, tmp_path / "out.png", "infrared", available=3 << 30).to_tiff is False
    assert plan_streaming(paths, tmp_path / "out.png", "infrared", available=1 << 50) is None
    for task, options in [
        ("exposure", {}),
        ("multifocus", {"decision_map": True}),
        ("infrared", {"tile": 0}),
    ]:
        assert plan_streaming(paths, tmp_path / "out.tif", task, **options) is None


def test_a_result_larger_than_the_free_disk_is_refused_before_fusing(
    release_dir, full_disk, tmp_path, capsys
):
    # 600 x 600 gray 8-bit takes 352 KiB; the file system has 256 KiB.
    rng = np.random.default_rng(14)
    paths = [
        _write(tmp_path / f"src{i}.tif", rng.integers(0, 256, (600, 600), dtype=np.uint8), "contiguous")
        for i in range(2)
    ]
    out = full_disk / "fused.tif"
    assert _cli(release_dir, "--task", "infrared", *paths, "-o", out) == 2
    _one_line_error(capsys, str(out), "free on its disk")
    assert list(full_disk.iterdir()) == []
