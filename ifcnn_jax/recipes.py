"""The four fusion recipes of the authors' demo (``Code/IFCNN_Main.py``), to the pixel.

Each recipe turns source images into the model's input space, runs the network, and
turns the result back into an image, with the demo's exact conversions:

* ``multifocus``: RGB / 255, ImageNet mean/std normalisation; the output is
  de-normalised, clipped to [0, 1], multiplied by 255 and *truncated* to uint8.
* ``infrared`` and ``medical``: gray copied to three channels, mean 0 and std 1; the
  truncated uint8 RGB output goes back to gray with OpenCV's RGB2GRAY (BT.601).
* ``exposure``: PIL's RGB->YCbCr; the Y channels go through the network; the fused Y
  is rescaled to [16, 235] and enhanced with CLAHE (clip 2.0, 8x8 tiles); Cb and Cr
  are weighted by their distance from 128; OpenCV converts YCrCb back to RGB.

Beyond the demo: a colour image among the sources of ``infrared`` or ``medical``
(a visible photo, a SPECT/PET scan) gives a colour result: its luminance is fused with
the other sources and its chroma is kept. Gray sources given to ``multifocus`` give a
gray result. 16-bit sources are scaled by 1/65535 and, on the gray paths, give a
16-bit result; float sources (values in [0, 1]) give a float result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from ifcnn_jax.align import ALIGNABLE_TASKS, METHODS, Alignment
from ifcnn_jax.align import align as register
from ifcnn_jax.decision_map import DecisionMapSettings, fuse_by_decision_map
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.folded import FoldedIFCNN
from ifcnn_jax.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ifcnn_jax.io.images import to_8bit
from ifcnn_jax.tasks import TASKS

if TYPE_CHECKING:
    from ifcnn_jax.model import IFCNN

# The network's input normalisations as float32 arrays: colour multi-focus sources take
# ImageNet's (ifcnn_jax.imagenet), gray and luminance inputs none.
_IMAGENET_MEAN = np.array(IMAGENET_MEAN, np.float32)
_IMAGENET_STD = np.array(IMAGENET_STD, np.float32)
_IDENTITY_MEAN = np.zeros(3, np.float32)
_IDENTITY_STD = np.ones(3, np.float32)
CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILES = (8, 8)


def fuse(
    model: IFCNN | FoldedIFCNN,
    images: Sequence[np.ndarray],
    task: str = "multifocus",
    *,
    tile: int | None = None,
    names: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    decision_map: bool = False,
    align: str = "off",
    align_reference: int = 0,
    crop: bool = False,
) -> np.ndarray:
    """Fuses two or more source images with a task recipe.

    Args:
      model: an inference-mode IFCNN (``ifcnn_jax.load``), or the same as a
        ``FoldedIFCNN`` (``ifcnn_jax.folded.load_folded``, no Flax). The demo uses the MAX model
        for multifocus, infrared and medical, and the MEAN model for exposure.
      images: ``(H, W)`` gray or ``(H, W, 3)`` RGB arrays of one size; ``uint8``
        (0-255), ``uint16`` (0-65535) or float (0-1). A fourth (alpha) channel is
        dropped. For ``infrared``, the demo's order is visible first, infrared second.
      task: one of ``TASKS``.
      tile: forwarded to :func:`ifcnn_jax.inference.forward` (None: automatic tiling
        of very large images; 0: never; an int: that tile size).
      names: optional labels for the images (file names), used in error messages.
      progress: optional ``progress(done, total)`` called after each tile of a tiled
        fusion (a progress bar for long fusions).
      decision_map: multifocus only: compose the result from the sources' own pixels,
        weighted by a cleaned per-pixel map of which source is in focus, decided from
        the network's output (``ifcnn_jax.decision_map``; :func:`fuse_with_focus_map`
        also returns the map).
      align: ``off`` (the default: the sources are registered already), or the motion
        model with which every source is first registered to one of them
        (``translation``, ``euclidean``, ``affine``, ``homography``; see
        :func:`ifcnn_jax.align.align`). Only for ``multifocus`` and ``exposure``.
      align_reference: index (0-based) of the source the others are registered to.
      crop: with ``align``, crop the result to the area all sources cover; without it
        (the default) the uncovered areas are filled from the reference.

    Returns:
      The fused image: ``(H, W, 3)`` RGB when the result is in colour, else ``(H, W)``;
      ``uint8`` unless all sources are ``uint16`` (then ``uint16``, gray recipes and
      multifocus only) or float (then float32 in [0, 1]). Call
      :func:`ifcnn_jax.align.align` first to get the estimated transforms.
    """
    fused, _ = fuse_with_alignment(
        model,
        images,
        task,
        tile=tile,
        names=names,
        progress=progress,
        decision_map=decision_map,
        align=align,
        align_reference=align_reference,
        crop=crop,
    )
    return fused


def fuse_with_alignment(
    model: IFCNN | FoldedIFCNN,
    images: Sequence[np.ndarray],
    task: str = "multifocus",
    *,
    tile: int | None = None,
    names: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    decision_map: bool = False,
    align: str = "off",
    align_reference: int = 0,
    crop: bool = False,
) -> tuple[np.ndarray, Alignment | None]:
    """:func:`fuse`, also returning the :class:`~ifcnn_jax.align.Alignment` (None
    when ``align`` is ``off``)."""
    if task not in TASKS:
        raise IFCNNError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if align not in METHODS:
        raise IFCNNError(f"unknown alignment method {align!r}; choose one of {', '.join(METHODS)}")
    if align != "off" and task not in ALIGNABLE_TASKS:
        raise IFCNNError(
            f"alignment is for {' and '.join(ALIGNABLE_TASKS)} sources only, not {task}: registration "
            "across modalities (infrared/visible, medical) is not supported; register them beforehand"
        )
    if crop and align == "off":
        raise IFCNNError("crop applies to aligned sources only: choose an alignment method")
    names = list(names) if names is not None else [f"source {i + 1}" for i in range(len(images))]
    if len(names) != len(images):
        raise IFCNNError(f"got {len(images)} images but {len(names)} names")
    if len(images) < 2:
        listed = f" ({', '.join(names)})" if names else ""
        raise IFCNNError(f"fusion needs at least 2 sources, got {len(images)}{listed}")
    images = [_check_image(image, name) for image, name in zip(images, names)]
    _check_same_size(images, names)
    if decision_map and task != "multifocus":
        raise IFCNNError(f"decision_map=True is for the multifocus task, not {task}")
    alignment = None
    if align != "off":
        alignment = register(
            images, align, align_reference, crop=crop, equalise=task == "exposure", names=names
        )
        images = alignment.images
    if decision_map:
        fused, _ = fuse_with_focus_map(model, images, tile=tile, names=names, progress=progress)
        return fused, alignment
    recipe = {
        "multifocus": _multifocus,
        "infrared": _gray_modalities,
        "medical": _gray_modalities,
        "exposure": _exposure,
    }[task]
    return recipe(model, images, names, task, tile, progress), alignment


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16) and image.dtype.kind != "f":
        raise IFCNNError(f"{name}: unsupported sample type {image.dtype} (uint8, uint16 or float)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise IFCNNError(f"{name}: expected an (H, W) gray or (H, W, 3) RGB image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise IFCNNError(f"{name}: empty image {image.shape}")
    if image.dtype.kind == "f":
        image = image.astype(np.float32)
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise IFCNNError(f"{name}: float images must hold finite values in [0, 1]")
    return image


def _check_same_size(images: list[np.ndarray], names: list[str]) -> None:
    first = images[0].shape[:2]
    for image, name in zip(images[1:], names[1:]):
        if image.shape[:2] != first:
            raise IFCNNError(
                f"sources differ in size: {names[0]} is {first[1]}x{first[0]}, "
                f"{name} is {image.shape[1]}x{image.shape[0]} (width x height)"
            )


def is_colour(image: np.ndarray) -> bool:
    """True for a three-channel image whose channels are not all equal."""
    return image.ndim == 3 and not (
        np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    )


def _to_unit(image: np.ndarray) -> np.ndarray:
    """To float32 in [0, 1] exactly as torchvision's ``ToTensor`` (x / 255 in float32)."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255)
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535)
    return image.astype(np.float32)


