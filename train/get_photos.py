"""Fetch the offline photo collection for multi-focus training and its held-out test set.

    python -m train.get_photos --out photos            # fetches what it needs (apt, pip)
    python -m train.get_photos --out photos --debs DIR # .deb files already downloaded

Every photo comes from a package registry, so the collection can be rebuilt offline
from a package mirror:

* scikit-image's bundled photos (``skimage.data``, installed with this project);
* scikit-learn's two sample images (``china.jpg``, ``flower.jpg``): read from an
  installed scikit-learn, or from its wheel fetched with ``pip download --no-deps``
  (nothing is installed);
* Debian's ``plasma-workspace-wallpapers`` and ``gnome-backgrounds``: fetched with
  ``apt-get download`` and unpacked with ``dpkg -x`` (nothing is installed). From each
  KDE wallpaper the largest landscape picture is used; from GNOME the ``.webp``
  pictures (its ``.svg`` drawings are skipped).

Photos are written as PNG, downscaled with area averaging (never enlarged) so that the
longer side is at most each of ``--train-sides`` for training (one file per size,
``NAME@SIDE.png``) and at most ``--heldout-side`` for the held-out set.

Split (fixed; change it only together with the notes that quote its scores):
``HELD_OUT`` lists the photos that are never trained on. They are the validation set
of ``train/configs/multifocus.py`` and the ground-truth test set of
``train/score_heldout.py``. Everything else goes to ``OUT/train``. ``OUT/photos.json``
records each file's origin and split.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from ifcnn_jax.data.photos import SKIMAGE_PHOTOS

# Never trained on. Chosen before any training for variety: saturated colours
# (FallenLeaf, ColorfulCups, flower), foliage (Path), a sunset with fine detail
# (EveningGlow), sky (Kite), fur and a still life (chelsea, coffee).
HELD_OUT: tuple[str, ...] = (
    "kde-FallenLeaf",
    "kde-Path",
    "kde-EveningGlow",
    "kde-ColorfulCups",
    "kde-Kite",
    "skimage-chelsea",
    "skimage-coffee",
    "sklearn-flower",
)

# scikit-image photos (gray ones are used as RGB): the package's list, without the
# stereo pair's two views, which are loaded differently and would be near-duplicates.
SKIMAGE_NAMES = tuple(name for name in SKIMAGE_PHOTOS if not name.startswith("motorcycle"))
DEBIAN_PACKAGES = ("plasma-workspace-wallpapers", "gnome-backgrounds")


def _skimage_photos():

    for name in SKIMAGE_NAMES:
        image = np.asarray(getattr(skimage.data, name)())
        yield f"skimage-{name}", image, f"scikit-image skimage.data.{name}()"
    left, right, _ = skimage.data.stereo_motorcycle()
    yield "skimage-motorcycle_left", left, "scikit-image skimage.data.stereo_motorcycle()[0]"
    yield "skimage-motorcycle_right", right, "scikit-image skimage.data.stereo_motorcycle()[1]"


def _decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("cannot decode")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _sklearn_photos(workdir: Path):
    names = ("china.jpg", "flower.jpg")
    try:
        from sklearn.datasets import load_sample_images  # noqa: PLC0415 - lazy: optional; the wheel is read otherwise

        images = load_sample_images()
        by_name = {Path(f).name: img for f, img in zip(images.filenames, images.images)}
        for name in names:
            yield f"sklearn-{Path(name).stem}", by_name[name], f"scikit-learn load_sample_images() {name}"
        return
    except ImportError:
        pass
    wheel_dir = workdir / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "-d",
            str(wheel_dir),
            "scikit-learn",
        ],
        check=True,
    )
    wheel = min(wheel_dir.glob("scikit_learn-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        for name in names:
            data = archive.read(f"sklearn/datasets/images/{name}")
            yield f"sklearn-{Path(name).stem}", _decode(data), f"{wheel.name}: sklearn/datasets/images/{name}"


def _debian_photos(workdir: Path, debs: Path | None):
    if debs is None:
        debs = workdir / "debs"
        debs.mkdir()
        subprocess.run(["apt-get", "download", *DEBIAN_PACKAGES], cwd=debs, check=True)
    root = workdir / "root"
    for deb in sorted(debs.glob("*.deb")):
        if any(deb.name.startswith(p + "_") for p in DEBIAN_PACKAGES):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    wallpapers = root / "usr/share/wallpapers"
    for folder in sorted(wallpapers.iterdir()) if wallpapers.is_dir() else []:
        for variant in ("images", "images_dark"):
            candidates = []
            for path in (folder / "contents" / variant).glob("*"):
                try:
                    width, height = (int(v) for v in path.stem.split("x"))
                except ValueError:
                    continue
                candidates.append((width >= height, width * height, path))
            if not candidates:
                continue
            path = max(candidates)[2]
            suffix = "" if variant == "images" else "-dark"
            yield (
                f"kde-{folder.name}{suffix}",
                _decode(path.read_bytes()),
                f"Debian plasma-workspace-wallpapers {path.relative_to(root)}",
            )
    for path in sorted((root / "usr/share/backgrounds/gnome").glob("*.webp")):
        yield (
            f"gnome-{path.stem}",
            _decode(path.read_bytes()),
            f"Debian gnome-backgrounds {path.relative_to(root)}",
        )


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image.astype(np.float64) * (255.0 if image.max() <= 1.0 else 1.0)), 0, 255)
        image = image.astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    """Area-averaged downscale so that the longer side is at most ``max_side`` (never enlarges)."""
    height, width = image.shape[:2]
    factor = max_side / max(height, width)
    if factor >= 1:
        return image
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"cannot encode {path}")
    path.write_bytes(data.tobytes())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.get_photos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (gets train/, heldout/, photos.json)")
    parser.add_argument("--debs", help="folder holding the two .deb files (default: apt-get download)")
    parser.add_argument(
        "--train-sides",
        default="1024,512",
        help="longer-side limits of the training copies (comma-separated)",
    )
    parser.add_argument("--heldout-side", type=int, default=640, help="longer-side limit of held-out photos")
    parser.add_argument("--min-side", type=int, default=256, help="skip copies whose shorter side is smaller")
    args = parser.parse_args(argv)
    out = Path(args.out)
    train_dir, heldout_dir = out / "train", out / "heldout"
    for d in (train_dir, heldout_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    sides = [int(s) for s in args.train_sides.split(",") if s]
    records, seen = [], set()
    with tempfile.TemporaryDirectory() as tmp:
        sources = [
            _skimage_photos(),
            _sklearn_photos(Path(tmp)),
            _debian_photos(Path(tmp), Path(args.debs) if args.debs else None),
        ]
        for generator in sources:
            for name, image, origin in generator:
                image = _rgb(image)
                seen.add(name)
                held = name in HELD_OUT
                targets = (
                    [(heldout_dir / f"{name}.png", args.heldout_side)]
                    if held
                    else [(train_dir / f"{name}@{side}.png", side) for side in sides]
                )
                written = set()
                for path, side in targets:
                    small = downscale(image, side)
                    if min(small.shape[:2]) < args.min_side or small.shape in written:
                        continue  # too small, or the same size as a copy already written
                    written.add(small.shape)
                    _write_png(path, small)
                    records.append(
                        {
                            "file": str(path.relative_to(out)),
                            "split": "heldout" if held else "train",
                            "origin": origin,
                            "size": list(small.shape[:2]),
                        }
                    )
    missing = sorted(set(HELD_OUT) - seen)
    if missing:
        raise SystemExit(f"held-out photos not found: {missing}")
    (out / "photos.json").write_text(json.dumps({"held_out": list(HELD_OUT), "files": records}, indent=1))
    counts = {s: sum(r["split"] == s for r in records) for s in ("train", "heldout")}
    print(f"wrote {counts['train']} training files and {counts['heldout']} held-out photos to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
