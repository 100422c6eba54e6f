"""``ifcnn-synth``: write a synthetic multi-focus dataset to disk.

    ifcnn-synth --folder PHOTOS --out DATASET --count 1000
    ifcnn-synth --tfds nyu_depth_v2 --split train --out DATASET --count 5000
    ifcnn-synth --skimage --out DATASET --count 20 --crop-size 256

The layout of the dataset is described in ``ifcnn_jax.data.dataset``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ifcnn_jax.cli.common import run_command
from ifcnn_jax.data import synthesis
from ifcnn_jax.data.dataset import write_dataset
from ifcnn_jax.data.photos import (
    FolderCollection,
    PhotoCollection,
    SkimageCollection,
    TfdsCollection,
)
from ifcnn_jax.errors import IFCNNError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ifcnn-synth",
        description="Write a synthetic multi-focus dataset (sources, ground truth, focus maps) "
        "made from sharp photos, as IFCNN's training data is made.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", help="folder of sharp photos")
    source.add_argument("--tfds", metavar="NAME", help="TensorFlow Datasets RGB-D set, e.g. nyu_depth_v2")
    source.add_argument("--skimage", action="store_true", help="the photos bundled with scikit-image")
    parser.add_argument(
        "--depth-folder", help="with --folder: depth maps NAME.npy or NAME.png (larger = farther)"
    )
    parser.add_argument("--split", default="train", help="with --tfds: the split (default train)")
    parser.add_argument("--data-dir", help="with --tfds: the TFDS data directory")
    parser.add_argument("--out", required=True, help="output folder (new or empty)")
    parser.add_argument("--count", type=int, required=True, help="number of examples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop-size", type=int, default=256, help="square crop side; 0 = whole photos")
    parser.add_argument("--num-sources", type=int, default=2, help="focus planes per example (>= 2)")
    parser.add_argument("--radius-min", type=int, default=2, help="smallest blur radius kr (pixels)")
    parser.add_argument("--radius-max", type=int, default=8, help="largest blur radius kr (pixels)")
    parser.add_argument("--focus-map", default="auto", choices=("auto",) + synthesis.FOCUS_MAP_KINDS)
    parser.add_argument("--no-flip", action="store_true", help="no random left-right mirroring")
    parser.add_argument("--force", action="store_true", help="write into a non-empty output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 on bad input)."""
    args = _parser().parse_args(argv)

    def body() -> int:
        if args.crop_size < 0:
            raise IFCNNError(f"--crop-size must be >= 0, got {args.crop_size}")
        if args.num_sources < 2:
            raise IFCNNError(f"--num-sources must be >= 2, got {args.num_sources}")
        if args.folder:
            collection: PhotoCollection = FolderCollection(args.folder, args.depth_folder)
        elif args.tfds:
            collection = TfdsCollection(args.tfds, args.split, data_dir=args.data_dir)
        else:
            collection = SkimageCollection()
        manifest = write_dataset(
            collection,
            args.out,
            count=args.count,
            seed=args.seed,
            crop_size=args.crop_size or None,
            num_sources=args.num_sources,
            radius_range=(args.radius_min, args.radius_max),
            focus_map=args.focus_map,
            flip=not args.no_flip,
            force=args.force,
            progress=not args.quiet,
        )
        print(f"wrote {args.count} examples and {manifest}")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
