"""Entity-level micro P/R/F1 over exact (type, start, end) chunks, overall and per type (conlleval chunking)."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from .data import ENTITY_TYPES, bio_to_entities


def _prf(tp: int, n_pred: int, n_gold: int) -> dict:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": 100 * p, "recall": 100 * r, "f1": 100 * f, "tp": tp, "pred": n_pred, "gold": n_gold}


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """gold/pred: per tweet, per word BIO tags. Returns {"overall": {...}, "PER": {...}, ...}."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold tweets but {len(pred)} predicted")
    tp, n_pred, n_gold = Counter(), Counter(), Counter()
    for g_tags, p_tags in zip(gold, pred):
        if len(g_tags) != len(p_tags):
            raise ValueError("gold and predicted tag sequences differ in length")
        g = {e.key() for e in bio_to_entities(g_tags)}
        p = {e.key() for e in bio_to_entities(p_tags)}
        for key in g:
            n_gold[key[0]] += 1
        for key in p:
            n_pred[key[0]] += 1
        for key in g & p:
            tp[key[0]] += 1
    result = {"overall": _prf(sum(tp.values()), sum(n_pred.values()), sum(n_gold.values()))}
    for t in ENTITY_TYPES:
        result[t] = _prf(tp[t], n_pred[t], n_gold[t])
    return result


def format_scores(scores: dict) -> str:
    rows = [f"{'type':<8}{'P':>8}{'R':>8}{'F1':>8}{'gold':>7}"]
    for name in ("overall",) + ENTITY_TYPES:
        s = scores[name]
        rows.append(f"{name:<8}{s['precision']:8.2f}{s['recall']:8.2f}{s['f1']:8.2f}{s['gold']:7d}")
    return "\n".join(rows)
