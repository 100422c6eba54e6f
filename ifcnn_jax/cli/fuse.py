"""``ifcnn-fuse``: fuse images from the command line.

    ifcnn-fuse --task multifocus a.jpg b.jpg -o fused.png            # IFCNN-MAX, by name
    ifcnn-fuse --task exposure --model IFCNN-MEAN --batch sequences/ -o fused/
    ifcnn-fuse --task multifocus --batch lytro/ -o fused/ --dry-run  # list the groups only
    ifcnn-fuse --task multifocus --align homography a.jpg b.jpg -o f.png  # hand-held shots
    ifcnn-fuse --task multifocus --decision-map --focus-map map.png a.jpg b.jpg -o f.png

``--model`` is a released model's name (``IFCNN-MAX``, ``IFCNN-SUM``, ``IFCNN-MEAN``:
downloaded once into the user cache and checked against its SHA-256), a checkpoint
directory, one of the authors' ``.pth`` files (read without PyTorch), or a folder of
either (``ifcnn-max/``... or ``IFCNN-MAX.pth``...) from which the demo's model for the
task is taken. Without ``--model`` the demo's released model for the task is used:
MAX for multifocus, infrared and medical; MEAN for exposure.

Batch mode fuses every group of a folder, found by the one grouping rule of
``ifcnn_jax.io.testsets`` (shared with ``ifcnn-eval`` and training's real-pair
evaluation): ``NAME-A/-B/-C`` sets, ``NAME_Vis/_IR`` pairs, ``NAME_1/_2`` series,
sub-folders of one sequence each, or a ``manifest.json``/``.csv`` (``ifcnn-synth``
output: ground truths and focus maps are not sources). Each result is written to
``OUT_DIR/<group>.<format>`` (a group in a sub-folder keeps it: ``Triple Series/lytro-01.png``).
No output may replace any file of the input folder: such a run is refused before any
fusion.

``--align`` registers hand-held shots first (multifocus and exposure only): every
source is registered to the reference (``--align-reference``, default the first) with
ECC coarse to fine; see :mod:`ifcnn_jax.align`. Areas a source does not cover are
filled from the reference unless ``--crop`` crops to the area all sources share.
``--json FILE`` writes the estimated 3x3 transforms. ``--decision-map`` (multifocus)
composes the result from the sources' own pixels by a cleaned in-focus map
(:mod:`ifcnn_jax.decision_map`); ``--focus-map FILE`` writes that map.

TIFF sources fused into a TIFF output are streamed (:mod:`ifcnn_jax.streaming`): read
region by region and written tile by tile, in memory bounded by the tile size, with
the same result as the in-memory path (also chosen when a non-TIFF output would not
fit in memory otherwise). Exposure, ``--decision-map``, ``--align`` and ``--tile 0``
stay in memory.

Everything that can be checked before the work is: the output, the model file, the
sources' headers (sizes, read without decoding) and the memory a fusion needs.
Compiled programs are kept in a persistent cache (``--compilation-cache``), so
repeated runs skip compiling; an untiled fusion's program is also kept there as a
serialized executable (``ifcnn-aot/``, :mod:`ifcnn_jax.aot`), so that a repeated run
neither traces nor imports JAX. User errors (unreadable files, size mismatches, a failed
registration, ...) print one line and exit with 2; in batch mode a bad group is
reported and skipped, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ifcnn_jax.align import ALIGNABLE_TASKS, METHODS
from ifcnn_jax.cli.common import (
    add_compilation_cache_argument,
    enable_compilation_cache,
    progress_enabled,
    run_command,
)
from ifcnn_jax.decision_map import focus_map_image
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import (
    IMAGE_SUFFIXES,
    read_image,
    refuse_overwriting,
    write_bytes_atomic,
    write_image,
)
from ifcnn_jax.io.model_files import resolve_model_dir
from ifcnn_jax.io.testsets import ImageGroup, find_groups
from ifcnn_jax.io.tiff_stream import is_tiff_path, stream_support
from ifcnn_jax.preflight import check_disk_space, check_sources
from ifcnn_jax.tasks import TASKS

if TYPE_CHECKING:
    from ifcnn_jax.streaming import StreamPlan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ifcnn-fuse",
        description="Fuse images with IFCNN (registered, or hand-held with --align).",
        epilog="Examples:\n  ifcnn-fuse --task multifocus a.jpg b.jpg -o fused.png\n"
        "  ifcnn-fuse --task exposure --model IFCNN-MEAN --batch sequences/ -o fused/\n"
        "  ifcnn-fuse --task multifocus --align homography --json transforms.json a.jpg b.jpg -o fused.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sources", nargs="*", metavar="SRC", help="two or more source images")
    parser.add_argument("--task", required=True, choices=TASKS, help="fusion recipe")
    parser.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="IFCNN-MAX|IFCNN-SUM|IFCNN-MEAN (downloaded once), a checkpoint directory, a .pth "
        "file, or a folder of them (default: the demo's released model for the task)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output image (single mode) or output folder (--batch)",
    )
    parser.add_argument("--batch", metavar="DIR", help="fuse every group of images in DIR")
    parser.add_argument(
        "--dry-run", action="store_true", help="with --batch: list the groups and their sources, fuse nothing"
    )
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
        "--decision-map",
        action="store_true",
        help="multifocus: compose the result from the sources' own pixels, weighted by a cleaned "
        "map of which source is in focus (decided from the network's output)",
    )
    parser.add_argument(
        "--focus-map",
        metavar="FILE",
        help="with --decision-map (single mode): also write the map as a gray image "
        "(source k -> k * 255 // (N - 1))",
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
    add_compilation_cache_argument(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return parser


def batch_groups(folder: Path, task: str) -> tuple[list[ImageGroup], list[Path]]:
    """The groups ``--batch`` fuses in ``folder`` and the images that fit no group."""
    if not folder.is_dir():
        raise IFCNNError(f"{folder}: not a folder")
    image_set = find_groups(folder, task)
    if not image_set.groups:
        raise IFCNNError(f"{folder}: no groups of images found (looked for {' '.join(IMAGE_SUFFIXES)})")
    return list(image_set.groups), list(image_set.skipped)


def _refuse_overwriting_sources(output: Path, sources: list[Path]) -> None:
    refuse_overwriting(output, sources, advice=" with the fused result")


def fuse_files(
    model,
    sources: list[Path],
    output: Path,
    task: str,
    tile: int | None,
    progress: bool = False,
    *,
    decision_map: bool = False,
    focus_map: Path | None = None,
    align: str = "off",
    align_reference: int = 0,
    crop: bool = False,
) -> dict:
    """Reads, (registers,) fuses and atomically writes one group (with a bar over the
    tiles of a tiled fusion when ``progress``; by decision-map fusion with
    ``decision_map``, its map written to ``focus_map`` when given); returns its
    alignment report (identity transforms when ``align`` is ``off``)."""
    from ifcnn_jax.align import align as register  # noqa: PLC0415 - lazy: slow to import; only fusing needs it
    from ifcnn_jax.recipes import (  # noqa: PLC0415 - lazy: slow to import; only fusing needs it
        fuse_with_alignment,
        fuse_with_focus_map,
    )

    _refuse_overwriting_sources(output, sources)
    from ifcnn_jax.streaming import plan_streaming  # noqa: PLC0415 - lazy: imports JAX; --help and early errors must stay fast

    plan = plan_streaming(sources, output, task, tile=tile, decision_map=decision_map, align=align)
    if plan is not None:
        return _fuse_streamed(model, sources, output, task, tile, plan, progress, align_reference)
    check_sources(sources)
    images = [read_image(p) for p in sources]
    names = [str(p) for p in sources]
    with tile_progress(progress) as on_tile:
        if align != "off":
            alignment = register(
                images, align, align_reference, crop=crop, equalise=task == "exposure", names=names
            )
            images = alignment.images
        else:
            alignment = register(images, "off", align_reference, names=names)
        if decision_map:
            fused, labels = fuse_with_focus_map(model, images, tile=tile, names=names, progress=on_tile)
        else:
            fused, _ = fuse_with_alignment(model, images, task, tile=tile, names=names, progress=on_tile)
    write_image(output, fused)
    if focus_map is not None:
        write_image(focus_map, focus_map_image(labels, len(images)))
    return {"output": str(output), **alignment.to_dict(names)}


def _preflight_streamed(sources: list[Path], output: Path, plan: StreamPlan) -> None:
    """The memory and disk checks of a streamed fusion (``ifcnn_jax.streaming``)."""
    headers = check_sources(sources, streamed_tile=plan.tile, in_memory_output=not plan.to_tiff)
    if plan.to_tiff:
        known = [h for h in headers if h is not None]
        channels = max((h.channels for h in known), default=3)
        sample = max((h.bytes_per_sample for h in known), default=4)
        check_disk_space(output, plan.height * plan.width * channels * sample)


def _check_in_memory(sources: list[Path]) -> None:
    """``check_sources`` for the in-memory path; when TIFF sources are refused for
    memory, the message says why they were not streamed (e.g. LZW without imagecodecs)."""
    try:
        check_sources(sources)
    except IFCNNError as exc:
        if "of memory" not in str(exc) or not all(is_tiff_path(p) for p in sources):
            raise
        reasons = [f"{p}: {why}" for p in sources if (why := stream_support(p)) is not None]
        if not reasons:
            raise
        raise IFCNNError(f"{exc} (TIFFs are fused in bounded memory, but not {reasons[0]})") from None


def _fuse_streamed(model, sources, output, task, tile, plan, progress, align_reference) -> dict:
    """Fuses TIFF sources tile by tile from disk to disk (bounded memory; the same
    result as the in-memory path); returns the identity alignment report."""
    from ifcnn_jax.align import align as register  # noqa: PLC0415 - lazy: slow to import; only fusing needs it
    from ifcnn_jax.streaming import fuse_tiff_files  # noqa: PLC0415 - lazy: imports JAX; --help and early errors must stay fast

    _preflight_streamed(sources, output, plan)
    with tile_progress(progress) as on_tile:
        fuse_tiff_files(model, sources, output, task, tile=tile, progress=on_tile)
    names = [str(p) for p in sources]
    shape = np.broadcast_to(np.zeros((), np.uint8), (plan.height, plan.width))  # no pixels needed
    alignment = register([shape] * len(sources), "off", align_reference, names=names)
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


@contextlib.contextmanager
def tile_progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A ``(done, total)`` callback drawing a bar over the tiles of one fusion, or None."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm  # noqa: PLC0415 - lazy: only long (tiled) fusions draw a bar

    bar = None

    def on_tile(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="tiles", unit="tile", leave=False)
        bar.update(done - bar.n)

    try:
        yield on_tile
    finally:
        if bar is not None:
            bar.close()


def _load_model(model_arg: str | None, task: str, args):
    """The model as folded arrays (no Flax), with the compiled programs of
    ``ifcnn_jax.aot`` kept beside JAX's compilation cache (off with it)."""
    from ifcnn_jax import aot  # noqa: PLC0415 - lazy: only this path of the command needs it
    from ifcnn_jax.folded import load_folded  # noqa: PLC0415 - lazy: only this path of the command needs it

    path = resolve_model_dir(model_arg, task, quiet=args.quiet)
    aot.set_cache_dir(enable_compilation_cache(args.compilation_cache))
    return load_folded(str(path))


