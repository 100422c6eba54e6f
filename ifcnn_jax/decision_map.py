"""Decision-map fusion for multi-focus sources: which source is in focus at each pixel,
decided from the network's output, cleaned, and used to compose the result from the
sources' own pixels.

The network's fused image ``F`` is an estimate of the all-in-focus scene. Where source
``k`` is in focus it agrees with ``F``; where it is blurred it does not. So the raw map
is ``argmin_k box(|F - S_k|^2)`` on the luminance, over a ``(2w+1)^2`` window (a
sum-modified-Laplacian or spatial-frequency focus measure of each source would serve
too; agreement with ``F`` needs no threshold and takes any number of sources). Then:

1. **small regions** of one label (fewer than ``min_area`` of the image's pixels, as
   connected components) take the label most common on their border (consistency:
   focus is piecewise constant, and small islands are mostly flat areas where every
   source agrees with ``F``);
2. **edge-aware smoothing**: each source's binary map is passed through a guided filter
   (He, Sun, Tang, TPAMI 2013) guided by ``F``'s luminance, so the weights follow the
   scene's edges and blend softly across the focus boundary;
3. **composition**: ``sum_k W_k S_k / sum_k W_k`` from the sources' own pixels (no
   network colour or contrast changes where one source is sharp).

Everything here is NumPy and OpenCV on full-resolution maps (one float per pixel per
source): the network output comes from ``ifcnn_jax.inference.forward``, tiled or not,
so the decision map inherits its tiling behaviour. All images are float32 on 0-1.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from ifcnn_jax.errors import IFCNNError


@dataclasses.dataclass(frozen=True)
class DecisionMapSettings:
    """The knobs of decision-map fusion, chosen on this project's own synthetic pairs
    (``bench/tune_decision_map.py``: 24 crops of 256 px from the four photos of the
    training notes' dev split, random smooth/shape focus maps, blur radii 2-8, the
    released IFCNN-MAX; never on the Lytro pairs nor on the held-out photos the README
    scores on). On those pairs the luminance PSNR against the sharp photo was 48.0 dB
    with these values (47.7 dB on a second draw of 24 pairs), against 44.8 (45.7) dB
    with the earlier window 2, min_area 0.01, guide radius 3 and eps 0.01, and 39.6 dB
    for the network's own output. A guide radius of 1 beat both 0 (a hard map) and 2-3.

    Attributes:
      window: half-width in pixels of the agreement window (``2 * window + 1`` square).
      min_area: connected regions smaller than this fraction of the image area are
        relabelled from their border.
      guide_radius: radius in pixels of the guided filter.
      guide_eps: the guided filter's regulariser (on the 0-1 scale: ``0.01 ** 2`` means
        edges of contrast below about 0.01 are smoothed over).
    """

    window: int = 1
    min_area: float = 0.001
    guide_radius: int = 1
    guide_eps: float = 0.01**2


def luminance(image: np.ndarray) -> np.ndarray:
    """BT.601 luminance of ``(H, W, 3)`` RGB on 0-1 (gray ``(H, W)`` is returned as is)."""
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        return image
    return image @ np.asarray([0.299, 0.587, 0.114], np.float32)


def box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the ``(2r+1)^2`` window around each pixel, the border reflected."""
    size = 2 * radius + 1
    return cv2.boxFilter(image, cv2.CV_32F, (size, size), borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter (TPAMI 2013, Algorithm 1) of ``source`` with a gray
    ``guide``, both ``(H, W)`` float32: a local linear model ``q = a I + b`` per window,
    ``a = cov(I, p) / (var(I) + eps)``, ``b = mean(p) - a mean(I)``, then averaged."""
    guide = np.asarray(guide, np.float32)
    source = np.asarray(source, np.float32)
    mean_i, mean_p = box_mean(guide, radius), box_mean(source, radius)
    cov_ip = box_mean(guide * source, radius) - mean_i * mean_p
    var_i = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)


def agreement_labels(network_output: np.ndarray, sources: list[np.ndarray], window: int) -> np.ndarray:
    """``argmin_k box(|F - S_k|^2)`` on the luminance: the index of the source that agrees
    best with the network output around each pixel, ``(H, W)`` int32."""
    fused_y = luminance(network_output)
    distances = np.stack([box_mean(np.square(fused_y - luminance(s)), window) for s in sources])
    return np.argmin(distances, axis=0).astype(np.int32)


def remove_small_regions(labels: np.ndarray, num_sources: int, min_pixels: int) -> np.ndarray:
    """Relabels every connected region (8-connected) of one label with fewer than
    ``min_pixels`` pixels by the label most common on its one-pixel border; repeats
    until no such region is left (at most ``num_sources + 1`` passes)."""
    labels = labels.copy()
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(num_sources + 1):
        changed = False
        for label in range(num_sources):
            count, components, stats, _ = cv2.connectedComponentsWithStats(
                (labels == label).astype(np.uint8), connectivity=8
            )
            for component in range(1, count):
                if stats[component, cv2.CC_STAT_AREA] >= min_pixels:
                    continue
                x, y, w, h = (stats[component, i] for i in range(4))
                y0, y1, x0, x1 = max(y - 1, 0), y + h + 1, max(x - 1, 0), x + w + 1
                region = (components[y0:y1, x0:x1] == component).astype(np.uint8)
                border = (cv2.dilate(region, kernel) > 0) & (region == 0)
                neighbours = labels[y0:y1, x0:x1][border]
                if neighbours.size == 0:  # the region is the whole image
                    continue
                replacement = int(np.bincount(neighbours, minlength=num_sources).argmax())
                labels[y0:y1, x0:x1][region > 0] = replacement
                changed = True
        if not changed:
            break
    return labels


def decision_weights(
    labels: np.ndarray, guide: np.ndarray, num_sources: int, radius: int, eps: float
) -> np.ndarray:
    """Per-source weights ``(N, H, W)`` float32 in [0, 1] summing to 1: each source's
    binary map, guided-filtered by ``guide`` (``(H, W)`` on 0-1), clipped, normalised."""
    weights = np.stack(
        [guided_filter(guide, (labels == k).astype(np.float32), radius, eps) for k in range(num_sources)]
    )
    np.clip(weights, 0, None, out=weights)
    total = weights.sum(axis=0)
    # Where every filtered weight is 0 (cannot happen for a partition, but guard), use the label.
    empty = total <= 1e-12
    if np.any(empty):
        weights[:, empty] = np.stack([(labels[empty] == k) for k in range(num_sources)]).astype(np.float32)
        total = weights.sum(axis=0)
    return weights / total


def compose(sources: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """``sum_k W_k S_k``: sources ``(H, W)`` or ``(H, W, 3)`` float32 on 0-1 and weights
    ``(N, H, W)`` -> the fused image, float32 on 0-1."""
    fused = np.zeros_like(np.asarray(sources[0], np.float32))
    for source, weight in zip(sources, weights):
        fused += np.asarray(source, np.float32) * (weight[:, :, None] if fused.ndim == 3 else weight)
    return np.clip(fused, 0, 1, out=fused)


def fuse_by_decision_map(
    network_output: np.ndarray,
    sources: list[np.ndarray],
    settings: DecisionMapSettings = DecisionMapSettings(),
) -> tuple[np.ndarray, np.ndarray]:
    """Decision-map fusion of ``sources`` (float32 on 0-1, one size) given the network's
    fused image (same size, 0-1). Returns ``(fused, labels)``: the composed image
    (float32, 0-1, the sources' layout) and the cleaned map ``(H, W)`` int32 (index of
    the in-focus source)."""
    if len(sources) < 2:
        raise IFCNNError(f"decision-map fusion needs at least 2 sources, got {len(sources)}")
    height, width = sources[0].shape[:2]
    labels = agreement_labels(network_output, sources, settings.window)
    labels = remove_small_regions(labels, len(sources), max(1, round(settings.min_area * height * width)))
    weights = decision_weights(
        labels, luminance(network_output), len(sources), settings.guide_radius, settings.guide_eps
    )
    return compose(sources, weights), labels


def focus_map_image(labels: np.ndarray, num_sources: int) -> np.ndarray:
    """The map as an 8-bit gray image: label ``k`` -> ``k * 255 // (N - 1)`` (the
    convention of ``ifcnn-synth``'s ``-MAP.png`` files)."""
    return (labels.astype(np.int32) * 255 // max(num_sources - 1, 1)).astype(np.uint8)
