"""Validation during training: scores on held-out synthetic pairs, real pairs, and a
PNG grid of sources and fused results.

Scores use ``ifcnn_jax.metrics`` on the luminance (ITU-R BT.601) of 8-bit images, as
``ifcnn-eval`` does: PSNR and SSIM of the fused image against the ground truth, next to
the same scores of the plain average of the sources (the baseline a fusion network has
to beat).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ifcnn_jax import metrics
from ifcnn_jax.data.photos import read_rgb
from ifcnn_jax.data.synthesis import to_uint8
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.figures import figure_png, thumbnail
from ifcnn_jax.io import testsets
from ifcnn_jax.io.atomic import write_bytes_atomic

GRID_HEIGHT = 128


def reference_scores(fused: np.ndarray, sources: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over examples, fused vs ground truth and source average vs
    ground truth. ``fused``, ``target`` (E, h, w, 3) and ``sources`` (E, N, h, w, 3), all
    uint8 or 0-255."""
    fused_y = metrics.luminance(to_uint8(fused).astype(np.float32))
    target_y = metrics.luminance(np.asarray(target, np.float32))
    average_y = metrics.luminance(
        to_uint8(np.mean(np.asarray(sources, np.float32), axis=1)).astype(np.float32)
    )
    return {
        "psnr": float(np.mean(metrics.psnr(fused_y, target_y))),
        "ssim": float(np.mean(metrics.ssim(fused_y, target_y))),
        "psnr_average_baseline": float(np.mean(metrics.psnr(average_y, target_y))),
        "ssim_average_baseline": float(np.mean(metrics.ssim(average_y, target_y))),
    }


def write_grid(path: Path, sources: np.ndarray, fused: np.ndarray, target: np.ndarray | None) -> Path:
    """Writes a captioned PNG with one row per example: the sources, their average, the
    fused image and (when given) the ground truth. Arrays as in :func:`reference_scores`."""

    def cell(caption: str, image: np.ndarray):
        # Small crops are enlarged without smoothing, so what the network saw stays visible.
        return caption, thumbnail(to_uint8(image), GRID_HEIGHT, smooth=False)

    rows = []
    for i in range(len(fused)):
        cells = [cell(f"source {chr(ord('A') + k)}", s) for k, s in enumerate(sources[i])]
        cells.append(cell("average", np.mean(np.asarray(sources[i], np.float32), axis=0)))
        cells.append(cell("fused", fused[i]))
        if target is not None:
            cells.append(cell("ground truth", target[i]))
        rows.append((f"example {i + 1}", cells))
    return write_bytes_atomic(path, figure_png(rows))


def real_pairs(folder: str) -> list[tuple[str, list[np.ndarray]]]:
    """The source groups of a folder of real multi-focus images (any layout
    ``ifcnn_jax.io.testsets`` understands, e.g. ``NAME-A.jpg``/``NAME-B.jpg``), read as
    RGB uint8."""

    groups = testsets.find_groups(folder, task="multifocus").groups
    return [(g.name, [read_rgb(p) for p in g.sources]) for g in groups]


def evaluate_real_pairs(
    fuse: Callable[[list[np.ndarray]], np.ndarray],
    pairs: list[tuple[str, list[np.ndarray]]],
    grid_path: Path | None,
    grid_rows: int,
) -> dict[str, float]:
    """Fuses each group with ``fuse`` (uint8 RGB list -> uint8 RGB) and returns the mean
    of the no-reference scores Qabf (two sources only) and spatial frequency of the
    fused images and of the source average; optionally writes a grid of the first
    ``grid_rows`` groups (all groups must then share one size)."""
    scores: dict[str, list[float]] = {}
    shown = []
    for name, sources in pairs:
        fused = fuse(sources)
        average = to_uint8(np.mean(np.stack(sources).astype(np.float32), axis=0))
        wanted = ["SF"] + (["Qabf"] if len(sources) == 2 else [])
        try:
            for label, image in (("", fused), ("_average_baseline", average)):
                values = metrics.evaluate(sources, image, names=wanted)
                for metric, value in values.items():
                    scores.setdefault(f"{metric.lower()}{label}", []).append(value)
        except IFCNNError as exc:
            raise IFCNNError(f"real pair {name}: {exc}") from exc
        if len(shown) < grid_rows:
            shown.append((np.stack(sources), fused))
    if grid_path is not None and shown and len({s.shape for s, _ in shown}) == 1:
        write_grid(grid_path, np.stack([s for s, _ in shown]), np.stack([f for _, f in shown]), None)
    return {name: float(np.mean(values)) for name, values in scores.items()}
