"""Caption metrics: BLEU-1..4 and CIDEr-D from the standard COCO caption evaluation code (`pycocoevalcap`).

The one place the project scores captions (per-epoch validation, `python -m itjner.caption evaluate`, the anchors).
pycocoevalcap's BLEU and CIDEr scorers are pure Python; its PTB tokenizer (like METEOR and SPICE) needs Java, so
captions are normalised here instead: lower-cased, punctuation dropped, inner apostrophes kept (`tokenize`).

CIDEr-D weighs n-grams by an idf computed from the references of the images scored together: a score is a
property of the whole set of images, meaningless for one image alone, and only comparable on the same image set.
"""
from __future__ import annotations

from typing import Hashable, Mapping, Sequence

from .modeling_captioner import tokenize

METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "cider")


def normalise(caption: str | Sequence[str]) -> str:
    """A caption (string or word list) as pycocoevalcap wants it: lower-case words joined by single spaces."""
    text = caption if isinstance(caption, str) else " ".join(caption)
    return " ".join(tokenize(text))


def score_captions(references: Mapping[Hashable, Sequence[str | Sequence[str]]],
                   candidates: Mapping[Hashable, str | Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 (closest reference length) and CIDEr-D (sigma 6, x10, as in COCO) of one candidate per
    image against that image's references. Both are dicts keyed by image; captions may be strings or word lists."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError as err:  # pragma: no cover - the dependency is pinned in requirements.txt
        raise ImportError("caption metrics need pycocoevalcap: pip install pycocoevalcap==1.2") from err
    if set(references) != set(candidates):
        missing = set(references) ^ set(candidates)
        raise ValueError(f"references and candidates must cover the same images ({len(missing)} differ, "
                         f"e.g. {sorted(map(str, missing))[:3]})")
    if not references:
        raise ValueError("no images to score")
    keys = list(references)
    gts = {i: [normalise(r) for r in references[k]] for i, k in enumerate(keys)}
    res = {i: [normalise(candidates[k])] for i, k in enumerate(keys)}
    if any(not refs for refs in gts.values()):
        raise ValueError("every image needs at least one reference caption")
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu1": float(bleu[0]), "bleu2": float(bleu[1]), "bleu3": float(bleu[2]), "bleu4": float(bleu[3]),
            "cider": float(cider)}


NAMES = {"bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4", "cider": "CIDEr"}


def format_scores(scores: Mapping[str, float]) -> str:
    return "  ".join(f"{NAMES[name]} {scores[name]:.4f}" for name in METRICS if name in scores)
