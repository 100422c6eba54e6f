"""Synthetic multi-focus examples: a sharp photo, a focus map, and sources blurred
outside their in-focus region (the recipe of IFCNN's training set).

The paper builds its training pairs from NYU-D2 RGB-D photos: the image is split at a
depth level, one source keeps the near part sharp and blurs the far part, the other
does the opposite, and the sharp photo is the ground truth. Photos without depth get a
random focus map instead (smooth blobs or random shapes). With N > 2 focus planes the
map has N labels and source k is sharp exactly where the label is k.

Everything here runs on the host in NumPy/OpenCV and is deterministic given the
``numpy.random.Generator`` passed in. Photos come in as uint8 (0-255) or floats
(0-1); examples come out as HWC RGB float32 on 0-1, the project's pixel scale
(``ifcnn_jax.io.images.to_8bit`` rounds them to 8 bits). Blurring and composing are
linear, so they work on whatever scale they are given. Depth maps are HW floats where
larger means farther.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np

from ifcnn_jax.errors import IFCNNError

FOCUS_MAP_KINDS: tuple[str, ...] = ("depth", "smooth", "shapes")


def gaussian_sigma(radius: int) -> float:
    """Standard deviation of the blur kernel of radius ``radius`` (pixels).

    Eq. (4) of the paper as corrected in the authors' README: ``ksize = 2 * radius + 1``
    and ``sigma = 0.6 * (ksize - 1) + 0.8``. This is not OpenCV's default sigma for
    that ksize, so the kernel is always built with this sigma explicitly.
    """
    ksize = 2 * radius + 1
    return 0.6 * (ksize - 1) + 0.8


def gaussian_kernel(radius: int) -> np.ndarray:
    """The paper's 1-D Gaussian kernel, ``(2 * radius + 1,)`` float64, summing to 1.

    ``G(i) = alpha * exp(-(i - radius)^2 / (2 sigma^2))`` for ``i = 0 .. 2 radius``,
    with ``sigma`` from :func:`gaussian_sigma` and ``alpha`` normalising the sum to 1.
    The 2-D blur is this kernel applied along rows and then columns.
    """
    if int(radius) != radius or radius < 1:
        raise IFCNNError(f"blur radius must be an integer >= 1, got {radius!r}")
    radius = int(radius)
    offsets = np.arange(2 * radius + 1, dtype=np.float64) - radius
    weights = np.exp(-(offsets**2) / (2.0 * gaussian_sigma(radius) ** 2))
    return weights / weights.sum()


def blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Blurs an HW or HWC image with the paper's Gaussian kernel of ``radius``.

    Borders are mirrored without repeating the edge pixel (OpenCV's
    ``BORDER_REFLECT_101``). Returns float32 on the input's scale.
    """
    kernel = gaussian_kernel(radius)
    return cv2.sepFilter2D(
        np.asarray(image, np.float32), cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REFLECT_101
    )


def compose_sources(sharp: np.ndarray, labels: np.ndarray, radii: Sequence[int]) -> np.ndarray:
    """The N source images of a multi-focus example.

    ``sharp`` is HWC (any scale), ``labels`` an HW integer map with values in
    ``0 .. N-1`` and ``radii`` the N blur radii. Source k equals ``sharp`` where
    ``labels == k`` and ``blur(sharp, radii[k])`` everywhere else. Returns
    ``(N, H, W, C)`` float32 on the scale of ``sharp``.
    """
    sharp = np.asarray(sharp, np.float32)
    if sharp.ndim != 3:
        raise IFCNNError(f"sharp image must be HWC, got shape {sharp.shape}")
    if labels.shape != sharp.shape[:2]:
        raise IFCNNError(f"focus map shape {labels.shape} does not match image {sharp.shape[:2]}")
    sources = []
    for k, radius in enumerate(radii):
        in_focus = (labels == k)[..., None]
        sources.append(np.where(in_focus, sharp, blur(sharp, radius)))
    return np.stack(sources).astype(np.float32)


