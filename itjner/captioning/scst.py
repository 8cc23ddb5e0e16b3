"""Self-critical sequence training: fine-tune a cross-entropy-trained captioner on CIDEr-D."""
from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..modeling_captioner import CaptionModel
from .data import CaptionPair, references_by_image
from .training import evaluate, format_epoch_row, keep_best, selection_key, state_copy, write_history


@dataclass
class ScstOptions:
    epochs: int = 8
    lr: float = 2e-5
    samples: int = 5              # captions sampled per image; each one's baseline is the mean reward of the others
    batch_images: int = 16
    max_len: int = 20             # longest sampled caption, in words
    patience: int = 2
    seed: int = 1
    grad_clip: float = 5.0
    progress: bool = True


def scst_finetune(model: CaptionModel, train_pairs: list[CaptionPair], val_pairs: list[CaptionPair],
                  features: dict[str, torch.Tensor], out: str | Path | None,
                  options: ScstOptions | None = None) -> tuple[CaptionModel, list[dict]]:
    """Self-critical sequence training (Rennie et al. 2017) with the mean-of-other-samples baseline (Luo 2020):
    the reward of a sampled caption is its CIDEr-D against its image's training references (idf of the training
    references). Starts from a cross-entropy-trained model; every epoch is scored on validation (epoch 0 = the
    starting model) and the best validation CIDEr-D is kept in `out`."""
    from ..caption_metrics import CiderDReward

    options = options or ScstOptions()
    if options.samples < 2:
        raise ValueError("self-critical training needs at least 2 samples per image (the baseline is the others' mean)")
    torch.manual_seed(options.seed)
    refs = references_by_image([p for p in train_pairs if features.get(p.image) is not None])
    reward = CiderDReward(refs)
    images = sorted(refs)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    rng, started = random.Random(options.seed), time.perf_counter()
    beam = model.config.beam
    row = {"epoch": 0, **evaluate(model, val_pairs, features, beam), "seconds": 0.0}
    history = [row]
    best = (selection_key(row), 0, state_copy(model))
    if options.progress:
        print(format_epoch_row(row) + "  (start)", file=sys.stderr)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
    for epoch in range(1, options.epochs + 1):
        model.train()
        order = images[:]
        rng.shuffle(order)
        rewards = _scst_epoch(model, order, features, reward, optimizer, options, epoch)
        row = {"epoch": epoch, "train_reward": sum(rewards) / len(rewards),
               **evaluate(model, val_pairs, features, beam), "seconds": round(time.perf_counter() - started, 1)}
        history.append(row)
        best = keep_best(model, row, selection_key(row), best, out, options.progress, {"scst": True})
        if out is not None:
            write_history(out, history)
        if options.patience and epoch - best[1] >= options.patience:
            break
    if best[1] == 0 and out is not None:  # no epoch beat the starting model: keep that one
        model.load_state_dict(best[2])
        model.config.extra = {"epoch": 0, "scst": False}
        model.save_pretrained(out)
    model.load_state_dict(best[2])
    return model.eval(), history


def _scst_epoch(model: CaptionModel, order: list[str], features: dict[str, torch.Tensor], reward,
                optimizer: torch.optim.Optimizer, options: ScstOptions, epoch: int) -> list[float]:
    """One pass over the images of `order`, `options.batch_images` at a time; returns each batch's mean reward."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    bar = tqdm(range(0, len(order), options.batch_images), desc=f"scst {epoch}", disable=not options.progress,
               leave=False)
    rewards = []
    for start in bar:
        chunk = order[start:start + options.batch_images]
        feats = torch.stack([features[i] for i in chunk]).to(device).float()
        ids, logp = model.sample(feats.repeat_interleave(options.samples, 0), options.max_len)
        keys = [i for i in chunk for _ in range(options.samples)]
        words = [model.vocab.decode(row) for row in ids.tolist()]
        r = torch.tensor(reward(keys, words), device=device).view(len(chunk), options.samples)
        baseline = (r.sum(1, keepdim=True) - r) / (options.samples - 1)
        loss = -((r - baseline).view(-1) * logp).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
        optimizer.step()
        rewards.append(r.mean().item())
        bar.set_postfix(reward=f"{rewards[-1]:.3f}")
    return rewards
