"""Training the region-attention captioner with cross-entropy, scoring it, and the frozen image features it reads.

Frozen region features come from the same cached `FeatureStore` the NER model uses, so each image passes through
the backbone once. Every epoch reports the validation loss and BLEU-1..4 / CIDEr-D (pycocoevalcap, see
itjner.caption_metrics); the checkpoint with the best validation CIDEr is kept, and training stops early after
`patience` epochs without a better one.
"""
from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..caption_metrics import score_captions
from ..configuration_captioner import CaptionerConfig
from ..modeling_captioner import CaptionModel, pad_captions
from ..tokenization_captioner import Vocabulary, caption_tokenize
from .data import CaptionPair, mirror_caption, references_by_image, split_by_image


@dataclass
class TrainOptions:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 4e-4
    val_fraction: float = 0.1     # used only when no explicit validation pairs are given
    min_count: int = 5
    beam: int = 3
    seed: int = 1
    grad_clip: float = 5.0
    progress: bool = True
    weight_decay: float = 0.0     # AdamW's decoupled weight decay
    lr_decay: float = 1.0         # the learning rate is multiplied by this after every epoch
    patience: int = 0             # stop after this many epochs without a better validation CIDEr (0: never)


# ----------------------------------------------------------------------------------------------------- scoring
def generate_captions(model: CaptionModel, images: Sequence[str], features: dict[str, torch.Tensor],
                      beam: int | None = None, batch_size: int = 64, length_penalty: float | None = None,
                      no_repeat_ngram_size: int | None = None) -> dict:
    """image -> generated Caption, for the listed images (None: the checkpoint's decoding setting)."""
    out = {}
    for start in range(0, len(images), batch_size):
        chunk = list(images[start:start + batch_size])
        caps = model.generate(torch.stack([features[i] for i in chunk]).float(), beam=beam,
                              length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size)
        out.update(zip(chunk, caps))
    return out


def evaluate(model: CaptionModel, pairs: list[CaptionPair], features: dict[str, torch.Tensor],
             beam: int, batch_size: int = 64, length_penalty: float | None = None) -> dict:
    """Validation CE loss per word, BLEU-1..4 and CIDEr-D of generated captions against all captions of each
    image, and the share of images whose caption equals one of its references word for word."""
    model.eval()
    refs = references_by_image(pairs)
    loss_sum, batches = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            feats, caps = _batch(model, chunk, features)
            loss_sum += model.loss(feats, caps)[1].item()
            batches += 1
    images = sorted(refs)
    generated = generate_captions(model, images, features, beam, batch_size, length_penalty)
    hyps = {i: generated[i].words for i in images}
    scores = score_captions(refs, hyps)
    normalised = {i: {" ".join(caption_tokenize(r)) for r in refs[i]} for i in images}
    exact = sum(" ".join(hyps[i]) in normalised[i] for i in images) / max(len(images), 1)
    return {"val_loss": loss_sum / max(batches, 1), **scores, "exact": exact}


def _batch(model: CaptionModel, chunk: list[CaptionPair], features: dict[str, torch.Tensor]):
    device = next(model.parameters()).device
    feats = torch.stack([features[p.image] for p in chunk]).to(device).float()
    caps = pad_captions([model.vocab.encode(p.caption) for p in chunk]).to(device)
    return feats, caps


def selection_key(row: dict) -> tuple:
    """How epochs are ranked: validation CIDEr, ties broken by the lower validation loss."""
    return (row["cider"], -row["val_loss"])


def format_epoch_row(row: dict) -> str:
    """A history row as one line: `epoch 3  lr 0.0004  cider 0.5123 ...`."""
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


