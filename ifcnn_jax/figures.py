"""Captioned figures of image groups (sources and fused results), as PNG bytes.

Used by ``ifcnn-eval`` (one row per test group) and by training (validation grids).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from PIL import Image

THUMBNAIL_HEIGHT = 160
CAPTION_HEIGHT = 18
TITLE_HEIGHT = 20
PADDING = 6


def _font(size: int):

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


def thumbnail(image: np.ndarray, height: int = THUMBNAIL_HEIGHT, *, smooth: bool = True) -> Image.Image:
    """An RGB picture of ``image`` (gray or RGB; uint8, uint16 or float 0-1) scaled to
    ``height`` pixels; ``smooth=False`` enlarges with nearest neighbours (pixels stay
    visible in small crops)."""

    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image * np.float32(255) + 0.5, 0, 255).astype(np.uint8)
    picture = Image.fromarray(image).convert("RGB")
    scale = height / picture.height
    resample = Image.Resampling.LANCZOS if smooth else Image.Resampling.NEAREST
    return picture.resize((max(1, round(picture.width * scale)), height), resample)


def figure_png(rows: Sequence[tuple[str, Sequence[tuple[str, Image.Image]]]]) -> bytes:
    """PNG bytes: one row per group, its title, then each thumbnail with a caption.
    All thumbnails must share one height."""

    font, title_font = _font(12), _font(14)
    height = rows[0][1][0][1].height
    width = max(PADDING + sum(t.width + PADDING for _, t in images) for _, images in rows)
    row_height = TITLE_HEIGHT + height + CAPTION_HEIGHT + PADDING
    canvas = Image.new("RGB", (width, PADDING + row_height * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    y = PADDING
    for title, images in rows:
        draw.text((PADDING, y + 2), title, fill="black", font=title_font)
        x = PADDING
        for caption, thumb in images:
            canvas.paste(thumb, (x, y + TITLE_HEIGHT))
            text = _fit(draw, caption, font, thumb.width)
            draw.text((x, y + TITLE_HEIGHT + height + 2), text, fill="black", font=font)
            x += thumb.width + PADDING
        y += row_height
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
