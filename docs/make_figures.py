"""Makes the README's picture: multi-focus pairs synthesised from photos that ship with
scikit-image, fused by the authors' released IFCNN-MAX.

    python docs/make_figures.py [--release-dir ../shared/ifcnn-release]

Writes docs/images/multifocus_example.jpg. The photos are public-domain images bundled
with scikit-image, so the picture can live in the repository; the release files
themselves stay out of it.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

import ifcnn_jax
from ifcnn_jax import metrics
from ifcnn_jax.data.synthesis import synthesize_example
from ifcnn_jax.figures import figure_png, thumbnail
from ifcnn_jax.io.atomic import write_bytes_atomic
from ifcnn_jax.io.images import to_8bit

REPO = Path(__file__).resolve().parents[1]

PHOTOS = (("astronaut", 7), ("coffee", 3), ("chelsea", 11))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--release-dir",
        default=os.environ.get("IFCNN_RELEASE_DIR", str(REPO.parent / "shared" / "ifcnn-release")),
    )
    parser.add_argument("--out", default=str(REPO / "docs" / "images" / "multifocus_example.jpg"))
    args = parser.parse_args()

    model = ifcnn_jax.load(str(Path(args.release_dir) / "snapshots" / "IFCNN-MAX.pth"))
    rows = []
    for name, seed in PHOTOS:
        photo = getattr(skimage.data, name)()
        example = synthesize_example(
            photo,
            rng=np.random.default_rng(seed),
            crop_size=256,
            radius_range=(4, 6),
            focus_map="shapes",
            flip=False,
        )
        sources = [to_8bit(s) for s in example.sources]
        target = to_8bit(example.target)
        fused = ifcnn_jax.fuse(model, sources, task="multifocus")
        average = to_8bit(np.mean(example.sources, axis=0))
        psnr = {
            label: float(metrics.evaluate(sources, image, reference=target, names=["PSNR_ref"])["PSNR_ref"])
            for label, image in (("fused", fused), ("average", average))
        }
        rows.append(
            (
                f"{name}: synthetic defocus, kr 4-6",
                [
                    ("source A", thumbnail(sources[0], 200)),
                    ("source B", thumbnail(sources[1], 200)),
                    (f"average ({psnr['average']:.1f} dB)", thumbnail(average, 200)),
                    (f"IFCNN-MAX ({psnr['fused']:.1f} dB)", thumbnail(fused, 200)),
                    ("ground truth", thumbnail(target, 200)),
                ],
            )
        )

    # JPEG keeps the picture small enough for the repository.
    buffer = io.BytesIO()
    Image.open(io.BytesIO(figure_png(rows))).save(buffer, format="JPEG", quality=88)
    write_bytes_atomic(args.out, buffer.getvalue())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
