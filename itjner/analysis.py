"""Error analysis of predicted entity chunks against gold ones: what kind of error each chunk is, a gold-vs-predicted
type confusion matrix, and one JSON row per tweet. No UI and no model here.

Error kinds (chunks as conlleval reads them, see data.bio_to_entities):

- exact matches (same type, start, end) are correct and are removed first;
- the remaining gold and predicted chunks are paired when their word spans overlap (a predicted chunk takes the
  overlapping gold chunk with the most shared words; ties go to the same type, then to the leftmost), each chunk
  in at most one pair;
- a pair with the same span is a **wrong type**; with the same type but another span a **wrong boundary**; with
  both different a **wrong type and boundary**;
- an unpaired gold chunk is **missed**, an unpaired predicted chunk is **spurious**.

Confusion matrix: rows are gold types plus "none" (spurious), columns predicted types plus "none" (missed).
`mode="exact"` (the default, consistent with the exact-match F1) counts a type pair only for chunks with the same
span; a boundary error then shows as one missed gold chunk and one spurious predicted chunk. `mode="overlap"` also
counts the overlapping pairs above under their two types. In both modes the row of a type sums to its number of
gold chunks and the column to its number of predicted chunks.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .data import ENTITY_TYPES, Entity, bio_to_entities
from .metrics import entity_scores

MISSED, SPURIOUS = "missed", "spurious"
WRONG_TYPE, WRONG_BOUNDARY, WRONG_BOTH = "wrong type", "wrong boundary", "wrong type and boundary"
ERROR_KINDS = (MISSED, SPURIOUS, WRONG_TYPE, WRONG_BOUNDARY, WRONG_BOTH)
NONE = "none"


@dataclass(frozen=True)
class ChunkError:
    kind: str
    gold: Entity | None = None
    pred: Entity | None = None

    def to_json(self, tokens: Sequence[str] | None = None) -> dict:
        row = {"kind": self.kind, "gold": _chunk_json(self.gold, tokens), "pred": _chunk_json(self.pred, tokens)}
        return row


def _chunk_json(ent: Entity | None, tokens: Sequence[str] | None) -> dict | None:
    return None if ent is None else ent.to_json(tokens)


def _overlap(a: Entity, b: Entity) -> int:
    return max(0, min(a.end, b.end) - max(a.start, b.start))


def align(gold: Iterable[Entity], pred: Iterable[Entity]) -> tuple[list[tuple[Entity, Entity]], list[ChunkError]]:
    """(exact matches as (gold, pred) pairs, errors) for one tweet; see the module docstring for the rules."""
    gold, pred = list(gold), list(pred)
    pred_keys = {p.key(): p for p in pred}
    matches = [(g, pred_keys[g.key()]) for g in gold if g.key() in pred_keys]
    matched = {g.key() for g, _ in matches}
    gold_left = sorted((g for g in gold if g.key() not in matched), key=lambda e: (e.start, e.end))
    pred_left = sorted((p for p in pred if p.key() not in matched), key=lambda e: (e.start, e.end))
    errors: list[ChunkError] = []
    used: set[int] = set()
    for p in pred_left:
        best, best_rank = None, None
        for gi, g in enumerate(gold_left):
            if gi in used or not _overlap(g, p):
                continue
            rank = (_overlap(g, p), g.type == p.type, -g.start)
            if best_rank is None or rank > best_rank:
                best, best_rank = gi, rank
        if best is None:
            errors.append(ChunkError(SPURIOUS, None, p))
            continue
        used.add(best)
        g = gold_left[best]
        same_span = (g.start, g.end) == (p.start, p.end)
        kind = WRONG_TYPE if same_span else (WRONG_BOUNDARY if g.type == p.type else WRONG_BOTH)
        errors.append(ChunkError(kind, g, p))
    errors.extend(ChunkError(MISSED, g, None) for gi, g in enumerate(gold_left) if gi not in used)
    errors.sort(key=lambda e: min(x.start for x in (e.gold, e.pred) if x is not None))
    return matches, errors


def classify_errors(gold_tags: Sequence[str], pred_tags: Sequence[str]) -> list[ChunkError]:
    """Errors of one tweet given its gold and predicted BIO tags."""
    return align(bio_to_entities(gold_tags), bio_to_entities(pred_tags))[1]


def confusion_counts(pairs: Iterable[tuple[Sequence[str], Sequence[str]]], mode: str = "exact",
                     types: Sequence[str] = ENTITY_TYPES) -> tuple[list[str], list[str], list[list[int]]]:
    """Gold-vs-predicted chunk type counts over (gold tags, predicted tags) pairs of tweets.
    Returns (row labels = types + ["none"], column labels = types + ["none"], matrix[row][col])."""
    if mode not in ("exact", "overlap"):
        raise ValueError(f"unknown confusion mode {mode!r}: use 'exact' or 'overlap'")
    labels = list(types) + [NONE]
    index = {t: i for i, t in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]

    def add(g: str, p: str) -> None:
        matrix[index.get(g, index[NONE])][index.get(p, index[NONE])] += 1

    for gold_tags, pred_tags in pairs:
        matches, errors = align(bio_to_entities(gold_tags), bio_to_entities(pred_tags))
        for g, p in matches:
            add(g.type, p.type)
        for err in errors:
            paired = err.gold is not None and err.pred is not None
            if paired and (mode == "overlap" or err.kind == WRONG_TYPE):
                add(err.gold.type, err.pred.type)
            else:
                if err.gold is not None:
                    add(err.gold.type, NONE)
                if err.pred is not None:
                    add(NONE, err.pred.type)
    return labels, labels, matrix


def score_table(scores: dict) -> list[list]:
    """entity_scores(...) -> rows [name, P, R, F1, gold, predicted, correct] (percentages rounded to 2 places)."""
    rows = []
    for name in ("overall",) + tuple(ENTITY_TYPES):
        s = scores[name]
        rows.append([name, round(s["precision"], 2), round(s["recall"], 2), round(s["f1"], 2), s["gold"], s["pred"],
                     s["tp"]])
    return rows


SCORE_HEADERS = ["type", "P", "R", "F1", "gold", "predicted", "correct"]


def tweet_row(index: int, image_id: str, tokens: Sequence[str], gold_tags: Sequence[str],
              pred_tags: Sequence[str], pred_entities: Sequence[Entity] | None = None,
              image_problem: str | None = None, caption: str = "") -> dict:
    """One JSON-serialisable row for the JSONL download: tweet, gold and predicted chunks, errors by kind."""
    gold = bio_to_entities(gold_tags)
    pred = list(pred_entities) if pred_entities is not None else bio_to_entities(pred_tags)
    _, errors = align(gold, pred)
    return {
        "index": index,
        "image_id": image_id,
        "text": " ".join(tokens),
        "tokens": list(tokens),
        "gold_tags": list(gold_tags),
        "pred_tags": list(pred_tags),
        "gold": [_chunk_json(e, tokens) for e in gold],
        "pred": [_chunk_json(e, tokens) for e in pred],
        "errors": [e.to_json(tokens) for e in errors],
        "error_kinds": sorted({e.kind for e in errors}, key=ERROR_KINDS.index),
        "image_problem": image_problem,
        "caption": caption,
    }


def filter_rows(rows: Iterable[dict], kinds: Iterable[str] | None = None, types: Iterable[str] | None = None
                ) -> list[dict]:
    """Rows with at least one error of one of `kinds` (all kinds when None) that involves one of `types` (gold or
    predicted type; all types when None). Rows without errors never pass."""
    kinds = set(ERROR_KINDS if kinds is None else kinds)
    types = None if types is None else set(types)
    out = []
    for row in rows:
        for err in row["errors"]:
            if err["kind"] not in kinds:
                continue
            involved = {c["type"] for c in (err["gold"], err["pred"]) if c}
            if types is None or involved & types:
                out.append(row)
                break
    return out


@dataclass
class AnalysisResult:
    rows: list[dict]
    scores: dict
    confusion: tuple[list[str], list[str], list[list[int]]]

    @property
    def error_rows(self) -> list[dict]:
        return [r for r in self.rows if r["errors"]]


def analyse(tweets: Sequence, predictions: Sequence, mode: str = "exact") -> AnalysisResult:
    """tweets (data.Tweet with gold tags) and their predictions (data.Prediction) -> rows, scores, confusion."""
    if len(tweets) != len(predictions):
        raise ValueError(f"{len(tweets)} tweets but {len(predictions)} predictions")
    gold = [t.tags for t in tweets]
    pred = [p.tags for p in predictions]
    rows = [tweet_row(i, t.image_id, t.tokens, t.tags, p.tags, p.entities, p.image_problem, p.caption)
            for i, (t, p) in enumerate(zip(tweets, predictions))]
    return AnalysisResult(rows, entity_scores(gold, pred), confusion_counts(zip(gold, pred), mode))


def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
