"""Twitter CoNLL data: the `IMGID:` format of the Twitter-2015/2017 releases, BIO labels and entity chunks.

A file is a sequence of tweets; each starts with `IMGID:<id>`, then one `token<TAB>tag` per line, and a blank line
separates tweets. Tags are kept exactly as read (Twitter-2015's `OTHER` stays `OTHER` in a `Tweet`) so that a file
round-trips byte for byte; `normalize_tag` maps them onto the model's label set when a dataset is encoded.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

ENTITY_TYPES = ("PER", "LOC", "ORG", "MISC")
LABELS = ("O",) + tuple(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I"))
LABEL2ID = {label: i for i, label in enumerate(LABELS)}
TYPE_ALIASES = {"OTHER": "MISC"}


@dataclass
class Tweet:
    """One tweet: its image id, whitespace tokens and (optionally) gold BIO tags."""

    image_id: str
    tokens: list[str]
    tags: list[str] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


@dataclass(frozen=True)
class Entity:
    """A chunk over word positions [start, end) with its type; `score` is the model's confidence when predicted."""

    start: int
    end: int
    type: str
    score: float | None = None

    def key(self) -> tuple[str, int, int]:
        return (self.type, self.start, self.end)

    def to_json(self, tokens: Sequence[str] | None = None) -> dict:
        """{"type", "start", "end"} (+ "text" when the tweet's tokens are given, + "score" when predicted)."""
        row = {"type": self.type, "start": self.start, "end": self.end}
        if tokens is not None:
            row["text"] = " ".join(tokens[self.start:self.end])
        if self.score is not None:
            row["score"] = round(float(self.score), 4)
        return row


def normalize_tag(tag: str) -> str:
    """Map a dataset tag onto LABELS (`B-OTHER` -> `B-MISC`); unknown types raise a clear error."""
    if tag == "O":
        return tag
    prefix, _, etype = tag.partition("-")
    etype = TYPE_ALIASES.get(etype, etype)
    label = f"{prefix}-{etype}"
    if label not in LABEL2ID:
        raise ValueError(f"unknown tag {tag!r}: expected O or B-/I- with one of {ENTITY_TYPES} (or OTHER)")
    return label


# ----------------------------------------------------------------------------------------------- reading / writing
def parse_conll(text: str, source: str = "<string>") -> list[Tweet]:
    tweets: list[Tweet] = []
    current: Tweet | None = None
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.startswith("IMGID:"):
            current = Tweet(image_id=line[len("IMGID:"):], tokens=[], tags=[])
            tweets.append(current)
        elif line == "":
            continue
        else:
            if current is None:
                raise ValueError(f"{source}:{lineno}: token line before any IMGID: line")
            token, sep, tag = line.rpartition("\t")
            if not sep:
                raise ValueError(f"{source}:{lineno}: expected 'token<TAB>tag', got {line!r}")
            current.tokens.append(token)
            current.tags.append(tag)
    return tweets


def read_conll(path: str | Path) -> list[Tweet]:
    path = Path(path)
    return parse_conll(path.read_text(encoding="utf-8"), source=str(path))


def format_conll(tweets: Iterable[Tweet], trailing_blank: bool = False) -> str:
    """Inverse of `parse_conll`; `trailing_blank` adds the blank line some releases end with."""
    blocks = []
    for tw in tweets:
        tags = tw.tags if tw.tags is not None else ["O"] * len(tw.tokens)
        lines = [f"IMGID:{tw.image_id}"] + [f"{tok}\t{tag}" for tok, tag in zip(tw.tokens, tags)]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks) + ("\n" if trailing_blank and blocks else "")


def write_conll(tweets: Iterable[Tweet], path: str | Path, trailing_blank: bool = False) -> None:
    Path(path).write_text(format_conll(tweets, trailing_blank), encoding="utf-8")


SPLITS = {"train": "train.txt", "dev": "valid.txt", "valid": "valid.txt", "test": "test.txt"}


