"""``ifcnn-fuse``: fuse images from the command line.

    ifcnn-fuse --task multifocus --model checkpoints/ifcnn-max a.jpg b.jpg -o fused.png
    ifcnn-fuse --task exposure --model checkpoints --batch sequences/ -o fused/

``--model`` is a checkpoint directory, one of the authors' released ``.pth`` files
(read without PyTorch), or a folder of either (``ifcnn-max/``, ``ifcnn-mean/``... or
``IFCNN-MAX.pth``, ``IFCNN-MEAN.pth``...) from which the demo's model for the task is
taken: MAX for multifocus, infrared and medical; MEAN for exposure.

Batch mode fuses every group in a folder: each sub-folder with two or more images is
a group (an exposure sequence, say), and files directly in the folder are grouped by
their name without its last ``-``/``_`` part (``lytro-01-A.jpg`` and ``lytro-01-B.jpg``
form ``lytro-01``; ``Camp_Vis.png`` and ``Camp_IR.png`` form ``Camp``). Each result
is written to ``OUT_DIR/<group>.png``.

User errors (unreadable files, size mismatches, ...) print one line and exit with 2;
in batch mode a bad group is reported and skipped, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

from ifcnn_jax.cli.common import run_command
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import (
    IMAGE_SUFFIXES,
    is_image_path,
    read_image,
    refuse_overwriting,
    write_image,
)
from ifcnn_jax.io.model_files import resolve_model_dir
from ifcnn_jax.preflight import check_sources
from ifcnn_jax.tasks import TASKS

_GROUP_SUFFIX = re.compile(r"^(?P<group>.+?)[-_ ][^-_ ]+$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ifcnn-fuse",
        description="Fuse registered images with IFCNN.",
        epilog="Examples:\n  ifcnn-fuse --task multifocus --model checkpoints/ifcnn-max "
        "a.jpg b.jpg -o fused.png\n  ifcnn-fuse --task exposure --model checkpoints "
        "--batch sequences/ -o fused/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sources", nargs="*", metavar="SRC", help="two or more source images")
    parser.add_argument("--task", required=True, choices=TASKS, help="fusion recipe")
    parser.add_argument(
        "--model",
        required=True,
        metavar="MODEL",
        help="checkpoint directory, released .pth file, or a folder of them "
        "(the task's default model is picked: MAX, or MEAN for exposure)",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output image (single mode) or output folder (--batch)",
    )
    parser.add_argument("--batch", metavar="DIR", help="fuse every group of images in DIR")
    parser.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="SIZE",
        help="fuse in tiles of SIZE pixels (default: automatic for very large images; 0 disables tiling)",
    )
    parser.add_argument(
        "--format",
        default="png",
        choices=("png", "tif", "jpg", "bmp"),
        help="image type of batch outputs (default png)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return parser


def group_folder(folder: Path) -> dict[str, list[Path]]:
    """Image groups in ``folder``: one per sub-folder, and files grouped by name stem."""
    if not folder.is_dir():
        raise IFCNNError(f"{folder}: not a folder")
    groups: dict[str, list[Path]] = defaultdict(list)
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            images = sorted(
                p for p in entry.iterdir() if p.is_file() and is_image_path(p) and not p.name.startswith(".")
            )
            if images:
                groups[entry.name].extend(images)
        elif entry.is_file() and is_image_path(entry):
            match = _GROUP_SUFFIX.match(entry.stem)
            groups[match.group("group") if match else entry.stem].append(entry)
    if not groups:
        raise IFCNNError(f"{folder}: no images found (looked for {' '.join(IMAGE_SUFFIXES)})")
    return dict(groups)


def _refuse_overwriting_sources(output: Path, sources: list[Path]) -> None:
    refuse_overwriting(output, sources, advice=" with the fused result")


def fuse_files(model, sources: list[Path], output: Path, task: str, tile: int | None) -> None:
    """Reads, fuses and atomically writes one group."""
    from ifcnn_jax.recipes import fuse  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it

    _refuse_overwriting_sources(output, sources)
    check_sources(sources)
    images = [read_image(p) for p in sources]
    fused = fuse(model, images, task, tile=tile, names=[str(p) for p in sources])
    write_image(output, fused)


def _load_model(model_arg: str, task: str):
    from ifcnn_jax.model import load  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it

    return load(str(resolve_model_dir(model_arg, task)))


def _run_single(args) -> int:
    if len(args.sources) < 2:
        raise IFCNNError(
            f"fusion needs at least 2 sources, got {len(args.sources)}"
            + (f" ({args.sources[0]})" if args.sources else "")
        )
    output = Path(args.output)
    if output.is_dir():
        raise IFCNNError(f"{output} is a folder; give an output file name such as {output / 'fused.png'}")
    if output.suffix.lower() not in IMAGE_SUFFIXES:
        raise IFCNNError(
            f"{output}: unknown image type {output.suffix or '(no suffix)'}; use .png, .tif or .jpg"
        )
    sources = [Path(s) for s in args.sources]
    for src in sources:  # Check every file before loading the model (slow) for early errors.
        if not src.is_file():
            raise IFCNNError(f"{src}: no such file")
    _refuse_overwriting_sources(output, sources)
    if not output.parent.is_dir() and str(output.parent):
        raise IFCNNError(f"{output}: output folder {output.parent} does not exist")
    check_sources(sources)
    model = _load_model(args.model, args.task)
    start = time.perf_counter()
    fuse_files(model, sources, output, args.task, args.tile)
    if not args.quiet:
        print(
            f"wrote {output} ({args.task}, {model.fuse_rule.upper()} model, "
            f"{time.perf_counter() - start:.2f} s)"
        )
    return 0


def _run_batch(args) -> int:
    from tqdm import tqdm  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it

    if args.sources:
        raise IFCNNError("give either source images or --batch DIR, not both")
    batch_dir = Path(args.batch)
    groups = group_folder(batch_dir)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise IFCNNError(f"{out_dir}: exists and is not a folder")
    # No output may land on any file of the input tree (another group's source, a
    # ground truth, anything): refuse before fusing anything.
    input_files = {p.resolve() for p in batch_dir.rglob("*") if p.is_file()}
    for name in groups:
        refuse_overwriting(
            out_dir / f"{name}.{args.format}",
            input_files,
            what="input file",
            advice=f" of {batch_dir}; write the results to another folder (-o)",
        )
    model = _load_model(args.model, args.task)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    with tqdm(sorted(groups.items()), desc="fusing", unit="group", disable=args.quiet) as bar:
        for name, paths in bar:
            bar.set_postfix_str(name)
            try:
                if len(paths) < 2:
                    raise IFCNNError(f"group {name!r} has only one image ({paths[0]})")
                fuse_files(model, paths, out_dir / f"{name}.{args.format}", args.task, args.tile)
            except IFCNNError as exc:
                failures += 1
                tqdm.write(f"error: {exc}", file=sys.stderr)
    if not args.quiet:
        print(f"fused {len(groups) - failures} of {len(groups)} groups into {out_dir}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.tile is not None and args.tile < 0:
            raise IFCNNError(f"--tile must be 0 (off) or a positive size, got {args.tile}")
        return _run_batch(args) if args.batch else _run_single(args)

    return run_command(body)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
