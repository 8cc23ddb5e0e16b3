"""Distillation: a trained teacher's CRF marginals p_T(y_i = c | S, I) on the training tweets become soft targets for
a student, which minimises (1 - w) * NLL(gold tags) + w * CE(p_T, p_S) with p_S its own CRF marginals
(`CRFDecoder.soft_target_loss`). A temperature T > 1 softens the teacher's marginals (all its scores divided by T):
on its own training tweets a teacher is nearly certain, and T shows its second choices. The teacher may use another
tokenizer: targets are per word, and a word the
teacher did not see (cut off by its length limit) gets its gold tag as a one-hot target.

Tweets without gold tags (`train --unlabeled`) can join the training tweets: the teacher tags them (`teacher_tagged`,
its Viterbi path stands in for the gold tags) and its marginals are their soft targets, so the student learns the
teacher's reading of tweets the teacher never trained on."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .batching import collate, length_batches, to_device
from .checkpoints import checkpoint_version
from .data import Tweet
from .images import default_cache_dir, read_image_bytes
from .predict import Predictor


def teacher_marginals(teacher: str | Path, tweets: list[Tweet], images_dir=None, device=None, cache_dir=None,
                      temperature: float = 1.0) -> list[np.ndarray]:
    """Per tweet, the teacher's (words, labels) marginals; computed once per teacher, temperature and tweet set,
    then cached."""
    path = _cache_path(teacher, tweets, temperature)
    if path.is_file():
        with np.load(path) as saved:
            return [saved[str(i)] for i in range(len(tweets))]
    # fp32: the loop below runs the model itself, without autocast (the soft targets are exact)
    predictor = Predictor.from_pretrained(teacher, device, cache_dir=cache_dir, precision="fp32")
    model = predictor.model
    examples = predictor.examples(tweets, [read_image_bytes(images_dir, t.image_id) for t in tweets])
    marginals = [None] * len(examples)
    with torch.no_grad():
        for chunk in tqdm(length_batches(examples, 64), desc="teacher", leave=False):
            out = model(to_device(collate(chunk, model.config), predictor.device))
            probs = model.decoder.marginals(out.emissions, out.word_mask, temperature)
            for j, ex in enumerate(chunk):
                marginals[ex.index] = probs[j, :len(ex.word_index)].numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{str(i): m for i, m in enumerate(marginals)})
    return marginals


def teacher_tagged(teacher: str | Path, tweets: list[Tweet], images_dir=None, device=None,
                   cache_dir=None) -> list[Tweet]:
    """The tweets with the teacher's tags (its Viterbi path) in place of their own; cached like the marginals."""
    path = _cache_path(teacher, tweets, "viterbi", ".json")
    if path.is_file():
        tags = json.loads(path.read_text())
    else:
        predictor = Predictor.from_pretrained(teacher, device, cache_dir=cache_dir)
        tags = [p.tags for p in predictor.predict(tweets, images_dir=images_dir, progress=True)]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(tags))
    return [replace(t, tags=list(tag)) for t, tag in zip(tweets, tags)]


def _cache_path(teacher, tweets: list[Tweet], temperature: float | str, suffix: str = ".npz") -> Path:
    text = "\n".join(f"{t.image_id}\t{' '.join(t.tokens)}" for t in tweets)
    key = hashlib.sha1(f"{checkpoint_version(teacher)}\nT={temperature}\n{text}".encode()).hexdigest()[:16]
    return default_cache_dir() / "teacher-marginals" / f"{key}{suffix}"


def soft_targets(marginals: np.ndarray, labels: list[int], num_labels: int) -> np.ndarray:
    """(len(labels), num_labels): the teacher's marginals where it saw the word, the gold tag (one-hot) after."""
    out = np.eye(num_labels, dtype=np.float32)[labels]
    seen = min(len(labels), len(marginals))
    out[:seen] = marginals[:seen]
    return out
