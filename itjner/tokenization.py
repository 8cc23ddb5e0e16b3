"""Words -> sub-tokens with each word's first sub-token position (the position that carries the word's tag).

Long tweets are not cut silently: words whose first sub-token would fall beyond `max_length` are dropped from the
model input and counted (`Encoded.truncated_words`); the predictor then tags the whole text in overlapping windows
(`word_windows`), or, where it shows attention maps of one encoder pass (the app), tags them `O` and says so.
A word the tokenizer maps to nothing (a lone variation selector, a control character) is fed as [UNK] so every word
keeps a position.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

SHAPES = ("lower", "title", "upper", "mixed", "digit", "other")


def word_shape(word: str) -> int:
    """Capitalisation class of a word: the cue an uncased encoder cannot see."""
    letters = [ch for ch in word if ch.isalpha()]
    if not letters:
        return SHAPES.index("digit") if any(ch.isdigit() for ch in word) else SHAPES.index("other")
    if all(ch.islower() for ch in letters):
        return SHAPES.index("lower")
    if all(ch.isupper() for ch in letters):
        return SHAPES.index("upper") if len(letters) > 1 else SHAPES.index("title")
    if letters[0].isupper() and all(ch.islower() for ch in letters[1:]):
        return SHAPES.index("title")
    return SHAPES.index("mixed")


CHAR_VOCAB = 256   # character ids: 0 padding, 1..254 code points 0..253, 255 everything from 254 on (emoji, CJK)
MAX_CHARS = 20     # characters read per word (the rest are cut)


def char_ids(word: str) -> list[int]:
    """A word's characters as ids, case kept (the cue an uncased encoder cannot see): at least one id per word."""
    return [1 + min(ord(ch), CHAR_VOCAB - 2) for ch in word[:MAX_CHARS]] or [CHAR_VOCAB - 1]


def per_subtoken(values: list, word_index: list[int], length: int, empty) -> list:
    """Spread one value per word over an encoded tweet's sub-tokens: each piece gets its word's ([CLS]/[SEP] and
    dropped words: `empty`)."""
    rows = [empty] * length
    ends = word_index[1:] + [length - 1]
    for value, start, end in zip(values, word_index, ends):
        rows[start:end] = [value] * (end - start)
    return rows


def subtoken_char_ids(words: list[str], word_index: list[int], length: int) -> list[list[int]]:
    """Per sub-token position of an encoded tweet: its word's character ids ([CLS]/[SEP]: none)."""
    return per_subtoken([char_ids(w) for w in words], word_index, length, [])


@dataclass
class Encoded:
    input_ids: list[int]
    word_index: list[int]      # first sub-token position of each kept word
    shape_ids: list[int]       # per sub-token: its word's shape (0 for [CLS]/[SEP])
    truncated_words: int       # words that did not fit in max_length


def clean_word(word: str) -> str:
    """Strip invisible characters that some tokenizers choke on; keep the word otherwise."""
    return "".join(ch for ch in word if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co")) or word


def encode_words(tokenizer, words: list[str], max_length: int) -> Encoded:
    cls_id, sep_id, unk_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id
    pieces = tokenizer([clean_word(w) for w in words], add_special_tokens=False, is_split_into_words=False)["input_ids"]
    input_ids, word_index = [cls_id], []
    budget = max_length - 1  # room for [SEP]
    for i, ids in enumerate(pieces):
        ids = ids or [unk_id]
        if len(input_ids) >= budget:
            return _finish(words, input_ids, word_index, sep_id, len(words) - i)
        word_index.append(len(input_ids))
        input_ids.extend(ids[: budget - len(input_ids)])
    return _finish(words, input_ids, word_index, sep_id, 0)


def _finish(words, input_ids, word_index, sep_id, truncated) -> Encoded:
    input_ids = input_ids + [sep_id]
    shape_ids = per_subtoken([word_shape(w) for w in words], word_index, len(input_ids), 0)
    return Encoded(input_ids, word_index, shape_ids, truncated)


def word_windows(tokenizer, words: list[str], max_length: int) -> list[tuple[int, int]]:
    """Word ranges [start, end) that each fit in `max_length` sub-tokens and together cover every word; each window
    after the first starts a quarter of a window before the previous one ends, so words near a cut are read with
    context (and `window_owners` takes each word's tag from the window where it is furthest from the edge)."""
    windows, start = [], 0
    while True:
        kept = max(1, len(encode_words(tokenizer, words[start:], max_length).word_index))
        end = start + kept
        windows.append((start, end))
        if end >= len(words):
            return windows
        start = max(start + 1, end - kept // 4)


def window_owners(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """For each window, the words it tags: overlapping windows split their overlap in the middle."""
    owned = []
    for k, (start, end) in enumerate(windows):
        lo = start if k == 0 else (start + windows[k - 1][1]) // 2
        hi = end if k == len(windows) - 1 else (windows[k + 1][0] + end) // 2
        owned.append((lo, hi))
    return owned


def encode_caption(tokenizer, caption: str, max_length: int) -> list[int]:
    """Caption ids with [CLS]/[SEP]; an empty caption gives an empty list (the caption path is then masked)."""
    if not caption.strip():
        return []
    return tokenizer(caption, truncation=True, max_length=max_length)["input_ids"]
