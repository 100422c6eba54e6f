"""Score multi-focus models on held-out ground truth and on real pairs (Lytro).

    python -m train.score_models --heldout photos/heldout \
        --model released=../shared/ifcnn-release/snapshots/IFCNN-MAX.pth --model own=runs/mf/model \
        [--lytro ../shared/ifcnn-release/datasets/CMFDataset] [--json scores.json] [--markdown scores.md]

Held-out ground truth: ``--per-photo`` synthetic pairs per photo of ``--heldout`` (every
photo, sorted by name; a ``--crop``-pixel square crop; blur radii 2-8; random smooth or
shape focus maps), example i from photo ``i mod n`` with the generator
``example_rng(--seed, i)`` of ``ifcnn_jax.data.photos``, so the set is fixed by the
photos and the seed. Its default seed differs from the training run's ``eval_seed``:
the photos are those the run validates on, the crops and focus maps are not. Scores,
averaged over examples: PSNR and SSIM on luminance (BT.601, as ``ifcnn-eval``) and
PSNR on RGB (colour errors the luminance misses), of the fused image against the sharp
photo.

Real pairs: the two-source groups of ``--lytro`` (``NAME-A``/``NAME-B``), scored without
ground truth with ``--lytro-metrics`` of ``ifcnn_jax.metrics`` (default Qabf, VIF,
FMI_pixel, Qy), averaged over pairs. Use them for reporting only.

Each model is fused through the task recipe (``ifcnn_jax.fuse``, BatchNorm running
statistics), as ``ifcnn-fuse`` does; ``average`` (the mean of the two sources) is
always scored. ``--bn batch`` instead runs each model in training mode, so BatchNorm
uses the statistics of the image being fused (a diagnostic of the running statistics).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import ifcnn_jax
from ifcnn_jax import metrics
from ifcnn_jax.data import synthesis
from ifcnn_jax.data.photos import FolderCollection, read_rgb
from ifcnn_jax.data.synthesis import example_rng
from ifcnn_jax.io import testsets
from ifcnn_jax.io.images import to_8bit


def heldout_examples(folder: str, per_photo: int, crop: int, seed: int):
    """``[(name, sources (2, h, w, 3) uint8, target (h, w, 3) uint8)]``, the fixed set."""

    photos = FolderCollection(folder, None)
    examples = []
    for i in range(per_photo * len(photos)):
        photo = photos[i % len(photos)]
        example = synthesis.synthesize_example(photo.image, None, rng=example_rng(seed, i), crop_size=crop)
        examples.append(
            (f"{photo.name}#{i // len(photos)}", to_8bit(example.sources), to_8bit(example.target))
        )
    return examples


def lytro_pairs(folder: str):

    groups = testsets.find_groups(folder, task="multifocus").groups
    return [(g.name, [read_rgb(p) for p in g.sources]) for g in groups if len(g.sources) == 2]


def make_fusers(models: list[tuple[str, str]], bn: str):

    fusers = {
        "average": lambda images: np.clip(
            np.round(np.mean(np.stack(images).astype(np.float32), 0)), 0, 255
        ).astype(np.uint8)
    }

    def fuser(model):
        return lambda images: ifcnn_jax.fuse(model, list(images), task="multifocus", tile=0)

    for name, path in models:
        model = ifcnn_jax.load(path)
        if bn == "batch":
            model.train()
        fusers[name] = fuser(model)
    return fusers


def score_heldout(fusers, examples) -> dict[str, dict[str, float]]:

    results = {}
    for name, fuse in fusers.items():
        rows = {"psnr": [], "ssim": [], "psnr_rgb": []}
        per_photo: dict[str, list[float]] = {}
        for example_name, sources, target in examples:
            fused = np.asarray(fuse(list(sources)))
            fy = np.asarray(metrics.luminance(fused.astype(np.float32)))
            ty = np.asarray(metrics.luminance(target.astype(np.float32)))
            rows["psnr"].append(float(metrics.psnr(fy, ty)))
            rows["ssim"].append(float(metrics.ssim(fy, ty)))
            mse = np.mean(np.square(fused.astype(np.float64) - target.astype(np.float64)))
            rows["psnr_rgb"].append(float(10 * np.log10(255.0**2 / max(mse, 1e-12))))
            per_photo.setdefault(example_name.split("#")[0], []).append(rows["psnr"][-1])
        results[name] = {k: float(np.mean(v)) for k, v in rows.items()}
        results[name]["psnr_per_photo"] = {k: float(np.mean(v)) for k, v in per_photo.items()}
    return results


def score_lytro(fusers, pairs, names) -> dict[str, dict[str, float]]:

    results = {}
    for model_name, fuse in fusers.items():
        values = {n: [] for n in names}
        for _, sources in pairs:
            scores = metrics.evaluate(sources, np.asarray(fuse(sources)), names=names)
            for n in names:
                values[n].append(scores[n])
        results[model_name] = {n: float(np.mean(v)) for n, v in values.items()}
    return results


def markdown(heldout, lytro, args) -> str:
    lines = []
    if heldout:
        lines += [
            (
                f"Held-out ground truth: {args.per_photo} crops of {args.crop} px per photo of "
                f"`{Path(args.heldout).name}`, seed {args.seed}, BatchNorm {args.bn} statistics."
            ),
            "",
            "| model | PSNR Y (dB) | SSIM Y | PSNR RGB (dB) |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {m} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['psnr_rgb']:.2f} |" for m, s in heldout.items()
        ]
        lines.append("")
    if lytro:
        names = list(next(iter(lytro.values())))
        lines += [
            f"Lytro ({args.lytro_count} pairs), no reference:",
            "",
            "| model | " + " | ".join(names) + " |",
            ("| --- " * (len(names) + 1)) + "|",
        ]
        lines += [f"| {m} | " + " | ".join(f"{s[n]:.4f}" for n in names) + " |" for m, s in lytro.items()]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.score_models",
        description="Score multi-focus models on held-out ground truth and Lytro.",
    )
    parser.add_argument("--heldout", help="folder of held-out sharp photos")
    parser.add_argument("--per-photo", type=int, default=4)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--lytro", help="folder of real two-source multi-focus pairs (NAME-A/NAME-B)")
    parser.add_argument("--lytro-metrics", default="Qabf,VIF,FMI_pixel,Qy")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a checkpoint directory or released .pth (repeatable)",
    )
    parser.add_argument("--bn", choices=("running", "batch"), default="running")
    parser.add_argument("--json", help="write the scores here (with PSNR Y per held-out photo)")
    parser.add_argument("--markdown", help="write the tables here")
    args = parser.parse_args(argv)
    models = [tuple(m.split("=", 1)) for m in args.model]
    fusers = make_fusers(models, args.bn)
    heldout = (
        score_heldout(fusers, heldout_examples(args.heldout, args.per_photo, args.crop, args.seed))
        if args.heldout
        else {}
    )
    lytro = {}
    args.lytro_count = 0
    if args.lytro:
        pairs = lytro_pairs(args.lytro)
        args.lytro_count = len(pairs)
        lytro = score_lytro(fusers, pairs, args.lytro_metrics.split(","))
    text = markdown(heldout, lytro, args)
    print(text)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "heldout": heldout,
                    "lytro": lytro,
                    "models": dict(models),
                    "settings": {k: v for k, v in vars(args).items() if k not in ("model",)},
                },
                indent=1,
            )
        )
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