def _run_single(args) -> int:
    if len(args.sources) < 2:
        raise IFCNNError(
            f"fusion needs at least 2 sources, got {len(args.sources)}"
            + (f" ({args.sources[0]})" if args.sources else "")
        )
    if not args.output:
        raise IFCNNError("give the output image with -o OUT")
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
    focus_map = Path(args.focus_map) if args.focus_map else None
    if focus_map is not None:
        if focus_map.suffix.lower() not in IMAGE_SUFFIXES or focus_map.resolve() == output.resolve():
            raise IFCNNError(f"{focus_map}: give the focus map an image name of its own (.png)")
        refuse_overwriting(focus_map, sources, advice=" with the focus map")
        if not focus_map.parent.is_dir() and str(focus_map.parent):
            raise IFCNNError(f"{focus_map}: output folder {focus_map.parent} does not exist")
    if args.align_reference >= len(sources):
        raise IFCNNError(
            f"--align-reference {args.align_reference} is out of range: there are {len(sources)} sources "
            f"(0 to {len(sources) - 1})"
        )
    report_path = _report_path(args, [*sources, output])
    from ifcnn_jax.streaming import plan_streaming  # noqa: PLC0415 - lazy: imports JAX; --help and early errors must stay fast

    plan = plan_streaming(
        sources, output, args.task, tile=args.tile, decision_map=args.decision_map, align=args.align
    )
    if plan is not None:
        _preflight_streamed(sources, output, plan)
    else:
        _check_in_memory(sources)
    model = _load_model(args.model, args.task, args)
    start = time.perf_counter()
    report = fuse_files(
        model,
        sources,
        output,
        args.task,
        args.tile,
        progress=progress_enabled(args.quiet),
        decision_map=args.decision_map,
        focus_map=focus_map,
        align=args.align,
        align_reference=args.align_reference,
        crop=args.crop,
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
    groups, skipped = batch_groups(batch_dir, args.task)
    if args.dry_run:
        for group in groups:
            print(f"{group.name}: {', '.join(str(p.relative_to(batch_dir)) for p in group.sources)}")
        for path in skipped:
            print(f"(not in any group: {path.relative_to(batch_dir)})")
        print(f"{len(groups)} groups in {batch_dir}")
        return 0
    if not args.output:
        raise IFCNNError("give the output folder with -o OUT_DIR")
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise IFCNNError(f"{out_dir}: exists and is not a folder")
    # No output may land on any file of the input tree (another group's source, a
    # ground truth, anything): refuse before fusing anything.
    input_files = {p.resolve() for p in batch_dir.rglob("*") if p.is_file()}
    outputs = {group.name: out_dir / f"{group.name}.{args.format}" for group in groups}
    for output in outputs.values():
        refuse_overwriting(
            output,
            input_files,
            what="input file",
            advice=f" of {batch_dir}; write the results to another folder (-o)",
        )
    report_path = _report_path(args, list(input_files))
    for path in skipped:
        print(f"skipping {path}: it fits no group", file=sys.stderr)
    model = _load_model(args.model, args.task, args)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    reports: dict[str, dict] = {}
    with tqdm(groups, desc="fusing", unit="group", disable=not progress_enabled(args.quiet)) as bar:
        for group in bar:
            name, paths = group.name, list(group.sources)
            bar.set_postfix_str(name)
            try:
                if args.align_reference >= len(paths):
                    raise IFCNNError(
                        f"group {name!r}: --align-reference {args.align_reference} is out of range: "
                        f"it has {len(paths)} images (0 to {len(paths) - 1})"
                    )
                reports[name] = fuse_files(
                    model,
                    paths,
                    outputs[name],
                    args.task,
                    args.tile,
                    decision_map=args.decision_map,
                    align=args.align,
                    align_reference=args.align_reference,
                    crop=args.crop,
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
        if args.dry_run and not args.batch:
            raise IFCNNError("--dry-run lists the groups of --batch DIR; give --batch")
        if args.decision_map and args.task != "multifocus":
            raise IFCNNError(f"--decision-map is for --task multifocus, not {args.task}")
        if args.focus_map and not args.decision_map:
            raise IFCNNError("--focus-map writes the map of --decision-map; give --decision-map")
        if args.focus_map and args.batch:
            raise IFCNNError("--focus-map is for single mode, not --batch")
        _check_alignment_args(args)
        return _run_batch(args) if args.batch else _run_single(args)

    return run_command(body)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
