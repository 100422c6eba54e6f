"""``ifcnn-fuse``: fuse images from the command line.

    ifcnn-fuse --task multifocus --model checkpoints/ifcnn-max a.jpg b.jpg -o fused.png
    ifcnn-fuse --task exposure --model checkpoints --batch sequences/ -o fused/
    ifcnn-fuse --task multifocus --model checkpoints --align homography a.jpg b.jpg -o f.png

``--model`` is a checkpoint directory, one of the authors' released ``.pth`` files
(read without PyTorch), or a folder of either (``ifcnn-max/``, ``ifcnn-mean/``... or
``IFCNN-MAX.pth``, ``IFCNN-MEAN.pth``...) from which the demo's model for the task is
taken: MAX for multifocus, infrared and medical; MEAN for exposure.

Batch mode fuses every group in a folder: each sub-folder with two or more images is
a group (an exposure sequence, say), and files directly in the folder are grouped by
their name without its last ``-``/``_`` part (``lytro-01-A.jpg`` and ``lytro-01-B.jpg``
form ``lytro-01``; ``Camp_Vis.png`` and ``Camp_IR.png`` form ``Camp``). Each result
is written to ``OUT_DIR/<group>.png``.

``--align`` registers hand-held shots first (multifocus and exposure only): every
source is registered to the reference (``--align-reference``, default the first) with
ECC coarse to fine; see :mod:`ifcnn_jax.align`. Areas a source does not cover are
filled from the reference unless ``--crop`` crops to the area all sources share.
``--json FILE`` writes the estimated 3x3 transforms.

User errors (unreadable files, size mismatches, a failed registration, ...) print one
line and exit with 2; in batch mode a bad group is reported and skipped, and the exit
status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

from ifcnn_jax.align import ALIGNABLE_TASKS, METHODS
from ifcnn_jax.cli.common import run_command
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import (
    IMAGE_SUFFIXES,
    is_image_path,
    read_image,
    refuse_overwriting,
    write_bytes_atomic,
    write_image,
)
from ifcnn_jax.io.model_files import resolve_model_dir
from ifcnn_jax.preflight import check_sources
from ifcnn_jax.tasks import TASKS

_GROUP_SUFFIX = re.compile(r"^(?P<group>.+?)[-_ ][^-_ ]+$")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ifcnn-fuse",
        description="Fuse images with IFCNN (registered, or hand-held with --align).",
        epilog="Examples:\n  ifcnn-fuse --task multifocus --model checkpoints/ifcnn-max "
        "a.jpg b.jpg -o fused.png\n  ifcnn-fuse --task exposure --model checkpoints "
        "--batch sequences/ -o fused/\n  ifcnn-fuse --task multifocus --model checkpoints "
        "--align homography --json transforms.json a.jpg b.jpg -o fused.png",
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
    parser.add_argument(
        "--align",
        default="off",
        choices=METHODS,
        help="register hand-held shots before fusing (multifocus and exposure only): every source "
        "is registered to the reference with OpenCV's ECC, coarse to fine, with this motion model; "
        "a failed or implausible registration is an error (default off: sources are registered)",
    )
    parser.add_argument(
        "--align-reference",
        type=int,
        default=0,
        metavar="K",
        help="0-based index of the source the others are registered to, in the order given "
        "(--batch: in name order); default 0, the first. For exposure brackets the middle "
        "exposure registers best",
    )
    parser.add_argument(
        "--crop",
        action="store_true",
        help="with --align: crop the result to the largest rectangle all sources cover "
        "(default: keep the reference's size and fill uncovered areas from the reference)",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="write the alignment report to FILE (JSON): per source a 3x3 matrix mapping "
        "reference pixels to source pixels (the reference's is the identity), ECC's correlation, "
        "and the shared area; in --batch, one report per group",
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


def fuse_files(
    model,
    sources: list[Path],
    output: Path,
    task: str,
    tile: int | None,
    align: str = "off",
    align_reference: int = 0,
    crop: bool = False,
) -> dict:
    """Reads, (registers,) fuses and atomically writes one group; returns its
    alignment report (identity transforms when ``align`` is ``off``)."""
    from ifcnn_jax.align import align as register  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it
    from ifcnn_jax.recipes import fuse_with_alignment  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it

    _refuse_overwriting_sources(output, sources)
    check_sources(sources)
    images = [read_image(p) for p in sources]
    names = [str(p) for p in sources]
    fused, alignment = fuse_with_alignment(
        model, images, task, tile=tile, names=names, align=align, align_reference=align_reference, crop=crop
    )
    write_image(output, fused)
    if alignment is None:
        alignment = register(images, "off", align_reference, names=names)
    return {"output": str(output), **alignment.to_dict(names)}


def _check_alignment_args(args) -> None:
    """Early errors for the alignment options (before the model is loaded)."""
    if args.align != "off" and args.task not in ALIGNABLE_TASKS:
        raise IFCNNError(
            f"--align is for {' and '.join(ALIGNABLE_TASKS)} sources only, not {args.task}: registration "
            "across modalities (infrared/visible, medical) is not supported; register them beforehand"
        )
    if args.crop and args.align == "off":
        raise IFCNNError("--crop applies to aligned sources only: give --align METHOD")
    if args.align_reference < 0:
        raise IFCNNError(f"--align-reference must be a 0-based source index, got {args.align_reference}")


def _write_report(path: Path, report: dict) -> None:
    write_bytes_atomic(path, (json.dumps(report, indent=2) + "\n").encode())


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
    if args.align_reference >= len(sources):
        raise IFCNNError(
            f"--align-reference {args.align_reference} is out of range: there are {len(sources)} sources "
            f"(0 to {len(sources) - 1})"
        )
    report_path = _report_path(args, [*sources, output])
    check_sources(sources)
    model = _load_model(args.model, args.task)
    start = time.perf_counter()
    report = fuse_files(
        model, sources, output, args.task, args.tile, args.align, args.align_reference, args.crop
    )
    if report_path is not None:
        _write_report(report_path, report)
    if not args.quiet:
        aligned = (
            f", {args.align} registration to {sources[args.align_reference]}" if args.align != "off" else ""
        )
        print(
            f"wrote {output} ({args.task}, {model.fuse_rule.upper()} model{aligned}, "
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
    report_path = _report_path(args, list(input_files))
    model = _load_model(args.model, args.task)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    reports: dict[str, dict] = {}
    with tqdm(sorted(groups.items()), desc="fusing", unit="group", disable=args.quiet) as bar:
        for name, paths in bar:
            bar.set_postfix_str(name)
            try:
                if len(paths) < 2:
                    raise IFCNNError(f"group {name!r} has only one image ({paths[0]})")
                if args.align_reference >= len(paths):
                    raise IFCNNError(
                        f"group {name!r}: --align-reference {args.align_reference} is out of range: "
                        f"it has {len(paths)} images (0 to {len(paths) - 1})"
                    )
                reports[name] = fuse_files(
                    model,
                    paths,
                    out_dir / f"{name}.{args.format}",
                    args.task,
                    args.tile,
                    args.align,
                    args.align_reference,
                    args.crop,
                )
            except IFCNNError as exc:
                failures += 1
                reports[name] = {"error": " ".join(str(exc).splitlines())}
                tqdm.write(f"error: {exc}", file=sys.stderr)
    if report_path is not None:
        _write_report(report_path, {"groups": reports})
    if not args.quiet:
        print(f"fused {len(groups) - failures} of {len(groups)} groups into {out_dir}")
    return 1 if failures else 0


def _report_path(args, inputs: list[Path]) -> Path | None:
    """The --json file, checked: not a folder, not one of the inputs, in an existing folder."""
    if not args.json:
        return None
    path = Path(args.json)
    if path.is_dir():
        raise IFCNNError(f"--json {path}: is a folder; give a file name such as {path / 'alignment.json'}")
    refuse_overwriting(path, inputs, what="input file", advice=" with the alignment report")
    if str(path.parent) and not path.parent.is_dir():
        raise IFCNNError(f"--json {path}: folder {path.parent} does not exist")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.tile is not None and args.tile < 0:
            raise IFCNNError(f"--tile must be 0 (off) or a positive size, got {args.tile}")
        _check_alignment_args(args)
        return _run_batch(args) if args.batch else _run_single(args)

    return run_command(body)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
