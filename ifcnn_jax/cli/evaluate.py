"""``ifcnn-eval``: score fusion results on a test set with the metrics of ``metrics.py``.

    ifcnn-eval ../shared/ifcnn-release/datasets --model checkpoints --out eval/
    ifcnn-eval my_testset/ --fused other_method_results/ --out eval-other/
    python -m ifcnn_jax.cli.evaluate manifest.csv --metrics EN,MI,Qabf,SSIM_mean

The test set is a folder in the layout of the release's ``datasets`` (or one of its
sub-folders) or a manifest; see :mod:`ifcnn_jax.io.testsets`. Fused images come from

* ``--model CKPT``: fused here, with each group's task recipe. ``CKPT`` is a checkpoint
  directory, or a folder of ``ifcnn-max``/``ifcnn-mean``/... checkpoints from which the
  demo's model for each task is taken (MAX for multifocus, infrared, medical; MEAN for
  exposure), as ``ifcnn-fuse`` does; ``--model TASK=CKPT`` sets one task's model. The
  results are saved as ``OUT/fused/<group>.png``.
* ``--fused DIR``: existing results, one per group, named ``DIR/<group>.<ext>`` (the
  group name as listed, e.g. ``lytro-01.png`` or ``Triple Series/lytro-01.png``), so
  that other methods are scored by the same code. Repeated (``--fused NAME=DIR ...``),
  it compares the methods: per collection, the mean of each metric with each method's
  rank (1 = best, by the metric's direction) and the mean rank; ``ranks.csv`` beside
  ``metrics.csv`` (which gains a ``method`` column).
* otherwise the ``fused`` paths of a manifest.

It prints a table per collection (one row per group, then mean +/- sample standard
deviation) and writes to ``--out``: ``metrics.csv`` (one row per group),
``summary.csv`` (mean and std per collection), ``metrics.md`` (the tables), and
``figure_<collection>.png`` (sources and fused result side by side, one row per group).
``--convention vifb|tang|liu|cddfuse`` computes the metrics as that public suite's code
does (docs/metrics.md, "Conventions of the public suites"); the default, ``paper``, is
this package's definitions. Colour images are scored on their luminance (BT.601). All
files are written atomically; none overwrites a source image. A missing or mismatched
file gives a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ifcnn_jax.cli.common import (
    add_compilation_cache_argument,
    enable_compilation_cache,
    run_command,
)
from ifcnn_jax.cli.report import (
    comparison_markdown,
    comparison_rows,
    comparison_text,
    csv_text,
    markdown_report,
    markdown_table,
    summary_rows,
    text_table,
)
from ifcnn_jax.cli.scoring import convention_note, metric_names, metric_progress, score_group
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.figures import figure_png, thumbnail
from ifcnn_jax.io.atomic import write_bytes_atomic
from ifcnn_jax.io.images import refuse_overwriting
from ifcnn_jax.io.testsets import (
    TASKS,
    ImageGroup,
    ImageSet,
    find_groups,
    fused_image_path,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ifcnn-eval",
        description="Score image fusion results with objective metrics.",
        epilog="Examples:\n  ifcnn-eval ../shared/ifcnn-release/datasets --model checkpoints "
        "--out eval\n  ifcnn-eval testset/ --fused results/ --out eval-results",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "testset", metavar="TESTSET", help="test-set folder (release layout) or manifest.csv/.json"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[TASK=]CKPT",
        help="fuse with this checkpoint (or folder of ifcnn-<rule> checkpoints); "
        "TASK=CKPT sets one task's model; may be repeated",
    )
    source.add_argument(
        "--fused",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        help="score existing fused images DIR/<group>.<ext>; repeated, compares the methods "
        "(one table of means with ranks per metric; NAME defaults to the folder's name)",
    )
    parser.add_argument("--task", choices=TASKS, help="use this task for every group")
    parser.add_argument(
        "--out", metavar="DIR", default=None, help="output folder (default: eval-<TESTSET name>)"
    )
    parser.add_argument(
        "--metrics",
        metavar="NAMES",
        default=None,
        help=(
            "comma-separated metric names (default: every default metric; the opt-in ones, "
            "e.g. FMI_dct and Q_P, only when named); see docs/metrics.md"
        ),
    )
    parser.add_argument(
        "--convention",
        metavar="NAME",
        default="paper",
        help=(
            "compute the metrics as a public suite's code does, under the same names: paper "
            "(default: this project's definitions), vifb, tang, liu or cddfuse; the default "
            "metrics are then that suite's (docs/metrics.md, Conventions)"
        ),
    )
    parser.add_argument(
        "--figure-rows",
        type=int,
        default=None,
        metavar="N",
        help="at most N groups per figure (default: all; 0: no figure)",
    )
    parser.add_argument(
        "--tile", type=int, default=None, metavar="SIZE", help="fusion tile size, as ifcnn-fuse --tile"
    )
    add_compilation_cache_argument(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no table on stdout")
    return parser


# ------------------------------------------------------------------------ fusion input


class FusedSource:
    """Where each group's fused image comes from: a model, a folder, or the manifest."""

    def __init__(self, args: argparse.Namespace, out_dir: Path, fused_dir: str | None = None):
        if fused_dir is None and len(args.fused) == 1:
            fused_dir = args.fused[0]
        self.fused_dir = Path(fused_dir) if fused_dir else None
        self.tile = args.tile
        self.out_dir = out_dir
        self.default_model: str | None = None
        self.task_models: dict[str, str] = {}
        for spec in args.model:
            task, sep, path = spec.partition("=")
            if sep and task in TASKS:
                self.task_models[task] = path
            elif sep and task not in TASKS and not Path(spec).exists():
                raise IFCNNError(f"--model {spec}: unknown task {task!r}; choose one of {', '.join(TASKS)}")
            else:
                if self.default_model is not None:
                    raise IFCNNError("give one --model CKPT (plus TASK=CKPT overrides)")
                self.default_model = spec
        if self.fused_dir is not None and not self.fused_dir.is_dir():
            raise IFCNNError(f"--fused {self.fused_dir}: no such folder")
        self._loaded: dict[Path, object] = {}

    @property
    def uses_model(self) -> bool:
        return self.default_model is not None or bool(self.task_models)

    def describe(self, group: ImageGroup) -> str:
        if self.uses_model:
            return f"IFCNN-{self._model(group).fuse_rule.upper()}"
        return "given"

    def _model_dir(self, group: ImageGroup) -> Path:
        from ifcnn_jax.io.model_files import resolve_model_dir  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it

        if group.task is None:
            raise IFCNNError(
                f"group {group.name!r}: cannot tell its fusion task from the folder; pass --task"
            )
        spec = self.task_models.get(group.task, self.default_model)
        if spec is None:
            raise IFCNNError(
                f"group {group.name!r} is {group.task} but no --model is given "
                f"for it; add --model {group.task}=CKPT or --model CKPT"
            )
        return resolve_model_dir(spec, group.task).resolve()

    def _model(self, group: ImageGroup):
        from ifcnn_jax.model import load  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it

        path = self._model_dir(group)
        if path not in self._loaded:
            self._loaded[path] = load(str(path))
        return self._loaded[path]

    def check(self, image_set: ImageSet) -> None:
        """Fails early (before any work) on missing fused files or models."""
        if self.uses_model:
            unknown = [g.name for g in image_set.groups if g.task is None]
            if unknown:
                raise IFCNNError(
                    f"group {unknown[0]!r}: cannot tell its fusion task from the folder; pass --task"
                )
        for group in image_set.groups:
            if self.uses_model:
                self._model_dir(group)
            elif self.fused_dir is not None:
                fused_image_path(self.fused_dir, group)
            elif group.fused is None:
                raise IFCNNError(
                    f"no fused image for group {group.name!r}: pass --model CKPT "
                    'or --fused DIR (or list "fused" paths in a manifest)'
                )

    def fused(self, group: ImageGroup, sources: list[np.ndarray]) -> tuple[np.ndarray, Path]:
        """The fused image of ``group`` and the file it is (or was saved) in."""
        from ifcnn_jax.io.images import read_image, write_image  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it

        if not self.uses_model:
            path = fused_image_path(self.fused_dir, group) if self.fused_dir is not None else group.fused
            return read_image(path), path
        from ifcnn_jax.recipes import fuse  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it

        fused = fuse(
            self._model(group), sources, group.task, tile=self.tile, names=[str(p) for p in group.sources]
        )
        path = self.out_dir / "fused" / f"{group.name}.png"
        _refuse_overwriting_sources(path, group.sources)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, fused)
        return fused, path