def depth_focus_map(
    depth: np.ndarray,
    num_planes: int,
    rng: np.random.Generator,
    *,
    quantile_range: tuple[float, float] = (0.2, 0.8),
) -> np.ndarray:
    """Splits a depth map into ``num_planes`` focus planes at random depth levels.

    The levels are depth quantiles drawn uniformly from ``quantile_range`` (so every
    plane covers part of the image). Label 0 is the nearest plane. Larger depth is
    farther; non-finite or non-positive depth (missing measurements) counts as farthest.
    Returns an HW uint8 label map.
    """
    depth = np.asarray(depth, np.float64)
    if depth.ndim != 2:
        raise IFCNNError(f"depth map must be HW, got shape {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        raise IFCNNError("depth map has no valid (finite, positive) values")
    filled = np.where(valid, depth, np.inf)
    quantiles = np.sort(rng.uniform(*quantile_range, size=num_planes - 1))
    levels = np.quantile(depth[valid], quantiles)
    return np.searchsorted(levels, filled, side="right").astype(np.uint8)


def smooth_focus_map(
    shape: tuple[int, int],
    num_planes: int,
    rng: np.random.Generator,
    *,
    quantile_range: tuple[float, float] = (0.3, 0.7),
) -> np.ndarray:
    """A random focus map with smooth, blob-like regions, HW uint8 in ``0 .. N-1``.

    Low-resolution Gaussian noise (2 to 6 cells per side) is upsampled bicubically and
    split at random quantiles, so region boundaries are smooth curves.
    """
    height, width = shape
    cells = int(rng.integers(2, 7))
    noise = rng.standard_normal((cells, cells)).astype(np.float32)
    field = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    quantiles = np.sort(rng.uniform(*quantile_range, size=num_planes - 1))
    levels = np.quantile(field, quantiles)
    return np.searchsorted(levels, field, side="right").astype(np.uint8)


def shapes_focus_map(
    shape: tuple[int, int], num_planes: int, rng: np.random.Generator, *, max_shapes: int = 4
) -> np.ndarray:
    """A random focus map of filled ellipses and polygons, HW uint8 in ``0 .. N-1``.

    The background is plane 0; each of 1 to ``max_shapes`` shapes is painted (later
    shapes on top) with a random plane in ``1 .. N-1``, so every plane but possibly
    some of ``2 .. N-1`` is present.
    """
    height, width = shape
    labels = np.zeros((height, width), np.uint8)
    for i in range(int(rng.integers(1, max_shapes + 1))):
        label = 1 if i == 0 else int(rng.integers(1, num_planes))
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        if rng.random() < 0.5:
            axes = (max(1, int(rng.uniform(0.1, 0.4) * width)), max(1, int(rng.uniform(0.1, 0.4) * height)))
            cv2.ellipse(
                labels, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, label, thickness=-1
            )
        else:
            corners = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
            spread = rng.uniform(0.15, 0.45, corners)
            points = np.stack(
                [cx + spread * width * np.cos(angles), cy + spread * height * np.sin(angles)], axis=1
            )
            cv2.fillPoly(labels, [np.round(points).astype(np.int32)], label)
    return labels


@dataclasses.dataclass(frozen=True)
class FocusExample:
    """One synthetic multi-focus example.

    ``sources`` ``(N, h, w, 3)`` and ``target`` ``(h, w, 3)`` are float32 on 0-1;
    ``labels`` ``(h, w)`` uint8 says which source is in focus at each pixel; ``radii``
    are the blur radii per source; ``box`` is ``(top, left, h, w)`` of the crop in the
    input image and ``flipped`` whether the crop was mirrored left-right afterwards.
    """

    sources: np.ndarray
    target: np.ndarray
    labels: np.ndarray
    radii: tuple[int, ...]
    box: tuple[int, int, int, int]
    flipped: bool


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HW gray, HWx1, HWx3 or HWx4 (alpha dropped) -> HWx3, same dtype."""
    image = np.asarray(image)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[..., :3]
    raise IFCNNError(f"expected an HW or HWC image with 1, 3 or 4 channels, got shape {image.shape}")


def random_crop_box(
    shape: tuple[int, int], crop_size: int | None, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """A uniformly placed ``(top, left, h, w)`` square crop; the whole image if
    ``crop_size`` is None. Raises ``IFCNNError`` if the image is smaller."""
    height, width = shape
    if crop_size is None:
        return 0, 0, height, width
    if height < crop_size or width < crop_size:
        raise IFCNNError(f"image of size {height}x{width} is smaller than the crop size {crop_size}")
    top = int(rng.integers(0, height - crop_size + 1))
    left = int(rng.integers(0, width - crop_size + 1))
    return top, left, crop_size, crop_size


def synthesize_example(
    image: np.ndarray,
    depth: np.ndarray | None = None,
    *,
    rng: np.random.Generator,
    crop_size: int | None = None,
    num_sources: int = 2,
    radius_range: tuple[int, int] = (2, 8),
    focus_map: str = "auto",
    flip: bool = True,
) -> FocusExample:
    """Makes one multi-focus example from a sharp photo (and optionally its depth).

    ``image``: HW or HWC, uint8 (0-255) or float (0-1). ``depth``: HW, larger = farther.
    ``focus_map``: ``"depth"`` (needs ``depth``), ``"smooth"``, ``"shapes"``, or
    ``"auto"`` (depth when given, else smooth or shapes at random). A random square
    crop of ``crop_size`` is taken (whole image if None), mirrored left-right with
    probability 1/2 when ``flip``; each source gets a blur radius drawn uniformly from
    the inclusive ``radius_range``. Blurring sees ``radius_range[1]`` pixels of real
    context around the crop where the image has them.
    """
    if num_sources < 2:
        raise IFCNNError(f"num_sources must be >= 2, got {num_sources}")
    low, high = radius_range
    if not (1 <= low <= high):
        raise IFCNNError(f"radius_range must satisfy 1 <= min <= max, got {radius_range}")
    if focus_map not in FOCUS_MAP_KINDS + ("auto",):
        raise IFCNNError(
            f"unknown focus map kind {focus_map!r}; expected one of {FOCUS_MAP_KINDS + ('auto',)}"
        )
    image = to_rgb(image)
    if depth is not None and np.shape(depth) != image.shape[:2]:
        raise IFCNNError(f"depth map shape {np.shape(depth)} does not match image {image.shape[:2]}")
    if focus_map == "depth" and depth is None:
        raise IFCNNError("focus_map='depth' needs a depth map")
    if focus_map == "auto":
        focus_map = "depth" if depth is not None else ("smooth" if rng.random() < 0.5 else "shapes")

    box = random_crop_box(image.shape[:2], crop_size, rng)
    top, left, h, w = box
    flipped = bool(flip and rng.random() < 0.5)
    radii = tuple(int(r) for r in rng.integers(low, high + 1, size=num_sources))

    # Blur a window with real context around the crop, then cut the crop out of it.
    margin = high
    y0, x0 = max(0, top - margin), max(0, left - margin)
    y1, x1 = min(image.shape[0], top + h + margin), min(image.shape[1], left + w + margin)
    window = _unit(image[y0:y1, x0:x1])
    inner = (slice(top - y0, top - y0 + h), slice(left - x0, left - x0 + w))

    if focus_map == "depth":
        labels = depth_focus_map(np.asarray(depth)[top : top + h, left : left + w], num_sources, rng)
    elif focus_map == "smooth":
        labels = smooth_focus_map((h, w), num_sources, rng)
    else:
        labels = shapes_focus_map((h, w), num_sources, rng)
    window_labels = np.full(window.shape[:2], 255, np.uint8)  # 255: no source is sharp
    window_labels[inner] = labels
    sources = compose_sources(window, window_labels, radii)[:, inner[0], inner[1]]
    target = window[inner]
    if flipped:
        sources, target, labels = sources[:, :, ::-1], target[:, ::-1], labels[:, ::-1]
    return FocusExample(
        sources=np.ascontiguousarray(sources),
        target=np.ascontiguousarray(target),
        labels=np.ascontiguousarray(labels),
        radii=radii,
        box=box,
        flipped=flipped,
    )


def example_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of example ``index`` of a dataset drawn with ``seed``:
    each example depends only on (seed, index), so any subset can be regenerated."""
    return np.random.default_rng([int(seed), int(index)])


def _unit(image: np.ndarray) -> np.ndarray:
    """uint8 (0-255) or float (0-1) -> float32 on 0-1."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255)
    if image.dtype.kind != "f":
        raise IFCNNError(f"expected a uint8 (0-255) or float (0-1) photo, got {image.dtype}")
    return image.astype(np.float32)
