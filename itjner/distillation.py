"""Distillation: a trained teacher's CRF marginals p_T(y_i = c | S, I) on the training tweets become soft targets for
a student, which minimises (1 - w) * NLL(gold tags) + w * CE(p_T, p_S) with p_S its own CRF marginals
(`CRFDecoder.soft_target_loss`). The teacher may use another tokenizer: targets are per word, and a word the
teacher did not see (cut off by its length limit) gets its gold tag as a one-hot target."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .checkpoints import checkpoint_version
from .data import Tweet
from .images import default_cache_dir, read_image_bytes
from .predict import Predictor, tag_examples


def teacher_marginals(teacher: str | Path, tweets: list[Tweet], images_dir=None, device=None,
                      cache_dir=None) -> list[np.ndarray]:
    """Per tweet, the teacher's (words, labels) marginals; computed once per teacher and tweet set, then cached."""
    path = _cache_path(teacher, tweets)
    if path.is_file():
        with np.load(path) as saved:
            return [saved[str(i)] for i in range(len(tweets))]
    predictor = Predictor.from_pretrained(teacher, device, cache_dir=cache_dir)
    examples, *_ = predictor.inputs.prepare(tweets, [read_image_bytes(images_dir, t.image_id) for t in tweets])
    marginals = [m.numpy() for _, m, _ in tag_examples(predictor.model, examples, progress=True, desc="teacher")]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{str(i): m for i, m in enumerate(marginals)})
    return marginals


def _cache_path(teacher, tweets: list[Tweet]) -> Path:
    text = "\n".join(f"{t.image_id}\t{' '.join(t.tokens)}" for t in tweets)
    key = hashlib.sha1(f"{checkpoint_version(teacher)}\n{text}".encode()).hexdigest()[:16]
    return default_cache_dir() / "teacher-marginals" / f"{key}.npz"


def soft_targets(marginals: np.ndarray, labels: list[int], num_labels: int) -> np.ndarray:
    """(len(labels), num_labels): the teacher's marginals where it saw the word, the gold tag (one-hot) after."""
    out = np.eye(num_labels, dtype=np.float32)[labels]
    seen = min(len(labels), len(marginals))
    out[:seen] = marginals[:seen]
    return out