def _output_kind(images: list[np.ndarray]) -> str:
    kinds = {"float" if im.dtype.kind == "f" else str(im.dtype) for im in images}
    return kinds.pop() if len(kinds) == 1 else "uint8"


def _run_network(
    model: IFCNN | FoldedIFCNN,
    images: list[np.ndarray],
    mean: np.ndarray,
    std: np.ndarray,
    tile: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Scales sources to [0, 1] (gray ones copied to three channels), normalises them,
    fuses, de-normalises and clips to [0, 1]: the demo's ``denorm(...).clamp(0, 1)``,
    float32 ``(H, W, 3)``.

    The input is built in one preallocated array and every step after it works in
    place, so a very large image costs the stacked input plus the output, not several
    float copies of each (the arithmetic is the same elementwise float32 operations).
    """
    height, width = images[0].shape[:2]
    stacked = np.empty((len(images), 1, height, width, 3), np.float32)
    for i, image in enumerate(images):
        unit = _to_unit(image)
        stacked[i, 0] = unit if unit.ndim == 3 else unit[:, :, None]
    stacked -= mean
    stacked /= std
    fused = _forward(model, stacked, tile, progress)
    del stacked
    out = np.asarray(fused)[0] * std  # a view of the device buffer on CPU, then one copy
    del fused
    out += mean
    return np.clip(out, 0, 1, out=out)


def forward(model, sources, *, tile=None, progress=None):
    """:func:`ifcnn_jax.inference.forward`, imported on the first call (it imports JAX)."""
    from ifcnn_jax.inference import forward as network_forward  # noqa: PLC0415 - lazy: imports JAX

    return network_forward(model, sources, tile=tile, progress=progress)


def _forward(model, stacked: np.ndarray, tile, progress):
    """The network on the stacked sources: a ``FoldedIFCNN``'s untiled fusion by the
    compiled program of ``ifcnn_jax.aot`` when its cache is on, else (and whenever that
    cannot serve it) :func:`forward`."""
    if isinstance(model, FoldedIFCNN):
        from ifcnn_jax import aot  # noqa: PLC0415 - lazy: only folded models use it

        fused = aot.forward(model, stacked, tile=tile)
        if fused is not None:
            return fused
    return forward(model, stacked, tile=tile, progress=progress)


def _quantise(unit: np.ndarray, kind: str) -> np.ndarray:
    """[0, 1] float to the output type; integer types truncate, as the demo's
    ``(x * 255).astype('uint8')``. Scales ``unit`` in place."""
    if kind == "float":
        return unit.astype(np.float32)
    if kind == "uint16":
        unit *= np.float32(65535)
        return unit.astype(np.uint16)
    unit *= np.float32(255)
    return unit.astype(np.uint8)


def _rgb_to_gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _all_colour_or_all_gray(images: list[np.ndarray], names: list[str], task: str) -> list[bool]:
    """Which sources are in colour; raises ``IFCNNError`` naming the gray ones in a mix."""
    colour = [is_colour(im) for im in images]
    if any(colour) and not all(colour):
        gray = [n for n, c in zip(names, colour) if not c]
        raise IFCNNError(f"{task} sources must be all colour or all gray; gray: {', '.join(gray)}")
    return colour


def _multifocus(model, images, names, task, tile, progress):
    colour = _all_colour_or_all_gray(images, names, task)
    kind = _output_kind(images)
    fused = _run_network(model, images, _IMAGENET_MEAN, _IMAGENET_STD, tile, progress)
    fused = _quantise(fused, kind)
    return fused if any(colour) else _rgb_to_gray(fused)


def fuse_with_focus_map(
    model: IFCNN | FoldedIFCNN,
    images: Sequence[np.ndarray],
    *,
    tile: int | None = None,
    names: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    settings: DecisionMapSettings = DecisionMapSettings(),
) -> tuple[np.ndarray, np.ndarray]:
    """Decision-map multi-focus fusion (see ``ifcnn_jax.decision_map``): returns
    ``(fused, labels)``, the result in the sources' type and layout (rounded, not
    truncated: it is composed from the sources' pixels) and the ``(H, W)`` int32 map of
    the in-focus source's index. ``images``, ``tile``, ``names`` and ``progress`` are as
    for :func:`fuse`."""
    names = list(names) if names is not None else [f"source {i + 1}" for i in range(len(images))]
    if len(images) < 2:
        raise IFCNNError(f"fusion needs at least 2 sources, got {len(images)}")
    images = [_check_image(image, name) for image, name in zip(images, names)]
    _check_same_size(images, names)
    _all_colour_or_all_gray(images, names, "multifocus")
    kind = _output_kind(images)
    network = _run_network(model, images, _IMAGENET_MEAN, _IMAGENET_STD, tile, progress)
    fused, labels = fuse_by_decision_map(network, [_to_unit(im) for im in images], settings)
    if kind == "float":
        return fused, labels
    peak = 65535 if kind == "uint16" else 255
    return np.round(fused * np.float32(peak)).astype(kind), labels


def _gray_modalities(model, images, names, task, tile, progress):
    colour = [is_colour(im) for im in images]
    if sum(colour) > 1:
        listed = ", ".join(n for n, c in zip(names, colour) if c)
        raise IFCNNError(
            f"{task} fusion takes at most one colour source (its chroma is kept); colour sources: {listed}"
        )
    if not any(colour):
        kind = _output_kind(images)
        gray = [_gray_channel(im) for im in images]
        fused = _run_network(model, gray, _IDENTITY_MEAN, _IDENTITY_STD, tile, progress)
        return _rgb_to_gray(_quantise(fused, kind))
    # A colour source: fuse its luminance with the others, keep its chroma (8-bit path).
    index = colour.index(True)
    ycbcr = pil_rgb_to_ycbcr(to_8bit(images[index]))
    lumas = [ycbcr[..., 0] if i == index else to_8bit(_gray_channel(im)) for i, im in enumerate(images)]
    fused = _run_network(model, lumas, _IDENTITY_MEAN, _IDENTITY_STD, tile, progress)
    y = _rgb_to_gray(_quantise(fused, "uint8"))
    return cv2.cvtColor(np.dstack([y, ycbcr[..., 2], ycbcr[..., 1]]), cv2.COLOR_YCrCb2RGB)


def _gray_channel(image: np.ndarray) -> np.ndarray:
    # Three equal channels (gray stored as RGB) carry one channel of information.
    return image[..., 0] if image.ndim == 3 else image


def pil_rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB to uint8 YCbCr with PIL's integer conversion, as the demo loads it."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("YCbCr"))


def fuse_chroma(planes: np.ndarray) -> np.ndarray:
    """The demo's chroma rule on ``(N, H, W)`` uint8 Cb or Cr planes, as float32 on the
    0-255 scale: ``sum_k C_k |C_k - 128| / sum_k |C_k - 128|``, and 128 where that is
    0/0. The planes take the demo's float32 round trip ``(C / 255) * 255`` first: it is
    not always exact, and the result is later truncated, so it matters."""
    channels = _to_unit(planes) * np.float32(255)
    weights = np.abs(channels - np.float32(128))
    total = np.sum(weights, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fused = np.sum(channels * weights / total, axis=0)
    fused[np.isnan(fused)] = 128
    return fused


def _exposure(model, images, names, task, tile, progress):
    colour = _all_colour_or_all_gray(images, names, task)
    images8 = [to_8bit(im) for im in images]  # CLAHE and PIL's YCbCr work on 8 bits
    ycbcr = np.stack([pil_rgb_to_ycbcr(im) for im in images8]) if all(colour) else None
    lumas = list(ycbcr[..., 0]) if ycbcr is not None else [_gray_channel(im) for im in images8]
    return finish_exposure(exposure_network(model, lumas, tile=tile, progress=progress), ycbcr)


def exposure_network(
    model: IFCNN | FoldedIFCNN,
    lumas: Sequence[np.ndarray],
    *,
    tile: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """The first stage of multi-exposure fusion, as the demo runs it: the network on
    the sources' ``(H, W)`` uint8 luminance planes (0-255, scaled to 0-1, copied to
    three channels, no normalisation), de-normalised, clipped to [0, 1] and truncated
    to ``(H, W, 3)`` uint8. :func:`finish_exposure` takes this output."""
    fused = _run_network(model, list(lumas), _IDENTITY_MEAN, _IDENTITY_STD, tile, progress)
    return _quantise(fused, "uint8")


def finish_exposure(fused_rgb: np.ndarray, ycbcr: np.ndarray | None) -> np.ndarray:
    """The demo's post-processing of the network output for multi-exposure fusion.

    Args:
      fused_rgb: the network's output as ``(H, W, 3)`` uint8 (after de-normalising,
        clipping and truncating).
      ycbcr: the sources in PIL's YCbCr, ``(N, H, W, 3)`` uint8, or None for gray
        sources.

    Returns:
      ``(H, W, 3)`` uint8 RGB, or ``(H, W)`` uint8 for gray sources. The luminance is
      rescaled to [16, 235] and enhanced with CLAHE over the whole image.
    """
    y = _rgb_to_gray(fused_rgb) / 255
    y = (y * 235 + (1 - y) * 16).astype(np.uint8)
    y = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=CLAHE_TILES).apply(y)
    if ycbcr is None:
        return y
    cb = fuse_chroma(ycbcr[..., 1]).astype(np.uint8)
    cr = fuse_chroma(ycbcr[..., 2]).astype(np.uint8)
    return cv2.cvtColor(np.dstack([y, cr, cb]), cv2.COLOR_YCrCb2RGB)
