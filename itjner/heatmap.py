"""Attention over the 7x7 image regions -> a heatmap drawn over the image, with a colour scale legend.

The image backbone sees the whole picture squashed to a square (backbones.ImageGridEncoder.preprocess), so region
(r, c) of the row-major 7x7 grid covers the rectangle [c*W/7, (c+1)*W/7) x [r*H/7, (r+1)*H/7) of the original
W x H image (after EXIF orientation). `overlay` keeps the image's real aspect ratio and stretches the grid the same
way, so a hot cell lands on the part of the picture the region saw. Colours are scaled from the smallest to the
largest weight shown; the legend prints those weights, so two maps can be compared by their numbers.

No model math here: the maps come from `Prediction.details` (see predict.py).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CMAP = "turbo"
LEGEND_WIDTH = 78
TITLE_HEIGHT = 26


def grid_side(n_regions: int) -> int:
    side = int(round(math.sqrt(n_regions)))
    if side * side != n_regions:
        raise ValueError(f"{n_regions} regions do not form a square grid")
    return side


def attention_grid(attn: np.ndarray, words: Sequence[int], head: int | None = None) -> np.ndarray:
    """attn (heads, words, regions) -> (side, side) weights of the given words (averaged), one head or the mean of
    all heads (head=None). Row 0 is the top of the image."""
    attn = np.asarray(attn, dtype=np.float32)
    if attn.ndim != 3:
        raise ValueError(f"expected (heads, words, regions), got shape {attn.shape}")
    if not words:
        raise ValueError("no words selected")
    if head is not None and not 0 <= head < attn.shape[0]:
        raise ValueError(f"head {head} out of range (the map has {attn.shape[0]} heads)")
    sel = attn[:, list(words), :].mean(axis=1)  # (heads, regions)
    weights = sel.mean(axis=0) if head is None else sel[head]
    side = grid_side(weights.shape[-1])
    return weights.reshape(side, side)


@lru_cache(maxsize=4)
def _colormap(name: str) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


@lru_cache(maxsize=8)
def _font(size: int):
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except Exception:  # pragma: no cover - matplotlib always ships DejaVu Sans
        return ImageFont.load_default()


def _normalise(grid: np.ndarray) -> tuple[np.ndarray, float, float]:
    lo, hi = float(grid.min()), float(grid.max())
    if hi - lo < 1e-12:
        return np.full_like(grid, 0.5, dtype=np.float32), lo, hi
    return ((grid - lo) / (hi - lo)).astype(np.float32), lo, hi


def upsample(grid: np.ndarray, size: tuple[int, int], smooth: bool = True) -> np.ndarray:
    """(side, side) values in 0..1 -> (H, W) array; cell (r, c) covers its 1/side-th of each axis. Bilinear
    interpolation puts each cell's value at the cell's centre (Pillow's pixel-centre convention)."""
    w, h = size
    img = Image.fromarray(np.ascontiguousarray(grid, dtype=np.float32), mode="F")
    return np.asarray(img.resize((w, h), Image.BILINEAR if smooth else Image.NEAREST), dtype=np.float32)


def fit(image: Image.Image, max_side: int, min_side: int = 0) -> Image.Image:
    """The image scaled (aspect ratio kept) so its longest side is at most max_side and, for small images, at
    least min_side (at most 4x up), so a heatmap over a thumbnail stays readable."""
    image = image.convert("RGB")
    w, h = image.size
    scale = max_side / max(w, h)
    if scale >= 1:
        scale = min(4.0, max(1.0, min_side / max(w, h)))
    if scale != 1:
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    return image


def overlay(image: Image.Image, grid: np.ndarray, *, alpha: float = 0.5, max_side: int = 512, smooth: bool = True,
            grid_lines: bool = True, legend: bool = True, title: str | None = None, cmap: str = CMAP) -> Image.Image:
    """The image (longest side <= max_side, real aspect ratio) with `grid` coloured over it; optional grid lines,
    a title band on top and a colour scale legend (weights from the map's min to max) on the right."""
    base = fit(image, max_side)
    norm, lo, hi = _normalise(np.asarray(grid, dtype=np.float32))
    values = upsample(norm, base.size, smooth)
    colours = _colormap(cmap)[np.clip((values * 255).round().astype(np.int32), 0, 255)]
    mixed = (np.asarray(base, dtype=np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha)
    picture = Image.fromarray(mixed.clip(0, 255).astype(np.uint8), "RGB")
    if grid_lines:
        _draw_grid(picture, norm.shape[0])
    if not legend and not title:
        return picture
    w, h = picture.size
    top = TITLE_HEIGHT if title else 0
    right = LEGEND_WIDTH if legend else 0
    canvas = Image.new("RGB", (w + right, max(h + top, 150 + top if legend else 0)), "white")
    canvas.paste(picture, (0, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 4), _ellipsize(title, draw, w + right - 8), fill="black", font=_font(14))
    if legend:
        _draw_legend(canvas, (w + 8, top + 4), max(h - 8, 140), lo, hi, cmap)
    return canvas


def _draw_grid(picture: Image.Image, side: int) -> None:
    draw = ImageDraw.Draw(picture, "RGBA")
    w, h = picture.size
    for k in range(1, side):
        x, y = round(k * w / side), round(k * h / side)
        draw.line([(x, 0), (x, h)], fill=(255, 255, 255, 70))
        draw.line([(0, y), (w, y)], fill=(255, 255, 255, 70))


def _ellipsize(text: str, draw: ImageDraw.ImageDraw, width: int) -> str:
    font = _font(14)
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _draw_legend(canvas: Image.Image, origin: tuple[int, int], height: int, lo: float, hi: float, cmap: str) -> None:
    x, y = origin
    font = _font(11)
    draw = ImageDraw.Draw(canvas)
    draw.text((x - 2, y), "weight", fill="black", font=font)
    top = y + 18
    bar_w, bar_h = 14, height - 24
    ramp = _colormap(cmap)[np.linspace(255, 0, bar_h).round().astype(np.int32)]  # top = max
    canvas.paste(Image.fromarray(np.repeat(ramp[:, None, :], bar_w, axis=1), "RGB"), (x, top))
    draw.rectangle((x, top, x + bar_w - 1, top + bar_h - 1), outline="black")
    for frac, value in ((0.0, hi), (0.5, (lo + hi) / 2), (1.0, lo)):
        ty = top + round(frac * (bar_h - 1))
        draw.line([(x + bar_w, ty), (x + bar_w + 3, ty)], fill="black")
        draw.text((x + bar_w + 5, ty - 6), _fmt(value), fill="black", font=font)


def _fmt(value: float) -> str:
    """4 significant digits: near-uniform maps (all weights close to 1/49) still show distinct bounds."""
    return f"{value:.4g}" if value == 0 or 1e-3 <= abs(value) < 1e4 else f"{value:.2e}"


def thumbnails(image: Image.Image, grids: Sequence[np.ndarray], labels: Sequence[str], max_side: int = 160
               ) -> list[tuple[Image.Image, str]]:
    """One small overlay per grid (e.g. the captioner's attention for each caption word), for a gallery."""
    return [(overlay(image, g, max_side=max_side, legend=False, grid_lines=False), label)
            for g, label in zip(grids, labels)]
