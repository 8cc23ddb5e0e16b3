"""Caption metrics: BLEU-1..4 and CIDEr-D from the standard COCO caption evaluation code (`pycocoevalcap`).

The one place the project scores captions (per-epoch validation, `itjner caption evaluate`, the anchors).
pycocoevalcap's BLEU and CIDEr scorers are pure Python; its PTB tokenizer (like METEOR and SPICE) needs Java, so
captions are normalised here instead: lower-cased, punctuation dropped, inner apostrophes kept (`caption_tokenize`).

CIDEr-D weighs n-grams by an idf computed from the references of the images scored together: a score is a
property of the whole set of images, meaningless for one image alone, and only comparable on the same image set.
"""
from __future__ import annotations

import math
from typing import Hashable, Mapping, Sequence

from .tokenization_captioner import caption_tokenize

METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "cider")


def normalise(caption: str | Sequence[str]) -> str:
    """A caption (string or word list) as pycocoevalcap wants it: lower-case words joined by single spaces."""
    text = caption if isinstance(caption, str) else " ".join(caption)
    return " ".join(caption_tokenize(text))


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


class CiderDReward:
    """Per-caption CIDEr-D against one image's references, with the idf of a fixed corpus (the training
    references), for self-critical training: pycocoevalcap's own CIDEr-D code, with its document frequencies
    computed once from `references` instead of from the captions scored together."""

    def __init__(self, references: Mapping[Hashable, Sequence[str | Sequence[str]]]):
        from pycocoevalcap.cider.cider_scorer import CiderScorer

        corpus = CiderScorer(n=4, sigma=6.0)
        for refs in references.values():
            corpus.cook_append(None, [normalise(r) for r in refs])
        corpus.compute_doc_freq()
        self.cooked = {key: cooked for key, cooked in zip(references, corpus.crefs)}
        self.document_frequency = corpus.document_frequency
        self.ref_len = math.log(float(len(corpus.crefs)))

    def __call__(self, keys: Sequence[Hashable], candidates: Sequence[str | Sequence[str]]) -> list[float]:
        """CIDEr-D of candidates[i] against the references of keys[i] (x10, as pycocoevalcap)."""
        from pycocoevalcap.cider.cider_scorer import cook_test

        scorer = _FixedIdfCider(self.document_frequency, self.ref_len)
        scorer.crefs = [self.cooked[k] for k in keys]
        scorer.ctest = [cook_test(normalise(c)) for c in candidates]
        return [float(s) for s in scorer.compute_cider()]


def _fixed_idf_cider_class():
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    class FixedIdfCider(CiderScorer):
        """pycocoevalcap's scorer, except that compute_cider cannot reset ref_len (log corpus size) to the batch."""

        def __init__(self, document_frequency, ref_len: float):
            super().__init__(n=4, sigma=6.0)
            self.document_frequency, self._fixed_ref_len = document_frequency, ref_len

        ref_len = property(lambda self: getattr(self, "_fixed_ref_len", None), lambda self, value: None)

    return FixedIdfCider


def _FixedIdfCider(document_frequency, ref_len):  # noqa: N802 - builds the subclass lazily (optional import)
    global _FIXED_IDF_CIDER
    if _FIXED_IDF_CIDER is None:
        _FIXED_IDF_CIDER = _fixed_idf_cider_class()
    return _FIXED_IDF_CIDER(document_frequency, ref_len)


_FIXED_IDF_CIDER = None
