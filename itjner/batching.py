"""Tweets -> model-ready examples and padded batches (text ids, word positions, labels, cached image features,
caption ids, and the masks that say which tweets have a usable image / caption)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import LABEL2ID, Tweet, normalize_tag
from .tokenization import encode_caption, encode_words, per_subtoken, subtoken_char_ids


@dataclass
class Example:
    index: int
    input_ids: list[int]
    word_index: list[int]
    shape_ids: list[int]
    truncated_words: int
    labels: list[int] | None
    image_feats: torch.Tensor | None  # (regions, C) or None when the image is missing/unusable
    caption_ids: list[int]
    soft_targets: np.ndarray | None = None  # (words, labels) a teacher's marginals (distillation.py)
    char_ids: list[list[int]] | None = None  # per sub-token: its word's characters (config.char_cnn)
    word_tag_ids: list[tuple[int, int]] | None = None  # per sub-token: its word's (POS, entity) ids (word_tags.py)


def build_examples(tweets: list[Tweet], tokenizer, config, image_feats=None, captions=None) -> list[Example]:
    for i, tw in enumerate(tweets):
        if not tw.tokens:
            raise ValueError(f"tweet {i} (IMGID {tw.image_id}) has no tokens")
    word_tags = _word_tags(tweets, config)
    examples = []
    for i, tw in enumerate(tweets):
        enc = encode_words(tokenizer, tw.tokens, config.max_length)
        kept = len(enc.word_index)
        labels = None if tw.tags is None else [LABEL2ID[normalize_tag(t)] for t in tw.tags[:kept]]
        caption = captions[i] if captions is not None else ""
        examples.append(Example(
            index=i, input_ids=enc.input_ids, word_index=enc.word_index, shape_ids=enc.shape_ids,
            truncated_words=enc.truncated_words, labels=labels,
            image_feats=image_feats[i] if image_feats is not None else None,
            caption_ids=encode_caption(tokenizer, caption, config.caption_max_length) if config.use_caption else [],
            char_ids=subtoken_char_ids(tw.tokens, enc.word_index, len(enc.input_ids)) if config.char_cnn else None,
            word_tag_ids=None if word_tags is None else per_subtoken(word_tags[i], enc.word_index,
                                                                      len(enc.input_ids), (0, 0)),
        ))
    return examples


def _word_tags(tweets: list[Tweet], config) -> list | None:
    if not config.word_tags:
        return None
    from .word_tags import tag_ids

    return tag_ids([tw.tokens for tw in tweets], config.word_tags, config.word_tag_labels)


def _pad(rows: list[list[int]], value: int = 0, min_len: int = 1) -> torch.Tensor:
    width = max([len(r) for r in rows] + [min_len])
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _pad_chars(rows: list[list[list[int]]], length: int) -> torch.Tensor:
    """(B, length, chars) character ids, zero-padded."""
    width = max([len(c) for r in rows for c in r] + [1])
    out = np.zeros((len(rows), length, width), dtype=np.int64)
    for b, row in enumerate(rows):
        for pos, chars in enumerate(row):
            out[b, pos, :len(chars)] = chars
    return torch.from_numpy(out)


def collate(examples: list[Example], config, pad_id: int = 0, image_regions: int = 49) -> dict:
    batch = {
        "index": torch.tensor([e.index for e in examples]),
        "input_ids": _pad([e.input_ids for e in examples], pad_id),
        "attention_mask": _pad([[1] * len(e.input_ids) for e in examples]),
        "shape_ids": _pad([e.shape_ids for e in examples]),
        "word_index": _pad([e.word_index for e in examples]),
        "word_mask": _pad([[1] * len(e.word_index) for e in examples]).bool(),
    }
    if config.char_cnn:
        batch["char_ids"] = _pad_chars([e.char_ids for e in examples], batch["input_ids"].shape[1])
    if config.word_tags:
        batch["word_tag_ids"] = _pad([e.word_tag_ids for e in examples], (0, 0))  # (B, L, 2)
    if all(e.labels is not None for e in examples):
        batch["labels"] = _pad([e.labels for e in examples])
    if all(e.soft_targets is not None for e in examples):
        width = batch["word_mask"].shape[1]
        batch["soft_targets"] = torch.stack([torch.from_numpy(
            np.pad(e.soft_targets, ((0, width - len(e.soft_targets)), (0, 0)))) for e in examples])
    if config.use_caption:
        batch["caption_ids"] = _pad([e.caption_ids or [pad_id] for e in examples], pad_id)
        batch["caption_mask"] = _pad([[1] * max(len(e.caption_ids), 1) for e in examples])
        batch["has_caption"] = torch.tensor([bool(e.caption_ids) for e in examples])
    if config.use_image:
        feats = [e.image_feats for e in examples]
        regions = next((f.shape[0] for f in feats if f is not None), image_regions)
        batch["image_feats"] = torch.stack([
            f.float() if f is not None else torch.zeros(regions, config.image_dim) for f in feats])
        batch["has_image"] = torch.tensor([f is not None for f in feats])
    return batch


def length_batches(examples: list[Example], batch_size: int) -> list[list[Example]]:
    """Batches of similar length (less padding), in a deterministic order."""
    ordered = sorted(examples, key=lambda e: (len(e.input_ids), e.index))
    return [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
