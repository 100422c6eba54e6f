"""The eager entry point: checks the inputs and computes the named metrics.

The conventions (scales, shapes, windows) are those of ``ifcnn_jax.metrics``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.metrics._common import PEAK, to_gray_255
from ifcnn_jax.metrics._conventions import (
    CONVENTION_METRICS,
    DEFAULT_CONVENTION,
    check_convention,
    metric_under,
    refusal,
)
from ifcnn_jax.metrics._registry import (
    ALL_METRICS,
    NO_REFERENCE_METRICS,
    OPT_IN_METRICS,
    REFERENCE_METRICS,
)


def _check_finite_range(image: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(image)):
        bad = "NaN" if np.isnan(image).any() else "infinite values"
        raise IFCNNError(f"{name} contains {bad}")
    lo, hi = float(image.min()), float(image.max())
    if lo < -0.5 or hi > PEAK + 0.5:
        raise IFCNNError(f"{name} has values from {lo:g} to {hi:g}; metrics expect the 0-255 scale")


def evaluate(
    sources: Sequence[np.ndarray] | np.ndarray,
    fused: np.ndarray,
    reference: np.ndarray | None = None,
    names: Sequence[str] | None = None,
    source_names: Sequence[str] | None = None,
    fused_name: str = "fused image",
    reference_name: str = "reference image",
    progress: Callable[[int, int], None] | None = None,
    convention: str = DEFAULT_CONVENTION,
) -> dict[str, float]:
    """Computes metrics for one group of images, checking the inputs first.

    Args:
      sources: N >= 2 images, each ``(H, W)`` gray or ``(H, W, 3)`` RGB (uint8, uint16,
        or float on 0-255), or one stacked ``(N, H, W)`` array. Colour is evaluated on
        its luminance (:func:`to_gray_255`).
      fused: the fused image, same size.
      reference: optional ground truth, same size; adds ``REFERENCE_METRICS``.
      names: metric names to compute (keys of ``ALL_METRICS`` or ``OPT_IN_METRICS``).
        Default: every metric of ``ALL_METRICS`` (the opt-in ones only when named);
        those whose definition does not cover this number of sources or this image size
        give NaN. A named metric that does not apply raises ``IFCNNError``.
      source_names, fused_name, reference_name: labels for error messages (file names).
      progress: called as ``progress(done, total)`` before each metric function runs
        and once when all are done (``done == total``); on the first call for an image
        size each function also compiles, which takes seconds.
      convention: ``"paper"`` (default: this project's definitions), or ``"vifb"``,
        ``"tang"``, ``"liu"``, ``"cddfuse"``: the metrics as that public suite's code
        computes them (units, windows, quirks), under the same names
        (``metrics.CONVENTION_METRICS``; docs/metrics.md, "Conventions"). Under a suite's
        convention the default names are that suite's metrics (no reference metrics),
        and a named metric it does not reproduce raises ``IFCNNError``.

    Returns:
      ``{name: value}`` as Python floats, in the order of ``names`` (default: registry
      order).

    Raises ``IFCNNError`` for sizes that differ, NaN/inf, values outside 0-255, fewer
    than 2 sources, unknown metric names or conventions, or metrics the convention does
    not reproduce.
    """
    check_convention(convention)
    sources = list(sources)  # a stacked (N, H, W) or (N, H, W, 3) array splits on axis 0
    labels = (
        list(source_names) if source_names is not None else [f"source {i + 1}" for i in range(len(sources))]
    )
    if len(labels) != len(sources):
        raise IFCNNError(f"got {len(sources)} sources but {len(labels)} source names")
    if len(sources) < 2:
        raise IFCNNError(f"fusion metrics need at least 2 sources, got {len(sources)}")
    grays = [to_gray_255(s, label) for s, label in zip(sources, labels)]
    fused_gray = to_gray_255(fused, fused_name)
    ref_gray = to_gray_255(reference, reference_name) if reference is not None else None
    named = [*zip(labels, grays), (fused_name, fused_gray)]
    if ref_gray is not None:
        named.append((reference_name, ref_gray))
    for label, image in named:
        if image.shape != fused_gray.shape:
            raise IFCNNError(
                f"{label} is {image.shape[0]}x{image.shape[1]} but {fused_name} "
                f"is {fused_gray.shape[0]}x{fused_gray.shape[1]}; "
                "sizes must match"
            )
        _check_finite_range(image, label)

    available = dict(NO_REFERENCE_METRICS)
    if ref_gray is not None:
        available.update(REFERENCE_METRICS)
    suite = CONVENTION_METRICS[convention]
    if names is None:
        selected = [name for name in available if name in suite]
        explicit = False
        available.update(OPT_IN_METRICS)
    else:
        available.update(OPT_IN_METRICS)
        selected = list(names)
        explicit = True
        for name in selected:
            if name in REFERENCE_METRICS and ref_gray is None:
                raise IFCNNError(f"metric {name} needs a reference (ground-truth) image")
            if name not in available:
                raise IFCNNError(
                    f"unknown metric {name!r}; choose from {', '.join([*ALL_METRICS, *OPT_IN_METRICS])}"
                )
            if name not in suite:
                raise IFCNNError(refusal(convention, name))
    if convention != DEFAULT_CONVENTION:
        available = {name: metric_under(convention, name, available[name]) for name in selected}

    h, w = fused_gray.shape
    to_compute: list[str] = []
    for name in selected:
        metric = available[name]
        if metric.applies_to(len(grays), h, w):
            if metric.times_sources_of not in selected:
                to_compute.append(name)
        elif explicit:
            need = (
                f"exactly {metric.exact_sources} sources"
                if metric.exact_sources is not None and metric.exact_sources != len(grays)
                else f"images of at least {metric.min_size}x{metric.min_size}"
            )
            raise IFCNNError(f"metric {name} needs {need}; got {len(grays)} sources of {h}x{w}")
    stacked = jnp.asarray(np.stack(grays))
    fused_j = jnp.asarray(fused_gray)
    ref_j = None if ref_gray is None else jnp.asarray(ref_gray)
    # Metric by metric: each compiled function is cached per image size and shared with
    # direct calls (one computation for all of them compiles ~10% faster, but anew for
    # every selection of names).
    computed: dict[str, float] = {}
    for done, name in enumerate(to_compute, start=1):
        metric = available[name]
        if progress is not None:
            progress(done - 1, len(to_compute))
        if name in computed:
            continue
        if name in REFERENCE_METRICS:
            computed[name] = float(metric(fused_j, ref_j))
        elif metric.joint is not None and sum(n in to_compute for n in metric.joint[0]) > 1:
            joint_names, joint_fn = metric.joint
            for joint_name, value in zip(joint_names, np.asarray(joint_fn(stacked, fused_j)), strict=True):
                if joint_name in to_compute:
                    computed[joint_name] = float(value)
        elif metric.product_of is not None and metric.product_of[0] in to_compute:
            other, factor = metric.product_of
            if other not in computed:
                computed[other] = float(available[other](stacked, fused_j))
            # The float32 product, as the metric's own function forms it.
            computed[name] = float(np.float32(computed[other]) * np.float32(factor(stacked, fused_j)))
        else:
            computed[name] = float(metric(stacked, fused_j))
    if progress is not None:
        progress(len(to_compute), len(to_compute))
    results: dict[str, float] = {}
    for name in selected:
        metric = available[name]
        if name in computed:
            results[name] = computed[name]
        elif metric.applies_to(len(grays), h, w):  # a sum derived from its mean
            results[name] = computed[metric.times_sources_of] * len(grays)
        else:
            results[name] = float("nan")
    return results