# ------------------------------------------------------------------------------------------ keeping the best epoch
def state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def keep_best(model: CaptionModel, row: dict, key: tuple, best: tuple | None, out: str | Path | None,
              progress: bool, extra: dict | None = None) -> tuple:
    """After an epoch: when `key` beats `best` (key, epoch, weights; None before the first epoch), the model's
    weights become the best and, with `out`, are saved there with the epoch, `extra` and its scores in
    config.extra. Prints the row when `progress`. Returns the best (key, epoch, weights)."""
    epoch = row["epoch"]
    improved = best is None or key > best[0]
    if improved:
        best = (key, epoch, state_copy(model))
        if out is not None:
            model.config.extra = {"epoch": epoch, **(extra or {}),
                                  **{k: row[k] for k in ("cider", "bleu4", "val_loss") if k in row}}
            model.save_pretrained(out)
    if progress:
        print(format_epoch_row(row) + ("  *best*" if improved else ""), file=sys.stderr)
    return best


def write_history(out: str | Path, history: list[dict]) -> None:
    Path(out, "history.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------- training
FLIPPED = "\0hflip"  # suffix of a mirrored image's name in the training loop's feature table


def train_captioner(pairs: list[CaptionPair], features: dict[str, torch.Tensor], out: str | Path | None,
                    options: TrainOptions | None = None, backbone: str | None = None,
                    device: str | torch.device = "cpu", val_pairs: list[CaptionPair] | None = None,
                    flipped_features: dict[str, torch.Tensor] | None = None,
                    **config) -> tuple[CaptionModel, list[dict]]:
    """Train on pairs whose image has features (others are skipped); keep the best-validation-CIDEr checkpoint in
    `out`. Validation: `val_pairs` when given, else a by-image split of `pairs` (options.val_fraction).
    `config` overrides CaptionerConfig fields (embed_dim, hidden_dim, ...). `flipped_features` (mirrored images'
    features): each training caption is then seen, with probability 1/2 per epoch, with its mirrored image and
    left/right swapped. Returns the best model and the history."""
    options = options or TrainOptions()
    pairs = [p for p in pairs if features.get(p.image) is not None]
    if not pairs:
        raise ValueError("no caption has a usable image: check --images and the file names in the caption file")
    torch.manual_seed(options.seed)
    train, val = _train_and_validation(pairs, val_pairs, features, options)
    vocab = Vocabulary.build((p.caption for p in train), options.min_count)
    if flipped_features:
        features = {**features, **{name + FLIPPED: f for name, f in flipped_features.items()}}
    feature_dim = next(iter(features[p.image] for p in train)).shape[-1]
    cfg = CaptionerConfig(feature_dim=feature_dim, vocab_size=len(vocab), beam=options.beam, backbone=backbone,
                          **config)
    model = CaptionModel(cfg, vocab).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, options.lr_decay)
    rng = random.Random(options.seed)
    history, best, started = [], None, time.perf_counter()
    for epoch in range(1, options.epochs + 1):
        model.train()
        order = _epoch_order(train, rng, flipped_features)
        lr = optimizer.param_groups[0]["lr"]
        row = {"epoch": epoch, "lr": lr, "train_loss": _train_epoch(model, order, features, optimizer, options, epoch)}
        scheduler.step()
        row.update(evaluate(model, val, features, options.beam) if val else {})
        row["seconds"] = round(time.perf_counter() - started, 1)
        history.append(row)
        key = selection_key(row) if val else (epoch,)  # without validation: the last epoch
        best = keep_best(model, row, key, best, out, options.progress)
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
            write_history(out, history)
        if val and options.patience and epoch - best[1] >= options.patience:
            if options.progress:
                print(f"early stop: no better validation CIDEr for {options.patience} epochs", file=sys.stderr)
            break
    model.load_state_dict(best[2])
    model.config.extra = {"epoch": best[1]}
    return model.eval(), history