def split_path(data: str | Path, split: str) -> Path:
    """The file of one split: `data` is a dataset folder (train.txt/valid.txt/test.txt) or a CoNLL file."""
    data = Path(data)
    if data.is_file():
        return data
    path = data / SPLITS.get(split, split)
    if not path.is_file():
        raise FileNotFoundError(f"no {split} split at {path}")
    return path


def read_tweets(path: str | Path) -> list[Tweet]:
    """Read tweets to tag from CoNLL (.txt/.conll), JSONL ({"id"|"image_id", "text"|"tokens"}) or CSV (same columns)."""
    path = Path(path)
    if path.suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    else:
        return read_conll(path)
    return [_tweet_from_row(row, i, path) for i, row in enumerate(rows)]


def _tweet_from_row(row: dict, index: int, path: Path) -> Tweet:
    image_id = str(row.get("image_id") or row.get("id") or index)
    tokens = row.get("tokens")
    if isinstance(tokens, str):
        tokens = json.loads(tokens)
    if tokens is None:
        if "text" not in row:
            raise ValueError(f"{path}: row {index} has neither 'tokens' nor 'text'")
        tokens = tokenize(row["text"])
    return Tweet(image_id=image_id, tokens=list(tokens), tags=row.get("tags"))


_HTML_ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);$")  # "&amp;" stays one token, as in the tweets


def tokenize(text: str) -> list[str]:
    """Whitespace tokenisation with punctuation split off word ends, close to the Twitter releases' tokens."""
    out: list[str] = []
    for word in text.split():
        tail: list[str] = []
        while (len(word) > 1 and word[-1] in ".,!?;:\"')" and not word.startswith(("http", "@", "#"))
               and not _HTML_ENTITY.search(word)):
            tail.insert(0, word[-1])
            word = word[:-1]
        while len(word) > 1 and word[0] in "\"'(":
            out.append(word[0])
            word = word[1:]
        out.append(word)
        out.extend(tail)
    return out


# ------------------------------------------------------------------------------------------------------- chunks
def bio_to_entities(tags: Sequence[str], scores: Sequence[float] | None = None) -> list[Entity]:
    """conlleval chunking: a B- starts a chunk, an I- continues a chunk of its type and otherwise starts one
    (so an orphan I- counts as a chunk, as in conlleval/seqeval's default mode)."""
    entities: list[Entity] = []
    start, etype = None, None

    def close(end: int) -> None:
        if start is not None:
            score = None if scores is None else float(sum(scores[start:end]) / (end - start))
            entities.append(Entity(start, end, etype, score))

    for i, raw in enumerate(tags):
        tag = normalize_tag(raw)
        prefix, _, t = tag.partition("-")
        if prefix == "B" or (prefix == "I" and t != etype):
            close(i)
            start, etype = i, t
        elif prefix == "O":
            close(i)
            start, etype = None, None
    close(len(tags))
    return entities


def entities_to_bio(entities: Iterable[Entity], length: int) -> list[str]:
    tags = ["O"] * length
    for ent in entities:
        tags[ent.start] = f"B-{ent.type}"
        for i in range(ent.start + 1, ent.end):
            tags[i] = f"I-{ent.type}"
    return tags


def char_offsets(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of each token in `" ".join(tokens)` (the text shown to users and annotators)."""
    spans, pos = [], 0
    for tok in tokens:
        spans.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    return spans


@dataclass
class Prediction:
    """What the model says about one tweet. `entities` carry a confidence each (mean CRF marginal of their tags);
    `score` is the confidence of the whole tagging (the least confident word's marginal)."""

    tweet: Tweet
    tags: list[str]
    entities: list[Entity]
    score: float
    caption: str = ""
    image_problem: str | None = None  # None when the image was used; else why the image branch was masked
    details: dict | None = None  # attention maps, gate values, caption attention (only when asked for)

    def to_json(self) -> dict:
        """The prediction as one JSON object (prediction files, the app's JSON view); details are left out."""
        tokens = self.tweet.tokens
        return {"image_id": self.tweet.image_id, "tokens": list(tokens), "tags": list(self.tags),
                "entities": [e.to_json(tokens) for e in self.entities], "score": round(float(self.score), 4),
                "caption": self.caption, "image_problem": self.image_problem}
