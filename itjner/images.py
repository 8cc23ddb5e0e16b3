"""Images in, region features out: safe decoding, and an on-disk cache of frozen-backbone features.

A tweet's image is `<images_dir>/<image_id>.jpg`. Anything that cannot be used (missing file, undecodable bytes,
decompression bomb) yields `None` features plus a reason; the model then masks its image branch for that tweet.
Features are cached keyed by (backbone name, sha256 of the image bytes), so a backbone runs once per image ever.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageOps

from .caching import LRUCache

MAX_PIXELS = 40_000_000  # decoded size limit: larger JPEGs are decoded reduced (libjpeg), other formats refused
MIN_SIDE = 8             # smaller images are refused: too small for 7x7 regions to mean anything


class ImageError(ValueError):
    """An image that cannot be used; the message is meant for users."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("ITJNER_CACHE", Path.home() / ".cache" / "itjner"))


def decode_image(data: bytes, min_side: int | None = None) -> Image.Image:
    """Bytes -> RGB PIL image (EXIF orientation applied, any mode converted); ImageError with the reason if not.
    min_side: the image only feeds a backbone that resizes to min_side x min_side, so a large JPEG may be decoded at
    1/2, 1/4 or 1/8 scale in libjpeg (never below min_side on either side): a 1600x1200 photo decodes and
    preprocesses in 5 ms instead of 20 ms. Images already near min_side are decoded exactly as without it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size checks below decide
            image = Image.open(io.BytesIO(data))
            _reduce_or_refuse(image, min_side)
            image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError:  # Pillow refuses past 2x its own limit before anything is decoded
        raise ImageError("the image is too large to decode safely (over ~180 megapixels)") from None
    except Exception as err:  # Pillow raises many types for corrupt input
        raise ImageError(_unreadable(err)) from None
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, "white")
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
        return background
    if image.mode in ("I;16", "I;16B", "I", "F"):
        image = image.point(lambda v: v / 256).convert("L") if image.mode != "F" else image.convert("L")
    return image.convert("RGB")


def _reduce_or_refuse(image: Image.Image, min_side: int | None) -> None:
    """Decode a JPEG at 1/2, 1/4 or 1/8 scale when the caller needs less (min_side) or when it is over MAX_PIXELS
    (a 100-megapixel phone photo); refuse other formats over MAX_PIXELS, and images too small to show regions."""
    w, h = image.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"the image is too small to read ({w}x{h} pixels; at least {MIN_SIDE} on each side)")
    if min_side and image.format == "JPEG":
        image.draft(None, (min_side, min_side))
    if image.size[0] * image.size[1] > MAX_PIXELS and image.format == "JPEG":
        scale = 2
        while w * h / (scale * scale) > MAX_PIXELS and scale < 8:
            scale *= 2
        image.draft(None, (w // scale, h // scale))
    if image.size[0] * image.size[1] > MAX_PIXELS:
        raise ImageError(f"the image is too large to decode safely ({w}x{h} = {w * h / 1e6:.0f} megapixels; "
                         f"at most {MAX_PIXELS / 1e6:.0f} for non-JPEG images)")


def _unreadable(err: Exception) -> str:
    """A user-facing reason, without Python internals (object reprs, addresses)."""
    if isinstance(err, Image.UnidentifiedImageError):
        return "not a readable image (unknown or corrupt image format)"
    if isinstance(err, OSError) and "truncated" in str(err).lower():
        return "not a readable image (the file is truncated)"
    return f"not a readable image (corrupt data: {err.__class__.__name__})"


def image_path(images_dir: str | Path | None, image_id: str) -> Path | None:
    if images_dir is None:
        return None
    name = image_id if Path(image_id).suffix else f"{image_id}.jpg"
    return Path(images_dir) / name


def read_image_bytes(images_dir, image_id: str) -> bytes | None:
    """The bytes of `<images_dir>/<image_id>.jpg`, or None when there is no such file."""
    path = image_path(images_dir, image_id)
    return path.read_bytes() if path is not None and path.is_file() else None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class ImageReport:
    """How many images were usable, and why the others were not (printed as one warning summary)."""

    total: int = 0
    problems: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def add(self, image_id: str, problem: str | None) -> None:
        self.total += 1
        if problem:
            kind = problem.split(" (")[0]
            self.problems[kind] += 1
            self.examples.setdefault(kind, image_id)

    def summary(self) -> str:
        if not self.problems:
            return f"images: all {self.total} usable"
        parts = [f"{n} {kind} (e.g. {self.examples[kind]})" for kind, n in self.problems.most_common()]
        return f"images: {self.total - sum(self.problems.values())} of {self.total} usable; image branch masked for " + \
            ", ".join(parts)


class FeatureStore:
    """Region features of a frozen image backbone, computed once per image content and cached on disk."""

    def __init__(self, backbone, cache_dir: str | Path | None = None, batch_size: int = 16,
                 max_in_memory: int = 4096):
        """max_in_memory: features kept in RAM, least recently used dropped first (Lite0: 125 KiB each, so the
        default holds ~0.5 GiB); the disk cache keeps everything, so a million-image run stays bounded."""
        self.backbone = backbone
        root = Path(cache_dir) if cache_dir else default_cache_dir() / "features"
        self.dir = root / backbone.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self.memory: LRUCache[torch.Tensor] = LRUCache(max_in_memory)

    def _file(self, digest: str) -> Path:
        return self.dir / f"{digest}.pt"

    def _lookup(self, digest: str) -> torch.Tensor | None:
        feats = self.memory.get(digest)
        if feats is not None:
            return feats
        path = self._file(digest)
        if path.exists():
            try:
                feats = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # a torn write from an interrupted run: recompute
                path.unlink(missing_ok=True)
                return None
            self.memory.put(digest, feats)
            return feats
        return None

    def _store(self, digest: str, feats: torch.Tensor) -> torch.Tensor:
        half = feats.half().clone()
        tmp = self._file(digest).with_name(f"{digest}.{os.getpid()}.tmp")  # one per process: torchrun ranks share it
        torch.save(half, tmp)
        tmp.replace(self._file(digest))
        self.memory.put(digest, half)
        return half

    def features_for_bytes(self, blobs: list[bytes | None], digests: list[str | None] | None = None
                           ) -> tuple[list[torch.Tensor | None], list[str | None]]:
        """Features (regions, C) per image (None where unusable) and a problem string per image. `digests`: the
        images' sha256 when the caller has them (each upload is hashed once)."""
        feats: list[torch.Tensor | None] = [None] * len(blobs)
        problems: list[str | None] = [None] * len(blobs)
        todo: list[tuple[int, str, Image.Image]] = []
        for i, data in enumerate(blobs):
            if data is None:
                problems[i] = "missing"
                continue
            digest = (digests[i] if digests is not None else None) or sha256(data)
            cached = self._lookup(digest)
            if cached is not None:
                feats[i] = cached
                continue
            try:
                todo.append((i, digest, decode_image(data, self.backbone.spec.size)))
            except ImageError as err:
                problems[i] = f"unreadable ({err})"
        computed = self.backbone.features_of_images([img for _, _, img in todo], self.batch_size)
        for (i, digest, _), f in zip(todo, computed):
            feats[i] = self._store(digest, f)
        return feats, problems

    def features_for_ids(self, images_dir, image_ids: list[str], report: ImageReport | None = None):
        blobs = [read_image_bytes(images_dir, image_id) for image_id in image_ids]
        feats, problems = self.features_for_bytes(blobs)
        if report is not None:
            for image_id, problem in zip(image_ids, problems):
                report.add(image_id, problem)
        return feats, problems

