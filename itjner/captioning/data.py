"""Image-caption data for the captioner: caption files, split lists, references per image, and mirrored captions.

Captions are read from a CSV with a header `image,caption` (Flickr8k's captions.txt), COCO-format JSON (`images`:
id/file_name, `annotations`: image_id/caption) or JSONL (`{"image": "<file name>", "caption": "..."}` per line).
Split lists hold one image file name a line.
"""
from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..tokenization_captioner import caption_tokenize


@dataclass(frozen=True)
class CaptionPair:
    image: str    # file name relative to the images folder
    caption: str


# ------------------------------------------------------------------------------------------------------- readers
def read_captions(path: str | Path) -> list[CaptionPair]:
    """CSV with an `image,caption` header, COCO-format JSON or JSONL, chosen by content (a JSON object with
    `annotations` is COCO; a first line naming the columns image and caption is CSV)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    stripped = text.lstrip()
    first_line = stripped.split("\n", 1)[0].strip()
    if not first_line.startswith("{") and "image" in first_line and "caption" in first_line:
        return _read_csv(text, path)
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # several objects: JSONL
        if isinstance(data, dict) and ("annotations" in data or "images" in data):
            return _read_coco(data, path)
    return _read_jsonl(text, path)


def _read_csv(text: str, path) -> list[CaptionPair]:
    """Flickr8k's captions.txt: header `image,caption`, one caption a row (quoted where it holds commas)."""
    reader = csv.reader(io.StringIO(text.lstrip()))
    header = [h.strip().lower() for h in next(reader)]
    if "image" not in header or "caption" not in header:
        raise ValueError(f"{path}: a CSV caption file needs a header naming the columns `image` and `caption` "
                         f"(got {header})")
    i_image, i_caption = header.index("image"), header.index("caption")
    pairs = []
    for lineno, row in enumerate(reader, 2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}:{lineno}: expected {len(header)} columns, got {len(row)} "
                             "(quote captions that contain commas)")
        image, caption = row[i_image].strip(), row[i_caption].strip()
        if not image or not caption:
            raise ValueError(f"{path}:{lineno}: empty image name or caption")
        pairs.append(CaptionPair(image, caption))
    return pairs


def _read_coco(data: dict, path) -> list[CaptionPair]:
    if "images" not in data or "annotations" not in data:
        raise ValueError(f"{path}: COCO caption JSON needs `images` and `annotations` lists")
    names = {img["id"]: img["file_name"] for img in data["images"]}
    pairs = []
    for ann in data["annotations"]:
        if ann["image_id"] not in names:
            raise ValueError(f"{path}: annotation {ann.get('id')} refers to unknown image_id {ann['image_id']!r}")
        pairs.append(CaptionPair(names[ann["image_id"]], ann["caption"].strip()))
    return pairs


def _read_jsonl(text: str, path) -> list[CaptionPair]:
    pairs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append(CaptionPair(str(row["image"]), str(row["caption"]).strip()))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f'{path}:{lineno}: expected {{"image": ..., "caption": ...}} ({err})') from err
    return pairs


def read_image_list(path: str | Path) -> list[str]:
    """A split file: one image file name a line (blank lines and surrounding spaces ignored), order kept,
    duplicates refused."""
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{path}: image listed twice: {name}")
        seen.add(name)
    if not names:
        raise ValueError(f"{path}: no image names")
    return names


# ------------------------------------------------------------------------------------------------------- splits
def select_images(pairs: list[CaptionPair], names: Sequence[str], what: str = "split") -> list[CaptionPair]:
    """The pairs of the listed images (in caption-file order); an image of the list without captions is an error."""
    wanted = set(names)
    chosen = [p for p in pairs if p.image in wanted]
    missing = wanted - {p.image for p in chosen}
    if missing:
        raise ValueError(f"{len(missing)} image(s) of the {what} list have no caption in the caption file, "
                         f"e.g. {sorted(missing)[0]}")
    return chosen


def references_by_image(pairs: Sequence[CaptionPair]) -> dict[str, list[str]]:
    """image -> its captions, in file order."""
    refs: dict[str, list[str]] = defaultdict(list)
    for p in pairs:
        refs[p.image].append(p.caption)
    return dict(refs)


def split_by_image(pairs: list[CaptionPair], val_fraction: float, seed: int):
    """Train/validation pairs, split by image so no validation image is seen in training."""
    images = sorted({p.image for p in pairs})
    random.Random(seed).shuffle(images)
    n_val = round(len(images) * val_fraction)
    if val_fraction > 0 and len(images) > 1:
        n_val = min(max(n_val, 1), len(images) - 1)
    val_images = set(images[:n_val])
    return [p for p in pairs if p.image not in val_images], [p for p in pairs if p.image in val_images]


# --------------------------------------------------------------------------------------------------- augmentation
_MIRRORED_WORDS = {"left": "right", "right": "left"}


def mirror_caption(caption: str) -> str:
    """The caption of the mirrored image: "left" and "right" swap (tokenised, lower-case words)."""
    return " ".join(_MIRRORED_WORDS.get(w, w) for w in caption_tokenize(caption))