def _refuse_overwriting_sources(path: Path, sources: Sequence[Path]) -> None:
    refuse_overwriting(path, sources, what="input image", advice="; choose another --out")


# ------------------------------------------------------------------------------ output


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "set"


# -------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it

    from ifcnn_jax.io.images import read_image  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it

    start = time.perf_counter()
    if args.figure_rows is not None and args.figure_rows < 0:
        raise IFCNNError(f"--figure-rows must be >= 0, got {args.figure_rows}")
    image_set = find_groups(args.testset, task=args.task)
    root_name = image_set.root.resolve().name
    out_dir = Path(args.out) if args.out else Path(f"eval-{_slug(root_name)}")
    if out_dir.exists() and not out_dir.is_dir():
        raise IFCNNError(f"--out {out_dir}: exists and is not a folder")
    any_reference = any(g.reference is not None for g in image_set.groups)
    names = metric_names(args.metrics, any_reference, args.convention)
    if len(args.fused) > 1:
        return run_comparison(args, image_set, out_dir, names, start)
    fused_source = FusedSource(args, out_dir)
    fused_source.check(image_set)
    enable_compilation_cache(args.compilation_cache)

    rows: list[dict] = []
    fused_paths: list[Path] = []
    figures: dict[str, list] = {}
    fuse_seconds = metric_seconds = 0.0
    # leave=False clears the bar, so that an error is the only line left on stderr.
    with tqdm(
        image_set.groups, desc="evaluating", unit="group", disable=args.quiet, file=sys.stderr, leave=False
    ) as bar:
        for group in bar:
            bar.set_postfix_str(group.name)
            sources = [read_image(p) for p in group.sources]
            t0 = time.perf_counter()
            fused, fused_path = fused_source.fused(group, sources)
            fused_paths.append(fused_path)
            t1 = time.perf_counter()
            reference = read_image(group.reference) if group.reference is not None else None
            values = score_group(
                group,
                sources,
                fused,
                fused_path,
                reference,
                names,
                metric_progress(bar, group),
                args.convention,
            )
            metric_seconds += time.perf_counter() - t1
            fuse_seconds += t1 - t0
            collection = group.collection or root_name
            row = {
                "collection": collection,
                "group": _short_name(group),
                "task": group.task or "",
                "sources": len(group.sources),
                "fused": fused_source.describe(group) if fused_source.uses_model else str(fused_path),
            }
            row.update({n: float(values.get(n, math.nan)) for n in names})
            rows.append(row)
            if args.figure_rows is None or len(figures.get(collection, [])) < args.figure_rows:
                captions = [p.name for p in group.sources]
                captions.append("fused: " + (row["fused"] if fused_source.uses_model else fused_path.name))
                figures.setdefault(collection, []).append(
                    (
                        f"{row['group']}  ({group.task or 'task unknown'})",
                        [(c, thumbnail(im)) for c, im in zip(captions, [*sources, fused])],
                    )
                )

    by_collection: dict[str, list[dict]] = {}
    for row in rows:
        by_collection.setdefault(row["collection"], []).append(row)
    command = "ifcnn-eval " + " ".join(shlex.quote(a) for a in args.argv)
    notes = [
        f"test set: {args.testset} ({len(rows)} groups)",
        f"fused images: {_fused_note(args, fused_source, image_set)}",
        "colour images are scored on their luminance (ITU-R BT.601)",
        convention_note(args.convention),
    ]
    if image_set.skipped:
        notes.append("skipped (no group): " + ", ".join(p.name for p in image_set.skipped))
    if not args.quiet:
        for collection, crows in by_collection.items():
            print(text_table(crows, names, f"\n{collection} ({len(crows)} groups)"))
    summary = summary_rows(by_collection, names)
    outputs = {
        "metrics.csv": lambda: csv_text(
            rows, ["collection", "group", "task", "sources", "fused", *names]
        ).encode(),
        "summary.csv": lambda: csv_text(
            summary, ["collection", "groups", *(f"{n}_{s}" for n in names for s in ("mean", "std"))]
        ).encode(),
        "metrics.md": lambda: markdown_report(by_collection, names, command, notes).encode(),
        **{
            f"figure_{_slug(c)}.png": functools.partial(figure_png, entries) for c, entries in figures.items()
        },
    }
    _write_outputs(out_dir, outputs, image_set, fused_paths)
    written = list(outputs)
    elapsed = time.perf_counter() - start
    if not args.quiet:
        print(
            f"\n{len(rows)} groups in {elapsed:.1f} s (fusion {fuse_seconds:.1f} s, metrics "
            f"{metric_seconds:.1f} s); wrote {', '.join(written)} to {out_dir}"
        )
    return 0


