"""Scoring one group's fused image in ``ifcnn-eval``: which metrics apply, the 0-255
scale the metrics take, and the progress shown while the first group of a size compiles.

Kept apart from :mod:`ifcnn_jax.cli.evaluate`, which reads the test set, fuses and writes
the reports. The metrics are imported on first use (they import JAX)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ifcnn_jax.cli.common import LazyModule
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.testsets import ImageGroup

metrics = LazyModule("ifcnn_jax.metrics")


def metric_names(spec: str | None, any_reference: bool, convention: str = "paper") -> list[str]:
    """The metric columns: ``--metrics`` checked against the registry and the convention,
    or the default columns (under a suite's convention, that suite's metrics)."""
    from ifcnn_jax.metrics import (  # noqa: PLC0415 - lazy: slow to import; only this path of the command needs it
        ALL_METRICS,
        CONVENTION_METRICS,
        CONVENTIONS,
        KNOWN_METRICS,
        NO_REFERENCE_METRICS,
    )
    from ifcnn_jax.metrics._conventions import refusal  # noqa: PLC0415 - as above

    if convention not in CONVENTIONS:
        raise IFCNNError(
            f"--convention: unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}"
        )
    suite = CONVENTION_METRICS[convention]
    if spec is None:
        return [n for n in (ALL_METRICS if any_reference else NO_REFERENCE_METRICS) if n in suite]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in KNOWN_METRICS]
    if unknown or not names:
        raise IFCNNError(
            f"--metrics: unknown metric {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(KNOWN_METRICS)}"
        )
    for name in names:
        if name not in suite:
            raise IFCNNError(f"--metrics: {refusal(convention, name)}")
    return names


def score_group(
    group: ImageGroup,
    sources: list[np.ndarray],
    fused: np.ndarray,
    fused_path: Path,
    reference: np.ndarray | None,
    names: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
    convention: str = "paper",
) -> dict[str, float]:
    """The named metrics that apply to this group; the others are left out (NaN later):
    reference metrics without a ground truth, SCD/Qy beside N != 2, MS-SSIM on small
    images. ``progress`` and ``convention`` are passed to ``metrics.evaluate``."""

    h, w = np.asarray(fused).shape[:2]
    applicable = [
        n
        for n in names
        if (n not in metrics.REFERENCE_METRICS or reference is not None)
        and metrics.KNOWN_METRICS[n].applies_to(len(sources), h, w)
    ]
    return metrics.evaluate(
        [on_255_scale(s) for s in sources],
        on_255_scale(fused),
        None if reference is None else on_255_scale(reference),
        names=applicable,
        source_names=[str(p) for p in group.sources],
        fused_name=str(fused_path),
        reference_name=str(group.reference),
        progress=progress,
        convention=convention,
    )


def metric_progress(bar, group: ImageGroup, method: str = "") -> Callable[[int, int], None]:
    """Shows the metric count of the group being scored beside the bar over groups: the
    first group of each image size compiles every metric, which takes a while."""
    prefix = f"{group.name} {method}".rstrip()

    def show(done: int, total: int) -> None:
        bar.set_postfix_str(f"{prefix}: metric {done}/{total}")

    return show


def on_255_scale(image: np.ndarray) -> np.ndarray:
    """Float images of this package (``read_image``, ``fuse``) hold 0-1; the metrics want
    0-255. Integer images are left to ``metrics.to_gray_255`` (uint16 / 257)."""
    return image * np.float32(255) if image.dtype.kind == "f" else image


def convention_note(convention: str) -> str:
    from ifcnn_jax.metrics._conventions import SUITES  # noqa: PLC0415 - lazy: imports JAX

    return f"metric convention: {convention} ({SUITES[convention]})"
