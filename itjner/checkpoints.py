"""ITJNER checkpoint folders: what makes one, where the embedded default is, how to find them, their cards.

A checkpoint is a folder written by `ITJNERModel.save_pretrained` (or `itjner train --out DIR`): config.json and
model.safetensors, usually with card.json and a README.md model card.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "assets" / "itjner-lite-twitter2017"
REQUIRED_FILES = ("config.json", "model.safetensors")


class NotACheckpoint(FileNotFoundError):
    """A folder that is not an ITJNER checkpoint; the message says what is missing and how to get one."""


def is_checkpoint(folder: str | os.PathLike) -> bool:
    return all((Path(folder) / name).is_file() for name in REQUIRED_FILES)


def require_checkpoint(folder: str | os.PathLike) -> Path:
    """The folder as a Path, or NotACheckpoint with the reason."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise NotACheckpoint(f"Checkpoint folder not found: {folder}")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise NotACheckpoint(f"{folder} is not an ITJNER checkpoint: it lacks {' and '.join(missing)} (a checkpoint "
                             "is a folder written by `itjner train --out DIR` or `save_pretrained`).")
    return folder


def find_checkpoints(roots: Sequence[str | os.PathLike], limit: int = 30) -> list[str]:
    """Checkpoint folders directly inside `roots` (and the roots themselves), for the chooser."""
    found: list[str] = []
    for root in map(Path, roots):
        if not root.is_dir():
            continue
        for folder in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
            if is_checkpoint(folder) and str(folder) not in found:
                found.append(str(folder))
            if len(found) >= limit:
                return found
    return found


def load_card(folder: str | os.PathLike) -> dict:
    """card.json of a checkpoint (data, seed, metrics, command), {} when it has none."""
    path = Path(folder) / "card.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def is_toy(card: dict) -> bool:
    """A model trained on the drawn toy world (useless on real tweets)."""
    return bool(card.get("toy")) or str(card.get("data", "")).startswith("toy world")


def describe(folder: str | os.PathLike) -> str:
    """One line for a model picker: name, what it reads, what it was trained on, its test F1."""
    folder = Path(folder)
    card = load_card(folder)
    if is_toy(card):
        return f"{folder.name} · drawn toy images only (not for real tweets)"
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return f"{folder.name} · unreadable config.json"
    reads = "+".join(["text"] + [m for m, key in (("image", "use_image"), ("caption", "use_caption"))
                                 if config.get(key)])
    parts = [folder.name, reads]
    if card.get("data"):
        parts.append(f"trained on {Path(str(card['data'])).name}")
    f1 = (card.get("test") or {}).get("overall", {}).get("f1")
    if f1 is not None:
        parts.append(f"test F1 {f1:.1f}")
    return " · ".join(parts)


def model_card_text(folder: str | os.PathLike) -> str:
    """The checkpoint's README.md model card, or a line saying it has none."""
    path = Path(folder) / "README.md"
    return path.read_text(encoding="utf-8") if path.is_file() else f"{Path(folder).name} has no model card."


DEFAULT_CAPTIONER = REPO / "assets" / "captioner-flickr8k"  # the paper's captioner, trained on real photos
DEFAULT_CAPTION_SPEC = "lstm:assets/captioner-flickr8k"


def checkpoint_version(folder: str | os.PathLike) -> str:
    """`<folder name>-<first 8 hex of sha256 of its weights>` (model.safetensors, and the adapter's weights when it
    has one): two different checkpoints never share it, a copied or renamed-back checkpoint keeps it."""
    import hashlib

    from .adapters import adapter_files
    from .caching import file_sha256

    folder = Path(folder)
    files = [folder / "model.safetensors"] + adapter_files(folder)
    try:
        digests = [file_sha256(path) for path in files]
    except OSError:
        return folder.name
    digest = digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()
    return f"{folder.name}-{digest[:8]}"