# ------------------------------------------------------------------------- comparison


def method_folders(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``[(label, folder)]`` of repeated ``--fused [NAME=]DIR``; labels must differ."""
    methods = []
    for spec in specs:
        label, sep, folder = spec.partition("=")
        if not sep or not label or Path(spec).is_dir():
            label, folder = Path(spec).name or spec, spec
        methods.append((label, folder))
    labels = [label for label, _ in methods]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise IFCNNError(f"--fused: two methods are named {repeated[0]!r}; name them with --fused NAME=DIR")
    return methods


# Metrics that score F against each source separately: the plain average of the sources,
# which stays close to all of them at once, does well on them however blurred it is.
_AGAINST_EACH_SOURCE = (
    "SSIM_mean",
    "SSIM_sum",
    "MS_SSIM_mean",
    "MS_SSIM_sum",
    "CC",
    "PSNR",
    "MSE",
    "RMSE",
)


def run_comparison(
    args: argparse.Namespace, image_set: ImageSet, out_dir: Path, names: list[str], start: float
) -> int:
    """Several ``--fused`` folders: each method scored as by one ``--fused``, then a table
    of means per collection with each method's rank per metric."""
    from tqdm import tqdm  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it

    from ifcnn_jax.io.images import read_image  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it

    methods = [
        (label, FusedSource(args, out_dir, fused_dir=folder)) for label, folder in method_folders(args.fused)
    ]
    for _, fused_source in methods:
        fused_source.check(image_set)
    enable_compilation_cache(args.compilation_cache)
    root_name = image_set.root.resolve().name
    rows_by_method: dict[str, list[dict]] = {label: [] for label, _ in methods}
    fused_paths: list[Path] = []
    figures: dict[str, list] = {}
    with tqdm(
        image_set.groups, desc="evaluating", unit="group", disable=args.quiet, file=sys.stderr, leave=False
    ) as bar:
        for group in bar:
            bar.set_postfix_str(group.name)
            sources = [read_image(p) for p in group.sources]
            reference = read_image(group.reference) if group.reference is not None else None
            collection = group.collection or root_name
            thumbs = [(p.name, thumbnail(im)) for p, im in zip(group.sources, sources)]
            for label, fused_source in methods:
                fused, fused_path = fused_source.fused(group, sources)
                fused_paths.append(fused_path)
                values = score_group(
                    group,
                    sources,
                    fused,
                    fused_path,
                    reference,
                    names,
                    metric_progress(bar, group, label),
                    args.convention,
                )
                row = {
                    "collection": collection,
                    "group": _short_name(group),
                    "task": group.task or "",
                    "sources": len(group.sources),
                    "method": label,
                    "fused": str(fused_path),
                }
                row.update({n: float(values.get(n, math.nan)) for n in names})
                rows_by_method[label].append(row)
                thumbs.append((f"{label}: {fused_path.name}", thumbnail(fused)))
            if args.figure_rows is None or len(figures.get(collection, [])) < args.figure_rows:
                figures.setdefault(collection, []).append(
                    (f"{_short_name(group)}  ({group.task or 'task unknown'})", thumbs)
                )

    comparison = comparison_rows(rows_by_method, names)
    command = "ifcnn-eval " + " ".join(shlex.quote(a) for a in args.argv)
    notes = [
        f"test set: {args.testset} ({len(image_set.groups)} groups)",
        "methods: " + ", ".join(f"{label} ({fs.fused_dir})" for label, fs in methods),
        "colour images are scored on their luminance (ITU-R BT.601)",
        "ranks: 1 is best, by each metric's direction (↑ higher, ↓ lower is better); ties share a rank",
        convention_note(args.convention),
    ]
    blur_rewarding = [n for n in names if n in _AGAINST_EACH_SOURCE]
    if blur_rewarding:
        notes.append(
            f"{', '.join(blur_rewarding)} compare F with each source: they favour blur. The plain "
            "average of the sources minimises sum_k ||S_k - F||^2, so it ranks first on PSNR, MSE "
            "and RMSE (paper definitions) and usually on SSIM, whatever detail it loses; rank on "
            "edge and information metrics (Qabf, Qcb, VIF, EI, Qw/Qe) beside them "
            "(docs/metrics.md, Metrics that favour blur)"
        )
    if image_set.skipped:
        notes.append("skipped (no group): " + ", ".join(p.name for p in image_set.skipped))
    if not args.quiet:
        print(comparison_text(comparison, names))
    all_rows = [row for rows in rows_by_method.values() for row in rows]
    per_method = "\n".join(
        f"## {label}\n\n"
        + "\n".join(
            f"### {collection}\n\n{markdown_table(crows, names)}\n"
            for collection, crows in _by_collection(rows).items()
        )
        for label, rows in rows_by_method.items()
    )
    report = "\n".join(
        [
            "# Fusion metrics: comparison",
            "",
            f"Command: `{command}`",
            "",
            *(f"- {note}" for note in notes),
            "",
            "## Ranks",
            "",
            "Mean over the groups of each collection, and (in brackets) the method's rank.",
            "",
            comparison_markdown(comparison, names),
            per_method,
        ]
    )
    rank_columns = [c for n in names for c in (f"{n}_mean", f"{n}_rank")]
    outputs = {
        "metrics.csv": lambda: csv_text(
            all_rows, ["collection", "group", "task", "sources", "method", "fused", *names]
        ).encode(),
        "ranks.csv": lambda: csv_text(
            comparison, ["collection", "method", *rank_columns, "mean_rank"]
        ).encode(),
        "metrics.md": lambda: report.encode(),
        **{
            f"figure_{_slug(c)}.png": functools.partial(figure_png, entries) for c, entries in figures.items()
        },
    }
    _write_outputs(out_dir, outputs, image_set, fused_paths)
    if not args.quiet:
        print(
            f"\n{len(methods)} methods x {len(image_set.groups)} groups in "
            f"{time.perf_counter() - start:.1f} s; wrote {', '.join(outputs)} to {out_dir}"
        )
    return 0


def _write_outputs(out_dir: Path, outputs: dict, image_set: ImageSet, fused_paths: Sequence[Path]) -> None:
    """Writes each ``name: make_bytes`` of ``outputs`` atomically into ``out_dir``, after
    checking all of them first: nothing is written over an input image."""
    inputs = [
        *image_set.skipped,
        *fused_paths,
        *(p for g in image_set.groups for p in (*g.sources, g.reference) if p),
    ]
    for name in outputs:
        _refuse_overwriting_sources(out_dir / name, inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in outputs.items():
        write_bytes_atomic(out_dir / name, content())


def _by_collection(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(row["collection"], []).append(row)
    return grouped


def _short_name(group: ImageGroup) -> str:
    prefix = f"{group.collection}/"
    return group.name[len(prefix) :] if group.collection and group.name.startswith(prefix) else group.name


def _fused_note(args, fused_source: FusedSource, image_set: ImageSet) -> str:
    if fused_source.uses_model:
        models = sorted({fused_source.describe(g) for g in image_set.groups})
        return f"fused here with {', '.join(models)} ({' '.join(args.model)})"
    if fused_source.fused_dir is not None:
        return f"read from {fused_source.fused_dir}"
    return "as listed in the manifest"


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 ok, 2 user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
