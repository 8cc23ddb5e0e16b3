"""Words of the region-attention captioner: `caption_tokenize` (the caption normaliser, also used by the caption
metrics) and the word <-> id `Vocabulary` stored as vocab.json in a checkpoint folder.

Not the tweet tokenizer: that is `itjner.data.tokenize`, which keeps case, punctuation, @mentions and #hashtags.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
VOCAB_FILE = "vocab.json"


def caption_tokenize(text: str) -> list[str]:
    """Lower-cased words; punctuation dropped, inner apostrophes kept ("a man's hat." -> [a, man's, hat])."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


class Vocabulary:
    """Word <-> id. Ids 0..3 are <pad>, <start>, <end>, <unk>; then words by descending count, ties alphabetical."""

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    def __init__(self, words: Sequence[str]):
        self.itos = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "Vocabulary":
        counts = Counter(w for caption in captions for w in caption_tokenize(caption))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, caption: str) -> list[int]:
        """<start> w1 .. wn <end>, unknown words -> <unk>."""
        ids = [self.stoi.get(w, self.unk_id) for w in caption_tokenize(caption)]
        return [self.start_id] + ids + [self.end_id]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> words, stopping at <end>, skipping <start>/<pad>."""
        words = []
        for i in ids:
            if i == self.end_id:
                break
            if i not in (self.pad_id, self.start_id):
                words.append(self.itos[i])
        return words

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.itos, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        itos = json.loads(Path(path).read_text(encoding="utf-8"))
        if list(itos[:4]) != list(SPECIALS):
            raise ValueError(f"{path}: not a captioner vocabulary (must start with {SPECIALS})")
        return cls(itos[4:])
