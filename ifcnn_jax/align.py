"""Registration of hand-held shots before fusion (``ifcnn-fuse --align``).

Every source is registered to one reference source with OpenCV's ECC
(``cv2.findTransformECC``, Evangelidis and Psarakis 2008), coarse to fine over an image
pyramid, started from a phase-correlation translation (``cv2.phaseCorrelate``) at the
coarsest level. ECC registers lightly smoothed gray images; its correlation is
invariant to a gain and an offset, and a focus difference (a symmetric blur) lowers the
correlation without moving its peak. Exposure brackets are first histogram-equalised
(each image's tone curve replaced by its own cumulative histogram), which removes most
of an exposure difference, since exposures of one scene differ by a monotonic tone
curve until they clip. Equalisation is not used for one exposure: differently blurred
images have different histograms, and equalising them biased the estimate by 0.1-0.4 px
on synthetic multi-focus pairs (0.01-0.1 px without). Gradient-magnitude images were
tried too and were less accurate (0.1-0.8 px): a focus difference changes them far more.

Transforms are 3x3 matrices ``T`` that map a pixel ``(x, y, 1)`` of the reference to
the matching point of the source (in homogeneous coordinates, pixel centres at
integers): the registered source is ``source(T @ (x, y, 1))``. The reference's is the
identity.

A registration that fails or is implausible raises ``IFCNNError`` naming the source:
ECC does not converge; the transform stretches by more than 10% in some direction
(a scale change or a shear), folds the image, or leaves the source covering less than
half of the reference; or the registered images do not match (their band-pass
correlation, see :func:`_structure_correlation`, is below 0.3).

Registration across modalities (infrared/visible, CT/MR) is out of scope: the same
structure has unrelated intensities and gradients there.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
from collections.abc import Sequence

import cv2
import numpy as np

from ifcnn_jax.errors import IFCNNError

METHODS: tuple[str, ...] = ("off", "translation", "euclidean", "affine", "homography")
_MOTION = {
    "translation": cv2.MOTION_TRANSLATION,
    "euclidean": cv2.MOTION_EUCLIDEAN,
    "affine": cv2.MOTION_AFFINE,
    "homography": cv2.MOTION_HOMOGRAPHY,
}
# The tasks whose sources show the same structure with related intensities (up to focus
# or exposure); infrared/visible and medical sources do not.
ALIGNABLE_TASKS: tuple[str, ...] = ("multifocus", "exposure")

MAX_SCALE_CHANGE = 0.10  # |local stretch - 1| in any direction, at the corners and the centre
MIN_OVERLAP = 0.5  # fraction of the reference that a registered source must cover
EXPOSURE_DIFFERENCE = 0.05  # mean brightness difference above which images are equalised
MIN_STRUCTURE_CORRELATION = 0.3  # band-pass correlation of the registered images (see below)
COARSEST_SIDE = 64  # the pyramid stops before its shorter side gets below this
MAX_REGISTRATION_SIDE = 2048  # larger images are registered on a pyramid level this size
CONVENTION = "transform @ (x, y, 1) of a reference pixel gives the source pixel; pixel centres at integers"
_ECC_ITERATIONS = 60
_ECC_EPS = 1e-5


@dataclasses.dataclass
class Alignment:
    """The result of :func:`align`.

    Attributes:
      images: the registered sources, same type and channels as given; the reference is
        returned as it is. Without ``crop`` they have the reference's size and the
        areas a source does not cover are filled from the reference; with ``crop``
        all are cropped to ``crop_box``.
      transforms: per source, a float64 3x3 matrix mapping reference pixels to source
        pixels (the reference's is the identity).
      reference: the index of the reference source.
      method: the motion model used.
      correlations: per source, ECC's correlation coefficient at full resolution
        (1.0 for the reference).
      structure_correlations: per source, the band-pass correlation of the registered
        images that the plausibility check uses (1.0 for the reference).
      crop_box: ``(x, y, width, height)`` in reference pixels of the largest rectangle
        that every source covers; the images were cropped to it only if ``cropped``.
      cropped: whether ``images`` were cropped.
      equalised: whether histogram-equalised images were registered.
    """

    images: list[np.ndarray]
    transforms: list[np.ndarray]
    reference: int
    method: str
    correlations: list[float]
    crop_box: tuple[int, int, int, int]
    cropped: bool
    equalised: bool = False
    structure_correlations: list[float] = dataclasses.field(default_factory=list)

    def to_dict(self, names: Sequence[str] | None = None) -> dict:
        """A JSON-ready report: the method, the reference, and per source its
        transform (3x3 nested lists) and correlation."""
        names = list(names) if names is not None else [f"source {i + 1}" for i in range(len(self.images))]
        x, y, w, h = self.crop_box
        return {
            "method": self.method,
            "reference": self.reference,
            "convention": CONVENTION,
            "crop_box": {"x": x, "y": y, "width": w, "height": h},
            "cropped": self.cropped,
            "equalised": self.equalised,
            "sources": [
                {"name": n, "transform": t.tolist(), "correlation": c, "structure_correlation": sc}
                for n, t, c, sc in zip(names, self.transforms, self.correlations, self.structure_correlations)
            ],
        }


def align(
    images: Sequence[np.ndarray],
    method: str = "homography",
    reference: int = 0,
    *,
    crop: bool = False,
    equalise: bool | None = None,
    names: Sequence[str] | None = None,
) -> Alignment:
    """Registers every source to ``images[reference]``.

    Args:
      images: ``(H, W)`` gray or ``(H, W, 3)`` RGB arrays of one size; ``uint8``,
        ``uint16`` or float in [0, 1].
      method: ``translation``, ``euclidean`` (rotation and shift), ``affine`` or
        ``homography`` (``off``: nothing is estimated, identity transforms).
      reference: index of the source the others are registered to (0-based).
      crop: crop every result to the largest rectangle that all sources cover, instead
        of filling the uncovered areas from the reference.
      equalise: register histogram-equalised images (for exposure brackets) rather
        than the gray images (for one exposure, where equalisation would only add a
        bias: it maps differently blurred images differently). None (the default)
        decides from the images: equalised when a source's mean brightness differs
        from the reference's by more than ``EXPOSURE_DIFFERENCE`` (5% of full scale).
        ``ifcnn_jax.fuse`` passes True for ``exposure`` and False for ``multifocus``.
      names: labels for the sources in error messages (file names); default
        ``source 1``, ``source 2``...

    Raises:
      IFCNNError: bad arguments, or a source whose registration failed or is
        implausible (named in the message).
    """
    images = [np.asarray(im) for im in images]
    names = list(names) if names is not None else [f"source {i + 1}" for i in range(len(images))]
    if method not in METHODS:
        raise IFCNNError(f"unknown alignment method {method!r}; choose one of {', '.join(METHODS)}")
    if len(names) != len(images):
        raise IFCNNError(f"got {len(images)} images but {len(names)} names")
    if not images:
        raise IFCNNError("nothing to align: no images")
    if isinstance(reference, bool) or not isinstance(reference, (int, np.integer)):
        raise IFCNNError(f"alignment reference must be a source index, got {reference!r}")
    if not 0 <= reference < len(images):
        raise IFCNNError(
            f"alignment reference {reference} is out of range: there are {len(images)} sources "
            f"(0 to {len(images) - 1})"
        )
    shape = images[reference].shape[:2]
    for image, name in zip(images, names):
        if image.ndim not in (2, 3) or image.shape[:2] != shape:
            raise IFCNNError(
                f"{name}: size {image.shape[1::-1]} differs from the reference "
                f"{names[reference]} {shape[::-1]} (width, height)"
            )
    height, width = shape
    identity = np.eye(3)
    if method == "off":
        ones = [1.0] * len(images)
        transforms = [identity.copy() for _ in images]
        return Alignment(
            list(images), transforms, reference, method, ones, (0, 0, width, height), False, False, ones
        )
    grays = [_gray_unit(im) for im in images]
    for gray, name in zip(grays, names):
        if float(gray.max() - gray.min()) < 1e-3:
            raise IFCNNError(f"{name}: the image is flat (no structure to register)")
    if equalise is None:
        means = [float(g.mean()) for g in grays]
        equalise = max(abs(m - means[reference]) for m in means) > EXPOSURE_DIFFERENCE
    pyramids = [_pyramid(_equalise(g) if equalise else g) for g in grays]
    transforms, correlations, structures = [], [], []
    for i, (pyramid, name) in enumerate(zip(pyramids, names)):
        if i == reference:
            transforms.append(identity.copy())
            correlations.append(1.0)
            structures.append(1.0)
            continue
        transform, rho = _register(pyramids[reference], pyramid, method, name, names[reference])
        _check_plausible(transform, shape, name, names[reference])
        structure = _structure_correlation(pyramids[reference], pyramid, transform)
        if structure < MIN_STRUCTURE_CORRELATION:
            raise IFCNNError(
                f"{name}: registration to {names[reference]} is implausible: the registered images "
                f"do not match (structure correlation {structure:.2f}, at least "
                f"{MIN_STRUCTURE_CORRELATION} needed); do they overlap?"
            )
        transforms.append(transform)
        correlations.append(rho)
        structures.append(structure)
    covered = [None if i == reference else _covered(t, shape) for i, t in enumerate(transforms)]
    shared = np.logical_and.reduce([c for c in covered if c is not None])
    box = _largest_rectangle(shared)
    if box[2] == 0 or box[3] == 0:
        raise IFCNNError(f"the registered sources share no common area with {names[reference]}")
    out = []
    for i, (image, transform) in enumerate(zip(images, transforms)):
        if i == reference:
            out.append(image)
            continue
        warped = _warp(image, transform, shape)
        if not crop:
            fill = _converted_like(images[reference], warped)
            inside = covered[i][..., None] if warped.ndim == 3 else covered[i]
            warped = np.where(inside, warped, fill)
        out.append(warped)
    if crop:
        x, y, w, h = box
        out = [np.ascontiguousarray(im[y : y + h, x : x + w]) for im in out]
    return Alignment(out, transforms, reference, method, correlations, box, crop, equalise, structures)


def _gray_unit(image: np.ndarray) -> np.ndarray:
    """float32 gray in [0, 1] (BT.601 luma of RGB)."""
    unit = _unit(image)
    if unit.ndim == 3:
        unit = unit[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.ascontiguousarray(unit)


def _converted_like(image: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``image`` (the reference, to fill uncovered areas) in the sample type and channels
    of ``like``."""
    if image.dtype != like.dtype:
        unit = _gray_unit(image) if image.ndim == 2 else _unit(image)
        if like.dtype.kind == "f":
            image = unit.astype(like.dtype)
        else:
            image = np.round(unit * np.iinfo(like.dtype).max).astype(like.dtype)
    if image.ndim == 3 and like.ndim == 2:
        image = _gray_unit(image) if image.dtype.kind == "f" else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        image = image.astype(like.dtype)
    elif image.ndim == 2 and like.ndim == 3:
        image = image[..., None]
    return image


def _unit(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535
    return np.clip(image.astype(np.float32), 0, 1)


def _equalise(gray: np.ndarray, bins: int = 1024) -> np.ndarray:
    """The image's own cumulative histogram applied to it: any two exposures of one
    scene (a monotonic tone curve apart) come out nearly equal, except where clipped."""
    index = np.minimum((gray * bins).astype(np.int32), bins - 1)
    cdf = np.cumsum(np.bincount(index.ravel(), minlength=bins)).astype(np.float32)
    cdf /= cdf[-1]
    return cdf[index]


def _smoothed(level: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(level, (0, 0), 1.0)


def _pyramid(gray: np.ndarray) -> list[np.ndarray]:
    """The image, lightly smoothed, at each level, finest first; level k is the image
    ``pyrDown``-ed k times (its pixel i is pixel ``2**k * i`` of level 0)."""
    levels = [gray]
    while min(levels[-1].shape) // 2 >= COARSEST_SIDE:
        levels.append(cv2.pyrDown(levels[-1]))
    return [_smoothed(level) for level in levels]


def _scaled(transform: np.ndarray, factor: float) -> np.ndarray:
    """A transform expressed in pixels of a level ``factor`` times the size."""
    s = np.diag([factor, factor, 1.0])
    return s @ transform @ np.linalg.inv(s)


def _register(
    ref_pyramid: list[np.ndarray], src_pyramid: list[np.ndarray], method: str, name: str, ref_name: str
) -> tuple[np.ndarray, float]:
    """ECC coarse to fine from a phase-correlation start; the transform (in full
    resolution pixels) and ECC's correlation at the finest level registered."""
    coarsest = len(ref_pyramid) - 1
    ref0, src0 = ref_pyramid[coarsest], src_pyramid[coarsest]
    window = cv2.createHanningWindow(ref0.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(ref0, src0, window)
    transform = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])  # at the coarsest level
    motion = _MOTION[method]
    rho = 0.0
    finest = _finest_level(ref_pyramid)
    for level in range(coarsest, finest - 1, -1):
        if level != coarsest:
            transform = _scaled(transform, 2.0)
        warp = transform.astype(np.float32) if method == "homography" else transform[:2].astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, _ECC_ITERATIONS, _ECC_EPS)
        try:
            rho, warp = cv2.findTransformECC(
                ref_pyramid[level], src_pyramid[level], warp, motion, criteria, None, 5
            )
        except cv2.error as exc:
            reason = re.sub(r"\s+", " ", str(exc)).strip()
            reason = re.sub(r"^.*error: \(-?\d+:([^)]*)\)\s*", r"\1: ", reason)
            reason = re.sub(r"\s*in function.*$", "", reason)
            raise IFCNNError(
                f"{name}: registration to {ref_name} failed at pyramid level {level}: ECC did not "
                f"converge ({reason or 'no reason given'})"
            ) from None
        transform = (
            np.vstack([warp, [0, 0, 1]]).astype(np.float64) if warp.shape[0] == 2 else warp.astype(np.float64)
        )
        if not np.isfinite(transform).all() or abs(transform[2, 2]) < 1e-12:
            raise IFCNNError(f"{name}: registration to {ref_name} failed: degenerate transform")
        transform /= transform[2, 2]
    return _scaled(transform, 2.0**finest), float(rho)


def _finest_level(pyramid: list[np.ndarray]) -> int:
    """The finest level ECC runs on: full resolution up to ``MAX_REGISTRATION_SIDE``
    pixels on the long side, else the first level that fits (a large photo is
    registered on a downsampled copy, to a fraction of its pixel)."""
    level = 0
    while level < len(pyramid) - 1 and max(pyramid[level].shape) > MAX_REGISTRATION_SIDE:
        level += 1
    return level


def _corners(shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    return np.array(
        [
            [0, 0],
            [width - 1, 0],
            [0, height - 1],
            [width - 1, height - 1],
            [(width - 1) / 2, (height - 1) / 2],
        ],
        np.float64,
    )


def _local_scales(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The singular values of the transform's Jacobian at ``points`` (N, 2), shape
    (N, 2): how much the map from the reference to the source stretches a small
    neighbourhood, in its most and least stretched direction (a shear stretches one
    direction and shrinks the other, so it counts as a scale change too)."""

    def project(p: np.ndarray) -> np.ndarray:
        h = np.hstack([p, np.ones((len(p), 1))]) @ transform.T
        return h[:, :2] / h[:, 2:]

    step = 0.5
    dx = (project(points + [step, 0]) - project(points - [step, 0])) / (2 * step)
    dy = (project(points + [0, step]) - project(points - [0, step])) / (2 * step)
    jacobians = np.stack([dx, dy], axis=2)  # (N, 2 outputs, 2 inputs)
    return np.linalg.svd(jacobians, compute_uv=False)


def _structure_correlation(
    ref_pyramid: list[np.ndarray], src_pyramid: list[np.ndarray], transform: np.ndarray
) -> float:
    """Normalised correlation of the band-pass (difference of Gaussians, sigma 4 and 8
    pixels of the full image) reference and registered source over the area both
    cover, computed at half resolution. Unlike ECC's correlation it ignores the smooth
    shading that unrelated images share. On the release images it is at least 0.87 for
    the Lytro pairs and 0.31 for any two frames of a MEDataset bracket; of 320
    registrations of non-overlapping crops and unrelated photos, the only ones above
    0.3 that passed the other checks were adjacent crops of a repetitive scene."""
    level = min(max(1, _finest_level(ref_pyramid)), len(ref_pyramid) - 1)
    reference, source = ref_pyramid[level], src_pyramid[level]
    transform = _scaled(transform, 0.5**level)
    height, width = reference.shape
    warped = cv2.warpPerspective(
        source, transform, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    )
    covered = _covered(transform, reference.shape).astype(np.uint8)
    covered = cv2.erode(covered, np.ones((5, 5), np.uint8)).astype(np.float32)
    count = float(covered.sum())
    if count < 16:
        return 0.0
    sigma = 4.0 / 2**level
    a, b = (
        cv2.GaussianBlur(im, (0, 0), sigma) - cv2.GaussianBlur(im, (0, 0), 2 * sigma)
        for im in (reference, warped)
    )
    a -= float((a * covered).sum()) / count
    b -= float((b * covered).sum()) / count
    a *= covered
    b *= covered
    denominator = np.sqrt(float(np.vdot(a, a)) * float(np.vdot(b, b)))
    return float(np.vdot(a, b) / denominator) if denominator > 0 else 0.0


def _check_plausible(transform: np.ndarray, shape, name: str, ref_name: str) -> None:
    points = np.hstack([_corners(shape), np.ones((5, 1))]) @ transform.T
    if np.any(points[:, 2] <= 1e-6):
        raise IFCNNError(
            f"{name}: registration to {ref_name} is implausible: the transform folds the image over; "
            "do the images overlap?"
        )
    scales = _local_scales(transform, _corners(shape)).ravel()
    worst = float(scales[np.argmax(np.abs(scales - 1))])
    if abs(worst - 1) > MAX_SCALE_CHANGE:
        raise IFCNNError(
            f"{name}: registration to {ref_name} is implausible: scale change of {100 * (worst - 1):+.0f}% "
            f"(more than {100 * MAX_SCALE_CHANGE:.0f}%)"
        )
    overlap = float(_covered(transform, shape).mean())
    if overlap < MIN_OVERLAP:
        raise IFCNNError(
            f"{name}: registration to {ref_name} is implausible: the source covers {100 * overlap:.0f}% "
            f"of the reference (at least {100 * MIN_OVERLAP:.0f}% needed)"
        )


def _covered(transform: np.ndarray, shape: tuple[int, int], rows: int = 256) -> np.ndarray:
    """Reference pixels whose source position lies inside the source image (computed
    in bands of ``rows`` rows, so a large image costs little besides the mask)."""
    height, width = shape
    t = transform.astype(np.float32)
    xs = np.arange(width, dtype=np.float32)[None, :]
    eps = 1e-3
    out = np.empty(shape, bool)
    for top in range(0, height, rows):
        ys = np.arange(top, min(top + rows, height), dtype=np.float32)[:, None]
        w = t[2, 0] * xs + t[2, 1] * ys + t[2, 2]
        u = (t[0, 0] * xs + t[0, 1] * ys + t[0, 2]) / w
        v = (t[1, 0] * xs + t[1, 1] * ys + t[1, 2]) / w
        out[top : top + rows] = (
            (w > 0) & (u >= -eps) & (u <= width - 1 + eps) & (v >= -eps) & (v <= height - 1 + eps)
        )
    return out


def _largest_rectangle(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The largest axis-aligned rectangle ``(x, y, w, h)`` inside a convex mask (the
    intersection of the sources' footprints is convex), from each row's extent. Images
    over 512 pixels are searched on 2x2 blocks (a block counts if all its pixels are
    inside), so the rectangle may be up to a pixel short on each side there."""
    factor = 2 if min(mask.shape) > 512 else 1
    if factor > 1:
        height, width = (mask.shape[0] // factor) * factor, (mask.shape[1] // factor) * factor
        blocks = mask[:height, :width].reshape(height // factor, factor, width // factor, factor)
        x, y, w, h = _largest_rectangle(blocks.all(axis=(1, 3)))
        return (x * factor, y * factor, w * factor, h * factor)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return (0, 0, 0, 0)
    width = mask.shape[1]
    any_row = mask[rows]
    left = np.argmax(any_row, axis=1)
    right = width - np.argmax(any_row[:, ::-1], axis=1)  # exclusive
    best, box = 0, (0, 0, 0, 0)
    heights = np.arange(1, len(rows) + 1)
    for i in range(len(rows)):
        widths = np.maximum(np.minimum.accumulate(right[i:]) - np.maximum.accumulate(left[i:]), 0)
        areas = widths * heights[: len(widths)]
        j = int(np.argmax(areas))
        if areas[j] > best:
            best = int(areas[j])
            box = (int(np.max(left[i : i + j + 1])), int(rows[i]), int(widths[j]), j + 1)
    return box


def _warp(image: np.ndarray, transform: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image(transform @ x)`` on the reference grid, bicubic; values kept in range."""
    height, width = shape
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    source = image if image.dtype != np.float64 else image.astype(np.float32)
    if np.allclose(transform[2], [0, 0, 1]):
        warped = cv2.warpAffine(
            source, transform[:2], (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE
        )
    else:
        warped = cv2.warpPerspective(
            source, transform, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE
        )
    if warped.dtype.kind == "f":
        np.clip(warped, 0, 1, out=warped)
    return warped.astype(image.dtype, copy=False)


class _CallableModule(types.ModuleType):
    """``ifcnn_jax.align`` names both this module and its :func:`align`: importing the
    module makes it the package's ``align`` attribute, so the module itself calls
    :func:`align` and ``ifcnn_jax.align(images, ...)`` works either way."""

    def __call__(self, *args, **kwargs) -> Alignment:
        return align(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