def _train_and_validation(pairs: list[CaptionPair], val_pairs: list[CaptionPair] | None,
                          features: dict[str, torch.Tensor], options: TrainOptions):
    """The training and validation pairs: `val_pairs` (those with features) when given, else a by-image split."""
    if val_pairs is None:
        return split_by_image(pairs, options.val_fraction, options.seed)
    val = [p for p in val_pairs if features.get(p.image) is not None]
    overlap = {p.image for p in pairs} & {p.image for p in val}
    if overlap:
        raise ValueError(f"{len(overlap)} image(s) are in both the training and the validation split, "
                         f"e.g. {sorted(overlap)[0]}")
    return pairs, val


def _epoch_order(train: list[CaptionPair], rng: random.Random,
                 flipped_features: dict[str, torch.Tensor] | None) -> list[CaptionPair]:
    """The epoch's shuffled training pairs; with mirrored features, each pair whose image has them is swapped for
    its mirrored version with probability 1/2."""
    order = train[:]
    rng.shuffle(order)
    if flipped_features:
        order = [CaptionPair(p.image + FLIPPED, mirror_caption(p.caption))
                 if p.image in flipped_features and rng.random() < 0.5 else p for p in order]
    return order


def _train_epoch(model: CaptionModel, order: list[CaptionPair], features: dict[str, torch.Tensor],
                 optimizer: torch.optim.Optimizer, options: TrainOptions, epoch: int) -> float:
    """One pass over `order` in batches; returns the mean cross-entropy per batch."""
    from tqdm.auto import tqdm

    bar = tqdm(range(0, len(order), options.batch_size), desc=f"epoch {epoch}", disable=not options.progress,
               leave=False)
    total = 0.0
    for start in bar:
        feats, caps = _batch(model, order[start:start + options.batch_size], features)
        loss, ce = model.loss(feats, caps)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
        optimizer.step()
        total += ce.item()
        bar.set_postfix(ce=f"{ce.item():.3f}")
    return total / max(len(bar), 1)


# ----------------------------------------------------------------------------------------------------- features
def load_features(pairs: list[CaptionPair], images_dir: str | Path, backbone_name: str, cache_dir=None,
                  random_init: bool = False, chunk: int = 256, progress: bool = True,
                  flipped: bool = False) -> dict[str, torch.Tensor]:
    """Frozen region features per image file (cached on disk); unusable images are reported and left out.
    flipped: features of the mirrored images instead (training augmentation), cached under their own key."""
    from tqdm.auto import tqdm

    from ..backbones import load_image_backbone
    from ..images import FeatureStore, ImageReport

    store = FeatureStore(load_image_backbone(backbone_name, random_init=random_init), cache_dir)
    names = sorted({p.image for p in pairs})
    report, features = ImageReport(), {}
    for start in tqdm(range(0, len(names), chunk), desc="mirrored image features" if flipped else "image features",
                      disable=not progress):
        batch = names[start:start + chunk]
        feats = _flipped_features(store, images_dir, batch, report) if flipped else \
            store.features_for_ids(images_dir, batch, report)[0]
        features.update({n: f for n, f in zip(batch, feats) if f is not None})
    print(report.summary(), file=sys.stderr)
    return features


def _flipped_features(store, images_dir, names: list[str], report) -> list[torch.Tensor | None]:
    """Region features of the horizontally mirrored images, cached in the store under sha256(bytes) + "-hflip"."""
    from PIL import ImageOps

    from ..images import ImageError, decode_image, read_image_bytes, sha256

    out: list[torch.Tensor | None] = []
    backbone = store.backbone
    for name in names:
        data = read_image_bytes(images_dir, name)
        if data is None:
            report.add(name, "missing")
            out.append(None)
            continue
        key = sha256(data) + "-hflip"
        cached = store._lookup(key)
        if cached is None:
            try:
                image = ImageOps.mirror(decode_image(data, backbone.spec.size))
            except ImageError as err:
                report.add(name, f"unreadable ({err})")
                out.append(None)
                continue
            with torch.no_grad():
                feats = backbone.features(backbone.preprocess(image)[None].to(next(backbone.parameters()).device))
            cached = store._store(key, feats[0].float().cpu())
        report.add(name, None)
        out.append(cached)
    return out
