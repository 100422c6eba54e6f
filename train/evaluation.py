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

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ifcnn_jax import metrics
from ifcnn_jax.data.photos import read_rgb
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.figures import figure_png, thumbnail
from ifcnn_jax.io import testsets
from ifcnn_jax.io.atomic import write_bytes_atomic
from ifcnn_jax.io.images import average_8bit, to_8bit
from ifcnn_jax.recipes import fuse as fuse_recipe
from train import input_pipeline
from train.step import DATA_AXIS, TrainState, make_fuse_fn, merge_model, replicate, to_host

GRID_HEIGHT = 128


def reference_scores(fused: np.ndarray, sources: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over examples, fused vs ground truth and source average vs
    ground truth. ``fused`` (E, h, w, 3) is uint8 or float on 0-1 (rounded to 8 bits
    first, as a written result would be); ``target`` (E, h, w, 3) and ``sources``
    (E, N, h, w, 3) are uint8."""
    fused_y = metrics.luminance(to_8bit(fused).astype(np.float32))
    target_y = metrics.luminance(np.asarray(target, np.float32))
    average_y = metrics.luminance(average_8bit(sources, axis=1).astype(np.float32))
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
        return caption, thumbnail(to_8bit(image), GRID_HEIGHT, smooth=False)

    rows = []
    for i in range(len(fused)):
        cells = [cell(f"source {chr(ord('A') + k)}", s) for k, s in enumerate(sources[i])]
        cells.append(cell("average", average_8bit(sources[i])))
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
        average = average_8bit(np.stack(sources))
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


class Validator:
    """Validates a train state during training: :func:`reference_scores` on the fixed
    synthetic examples ``eval_set`` (fused in jitted batches of
    ``config.eval_batch_size`` on ``mesh``, the last one padded so that one compiled
    shape serves every batch), and :func:`evaluate_real_pairs` on ``real_pairs`` with
    the ``ifcnn-fuse`` recipe. Grids go to ``workdir/eval`` when ``workdir`` is given
    (the main process) and ``config.grid_examples`` is set; real pairs are scored only
    there. Calling it returns the scalars, named ``eval/...`` and ``eval_real/...``."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        eval_set: dict[str, np.ndarray],
        real_pairs: list[tuple[str, list[np.ndarray]]],
        mesh: Mesh,
        workdir: Path | None,
    ):
        self.config, self.eval_set, self.real_pairs = config, eval_set, real_pairs
        self.mesh, self.workdir = mesh, workdir
        replicated = NamedSharding(mesh, PartitionSpec())
        batch_sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
        divisible = config.eval_batch_size % mesh.devices.size == 0
        self.sharding = batch_sharding if divisible else replicated
        self.fuse = jax.jit(
            make_fuse_fn(config.fuse_rule),
            in_shardings=(replicated, replicated, self.sharding),
            out_shardings=replicated,
        )

    def fused_examples(self, state: TrainState) -> np.ndarray:
        """The model's results on ``eval_set``, ``(E, h, w, 3)`` float on 0-1."""
        size = self.config.eval_batch_size
        outputs = []
        for chunk in input_pipeline.batches(self.eval_set, size):
            count = len(chunk["sources"])
            sources = chunk["sources"]
            if count < size:
                sources = np.concatenate([sources, np.repeat(sources[-1:], size - count, axis=0)])
            with jax.set_mesh(self.mesh):  # as for the train step: conv_ops per device
                fused = self.fuse(state["params"], state["batch_stats"], replicate(sources, self.sharding))
            outputs.append(to_host(fused)[:count])
        return np.concatenate(outputs)

    def __call__(self, state: TrainState, step: int) -> dict[str, float]:
        fused = self.fused_examples(state)
        sources, target = self.eval_set["sources"], self.eval_set["target"]
        scores = {f"eval/{k}": v for k, v in reference_scores(fused, sources, target).items()}
        grids = self.workdir is not None and self.config.grid_examples
        if grids:
            rows = min(self.config.grid_examples, len(fused))
            write_grid(
                self.workdir / "eval" / f"synthetic_step{step:07d}.png",
                sources[:rows],
                fused[:rows],
                target[:rows],
            )
        if self.real_pairs and self.workdir is not None:
            params, stats = (jax.tree.map(to_host, state[k]) for k in ("params", "batch_stats"))
            model = merge_model(self.config.fuse_rule, params, stats)
            model.eval()
            real = evaluate_real_pairs(
                lambda images: fuse_recipe(model, images, task="multifocus"),
                self.real_pairs,
                self.workdir / "eval" / f"real_step{step:07d}.png" if grids else None,
                self.config.grid_examples,
            )
            scores.update({f"eval_real/{k}": v for k, v in real.items()})
        return scores
