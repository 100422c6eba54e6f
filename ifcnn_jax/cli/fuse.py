"""``ifcnn-fuse``: fuse images from the command line.

    ifcnn-fuse --task multifocus a.jpg b.jpg -o fused.png            # IFCNN-MAX, by name
    ifcnn-fuse --task exposure --model IFCNN-MEAN --batch sequences/ -o fused/
    ifcnn-fuse --task multifocus --batch lytro/ -o fused/ --dry-run  # list the groups only

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

Everything that can be checked before the work is: the output, the model file, the
sources' headers (sizes, read without decoding) and the memory a fusion needs.
Compiled programs are kept in a persistent cache (``--compilation-cache``), so
repeated runs skip compiling. User errors print one line and exit with 2; in batch
mode a bad group is reported and skipped, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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
    write_image,
)
from ifcnn_jax.io.model_files import resolve_model_dir
from ifcnn_jax.io.testsets import ImageGroup, find_groups
from ifcnn_jax.preflight import check_sources
from ifcnn_jax.tasks import TASKS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ifcnn-fuse",
        description="Fuse registered images with IFCNN.",
        epilog="Examples:\n  ifcnn-fuse --task multifocus a.jpg b.jpg -o fused.png\n"
        "  ifcnn-fuse --task exposure --model IFCNN-MEAN --batch sequences/ -o fused/",
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
) -> None:
    """Reads, fuses and atomically writes one group (with a bar over the tiles of a
    tiled fusion when ``progress``); with ``decision_map``, by decision-map fusion, and
    the map written to ``focus_map`` when given."""
    from ifcnn_jax.recipes import (  # noqa: PLC0415 - lazy: slow to import; only fusing needs it
        fuse,
        fuse_with_focus_map,
    )

    _refuse_overwriting_sources(output, sources)
    check_sources(sources)
    images = [read_image(p) for p in sources]
    names = [str(p) for p in sources]
    with tile_progress(progress) as on_tile:
        if decision_map:
            fused, labels = fuse_with_focus_map(model, images, tile=tile, names=names, progress=on_tile)
        else:
            fused = fuse(model, images, task, tile=tile, names=names, progress=on_tile)
    write_image(output, fused)
    if focus_map is not None:
        write_image(focus_map, focus_map_image(labels, len(images)))


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
    from ifcnn_jax.model import load  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it

    path = resolve_model_dir(model_arg, task, quiet=args.quiet)
    enable_compilation_cache(args.compilation_cache)
    return load(str(path))


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
    check_sources(sources)
    model = _load_model(args.model, args.task, args)
    start = time.perf_counter()
    fuse_files(
        model,
        sources,
        output,
        args.task,
        args.tile,
        progress=progress_enabled(args.quiet),
        decision_map=args.decision_map,
        focus_map=focus_map,
    )
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
    for path in skipped:
        print(f"skipping {path}: it fits no group", file=sys.stderr)
    model = _load_model(args.model, args.task, args)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    with tqdm(groups, desc="fusing", unit="group", disable=not progress_enabled(args.quiet)) as bar:
        for group in bar:
            bar.set_postfix_str(group.name)
            try:
                fuse_files(
                    model,
                    list(group.sources),
                    outputs[group.name],
                    args.task,
                    args.tile,
                    decision_map=args.decision_map,
                )
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
        if args.dry_run and not args.batch:
            raise IFCNNError("--dry-run lists the groups of --batch DIR; give --batch")
        if args.decision_map and args.task != "multifocus":
            raise IFCNNError(f"--decision-map is for --task multifocus, not {args.task}")
        if args.focus_map and not args.decision_map:
            raise IFCNNError("--focus-map writes the map of --decision-map; give --decision-map")
        if args.focus_map and args.batch:
            raise IFCNNError("--focus-map is for single mode, not --batch")
        return _run_batch(args) if args.batch else _run_single(args)

    return run_command(body)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
