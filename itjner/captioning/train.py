"""Train the region-attention captioner on any image-caption data, score it, and caption an image with it.

    itjner caption train --captions captions.txt --images DIR --train-list train_images.txt \
        --valid-list valid_images.txt --out runs/captioner
    itjner caption evaluate --checkpoint runs/captioner --captions captions.txt --images DIR \
        --list test_images.txt
    itjner caption anchors --captions captions.txt --images DIR --train-list train_images.txt \
        --list test_images.txt
    itjner caption generate --checkpoint runs/captioner --image photo.jpg [--beam 3]

Captions are read from a CSV with a header `image,caption` (Flickr8k's captions.txt), COCO-format JSON (`images`:
id/file_name, `annotations`: image_id/caption) or JSONL (`{"image": "<file name>", "caption": "..."}` per line).
Split lists hold one image file name a line. Frozen region features come from the same cached `FeatureStore` the
NER model uses, so each image passes through the backbone once. Every epoch reports the validation loss and
BLEU-1..4 / CIDEr-D (pycocoevalcap, see itjner.caption_metrics); the checkpoint with the best validation CIDEr is
kept in --out, and training stops early after --patience epochs without a better one.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..caption_metrics import format_scores, score_captions
from ..modeling_captioner import CaptionerConfig, CaptionModel, Vocabulary, pad_captions, tokenize


@dataclass(frozen=True)
class CaptionPair:
    image: str    # file name relative to the images folder
    caption: str


# ------------------------------------------------------------------------------------------------------- readers
def read_captions(path: str | Path) -> list[CaptionPair]:
    """CSV with an `image,caption` header, COCO-format JSON or JSONL, chosen by content (a JSON object with
    `annotations` is COCO; a first line naming the columns image and caption is CSV)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    stripped = text.lstrip()
    first_line = stripped.split("\n", 1)[0].strip()
    if not first_line.startswith("{") and "image" in first_line and "caption" in first_line:
        return _read_csv(text, path)
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # several objects: JSONL
        if isinstance(data, dict) and ("annotations" in data or "images" in data):
            return _read_coco(data, path)
    return _read_jsonl(text, path)


def _read_csv(text: str, path) -> list[CaptionPair]:
    """Flickr8k's captions.txt: header `image,caption`, one caption a row (quoted where it holds commas)."""
    reader = csv.reader(io.StringIO(text.lstrip()))
    header = [h.strip().lower() for h in next(reader)]
    if "image" not in header or "caption" not in header:
        raise ValueError(f"{path}: a CSV caption file needs a header naming the columns `image` and `caption` "
                         f"(got {header})")
    i_image, i_caption = header.index("image"), header.index("caption")
    pairs = []
    for lineno, row in enumerate(reader, 2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}:{lineno}: expected {len(header)} columns, got {len(row)} "
                             "(quote captions that contain commas)")
        image, caption = row[i_image].strip(), row[i_caption].strip()
        if not image or not caption:
            raise ValueError(f"{path}:{lineno}: empty image name or caption")
        pairs.append(CaptionPair(image, caption))
    return pairs


def read_image_list(path: str | Path) -> list[str]:
    """A split file: one image file name a line (blank lines and surrounding spaces ignored), order kept,
    duplicates refused."""
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{path}: image listed twice: {name}")
        seen.add(name)
    if not names:
        raise ValueError(f"{path}: no image names")
    return names


def select_images(pairs: list[CaptionPair], names: Sequence[str], what: str = "split") -> list[CaptionPair]:
    """The pairs of the listed images (in caption-file order); an image of the list without captions is an error."""
    wanted = set(names)
    chosen = [p for p in pairs if p.image in wanted]
    missing = wanted - {p.image for p in chosen}
    if missing:
        raise ValueError(f"{len(missing)} image(s) of the {what} list have no caption in the caption file, "
                         f"e.g. {sorted(missing)[0]}")
    return chosen


def _read_coco(data: dict, path) -> list[CaptionPair]:
    if "images" not in data or "annotations" not in data:
        raise ValueError(f"{path}: COCO caption JSON needs `images` and `annotations` lists")
    names = {img["id"]: img["file_name"] for img in data["images"]}
    pairs = []
    for ann in data["annotations"]:
        if ann["image_id"] not in names:
            raise ValueError(f"{path}: annotation {ann.get('id')} refers to unknown image_id {ann['image_id']!r}")
        pairs.append(CaptionPair(names[ann["image_id"]], ann["caption"].strip()))
    return pairs


def _read_jsonl(text: str, path) -> list[CaptionPair]:
    pairs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append(CaptionPair(str(row["image"]), str(row["caption"]).strip()))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f'{path}:{lineno}: expected {{"image": ..., "caption": ...}} ({err})') from err
    return pairs


def references_by_image(pairs: Sequence[CaptionPair]) -> dict[str, list[str]]:
    """image -> its captions, in file order."""
    refs: dict[str, list[str]] = defaultdict(list)
    for p in pairs:
        refs[p.image].append(p.caption)
    return dict(refs)


# ----------------------------------------------------------------------------------------------------- training
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


def split_by_image(pairs: list[CaptionPair], val_fraction: float, seed: int):
    """Train/validation pairs, split by image so no validation image is seen in training."""
    images = sorted({p.image for p in pairs})
    random.Random(seed).shuffle(images)
    n_val = round(len(images) * val_fraction)
    if val_fraction > 0 and len(images) > 1:
        n_val = min(max(n_val, 1), len(images) - 1)
    val_images = set(images[:n_val])
    return [p for p in pairs if p.image not in val_images], [p for p in pairs if p.image in val_images]


def generate_captions(model: CaptionModel, images: Sequence[str], features: dict[str, torch.Tensor],
                      beam: int | None = None, batch_size: int = 64, length_penalty: float | None = None) -> dict:
    """image -> generated Caption, for the listed images."""
    out = {}
    for start in range(0, len(images), batch_size):
        chunk = list(images[start:start + batch_size])
        caps = model.generate(torch.stack([features[i] for i in chunk]).float(), beam=beam,
                              length_penalty=length_penalty)
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
    normalised = {i: {" ".join(tokenize(r)) for r in refs[i]} for i in images}
    exact = sum(" ".join(hyps[i]) in normalised[i] for i in images) / max(len(images), 1)
    return {"val_loss": loss_sum / max(batches, 1), **scores, "exact": exact}


def _batch(model: CaptionModel, chunk: list[CaptionPair], features: dict[str, torch.Tensor]):
    device = next(model.parameters()).device
    feats = torch.stack([features[p.image] for p in chunk]).to(device).float()
    caps = pad_captions([model.vocab.encode(p.caption) for p in chunk]).to(device)
    return feats, caps


FLIPPED = "\0hflip"  # suffix of a mirrored image's name in the training loop's feature table


def selection_key(row: dict) -> tuple:
    """How epochs are ranked: validation CIDEr, ties broken by the lower validation loss."""
    return (row["cider"], -row["val_loss"])


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
    from tqdm.auto import tqdm

    options = options or TrainOptions()
    pairs = [p for p in pairs if features.get(p.image) is not None]
    if not pairs:
        raise ValueError("no caption has a usable image: check --images and the file names in the caption file")
    torch.manual_seed(options.seed)
    if val_pairs is None:
        train, val = split_by_image(pairs, options.val_fraction, options.seed)
    else:
        train, val = pairs, [p for p in val_pairs if features.get(p.image) is not None]
        overlap = {p.image for p in train} & {p.image for p in val}
        if overlap:
            raise ValueError(f"{len(overlap)} image(s) are in both the training and the validation split, "
                             f"e.g. {sorted(overlap)[0]}")
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
        order = train[:]
        rng.shuffle(order)
        if flipped_features:
            order = [CaptionPair(p.image + FLIPPED, mirror_caption(p.caption))
                     if p.image in flipped_features and rng.random() < 0.5 else p for p in order]
        bar = tqdm(range(0, len(order), options.batch_size), desc=f"epoch {epoch}", disable=not options.progress,
                   leave=False)
        total, lr = 0.0, optimizer.param_groups[0]["lr"]
        for start in bar:
            feats, caps = _batch(model, order[start:start + options.batch_size], features)
            loss, ce = model.loss(feats, caps)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
            optimizer.step()
            total += ce.item()
            bar.set_postfix(ce=f"{ce.item():.3f}")
        scheduler.step()
        row = {"epoch": epoch, "lr": lr, "train_loss": total / max(len(bar), 1)}
        row.update(evaluate(model, val, features, options.beam) if val else {})
        row["seconds"] = round(time.perf_counter() - started, 1)
        history.append(row)
        key = selection_key(row) if val else (epoch,)  # without validation: the last epoch
        improved = best is None or key > best[0]
        if improved:
            best = (key, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
            if out is not None:
                model.config.extra = {"epoch": epoch, **{k: row[k] for k in ("cider", "bleu4", "val_loss") if k in row}}
                model.save_pretrained(out)
        if options.progress:
            print(_format_row(row) + ("  *best*" if improved else ""), file=sys.stderr)
        if out is not None:
            Path(out).mkdir(parents=True, exist_ok=True)
            Path(out, "history.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
        if val and options.patience and epoch - best[1] >= options.patience:
            if options.progress:
                print(f"early stop: no better validation CIDEr for {options.patience} epochs", file=sys.stderr)
            break
    model.load_state_dict(best[2])
    model.config.extra = {"epoch": best[1]}
    return model.eval(), history


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
    from tqdm.auto import tqdm

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
    best = (selection_key(row), 0, {k: v.detach().clone() for k, v in model.state_dict().items()})
    if options.progress:
        print(_format_row(row) + "  (start)", file=sys.stderr)
    device = next(model.parameters()).device
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
    for epoch in range(1, options.epochs + 1):
        model.train()
        order = images[:]
        rng.shuffle(order)
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
        row = {"epoch": epoch, "train_reward": sum(rewards) / len(rewards),
               **evaluate(model, val_pairs, features, beam), "seconds": round(time.perf_counter() - started, 1)}
        history.append(row)
        improved = selection_key(row) > best[0]
        if improved:
            best = (selection_key(row), epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
            if out is not None:
                model.config.extra = {"epoch": epoch, "scst": True,
                                      **{k: row[k] for k in ("cider", "bleu4", "val_loss")}}
                model.save_pretrained(out)
        if options.progress:
            print(_format_row(row) + ("  *best*" if improved else ""), file=sys.stderr)
        if out is not None:
            Path(out, "history.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
        if options.patience and epoch - best[1] >= options.patience:
            break
    if best[1] == 0 and out is not None:  # no epoch beat the starting model: keep that one
        model.load_state_dict(best[2])
        model.config.extra = {"epoch": 0, "scst": False}
        model.save_pretrained(out)
    model.load_state_dict(best[2])
    return model.eval(), history


def _format_row(row: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


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


_MIRRORED_WORDS = {"left": "right", "right": "left"}


def mirror_caption(caption: str) -> str:
    """The caption of the mirrored image: "left" and "right" swap (tokenised, lower-case words)."""
    return " ".join(_MIRRORED_WORDS.get(w, w) for w in tokenize(caption))


# ------------------------------------------------------------------------------------------------------ anchors
def nearest_neighbour_captions(train_pairs: Sequence[CaptionPair], images: Sequence[str],
                               features: dict[str, torch.Tensor]) -> dict[str, str]:
    """Caption retrieval: for each image, the first caption (file order) of the training image whose mean-pooled
    region feature is most similar by cosine."""
    refs = references_by_image(train_pairs)
    train_images = [i for i in refs if features.get(i) is not None]
    pooled = lambda names: torch.nn.functional.normalize(
        torch.stack([features[n].float().mean(0) for n in names]), dim=1)
    similarity = pooled(images) @ pooled(train_images).T
    best = similarity.argmax(1).tolist()
    return {image: refs[train_images[j]][0] for image, j in zip(images, best)}


def tags_captions(images: Sequence[str], features: dict[str, torch.Tensor], spec: str = "tags") -> dict[str, str]:
    """The `tags` caption source (ImageNet labels of EfficientNet-Lite0) on cached Lite0 features."""
    from ..captioning.sources import make_caption_source

    source = make_caption_source(spec)
    results = source.caption(features=[features[i] for i in images])
    return {image: r.text for image, r in zip(images, results)}


# ------------------------------------------------------------------------------------------------------------ CLI
def caption_image(checkpoint: str | Path, image: str | Path, beam: int | None = None):
    """One image file -> Caption (words, per-word attention, score), using the checkpoint's own backbone."""
    from ..backbones import load_image_backbone
    from ..images import decode_image

    model = CaptionModel.from_pretrained(checkpoint)
    if not model.config.backbone:
        raise ValueError(f"{checkpoint}: config.json does not name the image backbone the captioner was trained on")
    backbone = load_image_backbone(model.config.backbone)
    pixels = backbone.preprocess(decode_image(Path(image).read_bytes(), backbone.spec.size))[None]
    return model.generate(backbone.features(pixels), beam=beam)[0]


def _data_arguments(parser: argparse.ArgumentParser, lists: tuple[str, ...]) -> None:
    parser.add_argument("--captions", required=True,
                        help="caption file: CSV with header image,caption (Flickr8k captions.txt), COCO-format JSON "
                             "or JSONL {image, caption}")
    parser.add_argument("--images", required=True, help="folder the caption file's image names are relative to")
    parser.add_argument("--cache-dir", default=None, help="feature cache (default ~/.cache/itjner/features)")
    for name in lists:
        parser.add_argument(f"--{name}", required=name == "list", help="split file: one image file name a line")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="itjner caption", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a captioner on image-caption data")
    _data_arguments(train, ("train-list", "valid-list"))
    train.add_argument("--out", required=True, help="checkpoint folder (best validation CIDEr is kept)")
    train.add_argument("--backbone", default="efficientnet-lite0",
                       help="image backbone: efficientnet-lite0 (offline) or a timm name, e.g. res2net101_26w_4s")
    train.add_argument("--random-init", action="store_true", help="random backbone weights (benchmarks only)")
    train.add_argument("--epochs", type=int, default=TrainOptions.epochs)
    train.add_argument("--batch-size", type=int, default=TrainOptions.batch_size)
    train.add_argument("--lr", type=float, default=TrainOptions.lr)
    train.add_argument("--lr-decay", type=float, default=TrainOptions.lr_decay,
                       help="multiply the learning rate by this after every epoch (1 = constant)")
    train.add_argument("--weight-decay", type=float, default=TrainOptions.weight_decay, help="AdamW weight decay")
    train.add_argument("--patience", type=int, default=TrainOptions.patience,
                       help="stop after this many epochs without a better validation CIDEr (0 = never)")
    train.add_argument("--val-fraction", type=float, default=TrainOptions.val_fraction,
                       help="share of images held out for validation when no --valid-list is given")
    train.add_argument("--min-count", type=int, default=TrainOptions.min_count,
                       help="words seen fewer times in training captions become <unk>")
    train.add_argument("--beam", type=int, default=TrainOptions.beam, help="beam width for validation and default")
    train.add_argument("--length-penalty", type=float, default=CaptionerConfig.length_penalty,
                       help="beam search ranks finished captions by logprob / length**this (0 = raw logprob)")
    train.add_argument("--embed-dim", type=int, default=CaptionerConfig.embed_dim)
    train.add_argument("--hidden-dim", type=int, default=CaptionerConfig.hidden_dim)
    train.add_argument("--attention-dim", type=int, default=CaptionerConfig.attention_dim)
    train.add_argument("--dropout", type=float, default=CaptionerConfig.dropout)
    train.add_argument("--label-smoothing", type=float, default=CaptionerConfig.label_smoothing)
    train.add_argument("--alpha-c", type=float, default=CaptionerConfig.alpha_c,
                       help="weight of the doubly stochastic attention penalty (0 = off)")
    train.add_argument("--flip", action="store_true",
                       help="augment: each epoch, half the training captions are seen with the mirrored image "
                            "(left/right swapped in the caption)")
    train.add_argument("--seed", type=int, default=TrainOptions.seed)
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    scst = sub.add_parser("scst", help="fine-tune a trained captioner on CIDEr-D (self-critical training)")
    scst.add_argument("--init", required=True, help="checkpoint trained with `train` (cross-entropy)")
    _data_arguments(scst, ("train-list", "valid-list"))
    scst.add_argument("--out", required=True)
    scst.add_argument("--epochs", type=int, default=ScstOptions.epochs)
    scst.add_argument("--lr", type=float, default=ScstOptions.lr)
    scst.add_argument("--samples", type=int, default=ScstOptions.samples)
    scst.add_argument("--batch-images", type=int, default=ScstOptions.batch_images)
    scst.add_argument("--max-len", type=int, default=ScstOptions.max_len)
    scst.add_argument("--patience", type=int, default=ScstOptions.patience)
    scst.add_argument("--beam", type=int, default=None, help="beam width for validation (default: the checkpoint's)")
    scst.add_argument("--length-penalty", type=float, default=None, help="default: the checkpoint's")
    scst.add_argument("--seed", type=int, default=ScstOptions.seed)
    ev = sub.add_parser("evaluate", help="BLEU-1..4 and CIDEr-D of a checkpoint's captions on a split")
    ev.add_argument("--checkpoint", required=True)
    _data_arguments(ev, ("list",))
    ev.add_argument("--beam", type=_number_list(int), default=[None],
                    help="beam width (default: the checkpoint's); a comma-separated list scores each")
    ev.add_argument("--length-penalty", type=_number_list(float), default=[None],
                    help="beam length penalty (default: the checkpoint's); a comma-separated list scores each")
    ev.add_argument("--save", default=None, help="also write the generated captions to this JSONL file")
    anchors = sub.add_parser("anchors", help="score two reference points on a split: nearest-neighbour caption "
                                             "retrieval from the training images, and the `tags` caption source")
    _data_arguments(anchors, ("train-list", "list"))
    anchors.add_argument("--tags-spec", default="tags", help="caption source spec of the tags anchor")
    anchors.add_argument("--save", default=None, help="also write the anchors' captions to this JSONL file")
    gen = sub.add_parser("generate", help="caption one image file")
    gen.add_argument("--checkpoint", required=True)
    gen.add_argument("--image", required=True)
    gen.add_argument("--beam", type=int, default=None, help="beam width (default: the checkpoint's)")
    gen.add_argument("--attention", action="store_true", help="print JSON with per-word 7x7 attention weights")
    return parser


def _number_list(kind):
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or a comma-separated list, got {text!r}")
    return parse


def main(argv: list[str] | None = None) -> int:
    from ..backbones import BackboneUnavailable
    from ..images import ImageError

    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (FileNotFoundError, ValueError, ImageError, BackboneUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _split(pairs: list[CaptionPair], path: str | None, what: str) -> list[CaptionPair] | None:
    return None if path is None else select_images(pairs, read_image_list(path), what)


def _usable(pairs: list[CaptionPair], features: dict, what: str) -> list[str]:
    images = sorted({p.image for p in pairs})
    usable = [i for i in images if i in features]
    if not usable:
        raise ValueError(f"no image of the {what} split is usable: check --images")
    return usable


def _write_jsonl(path: str | Path, rows: list[dict]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _run(args) -> int:
    if args.command == "generate":
        caption = caption_image(args.checkpoint, args.image, args.beam)
        if args.attention:
            print(json.dumps({"caption": caption.text, "score": caption.score, "attention": caption.attention}))
        else:
            print(caption.text)
        return 0
    pairs = read_captions(args.captions)
    if args.command == "evaluate":
        model = CaptionModel.from_pretrained(args.checkpoint)
        split = _split(pairs, args.list, "--list")
        features = load_features(split, args.images, model.config.backbone or "efficientnet-lite0", args.cache_dir,
                                 progress=False)
        images = _usable(split, features, "--list")
        refs = references_by_image(split)
        several = len(args.beam) * len(args.length_penalty) > 1
        for beam in args.beam:
            for length_penalty in args.length_penalty:
                generated = generate_captions(model, images, features, beam, length_penalty=length_penalty)
                scores = score_captions({i: refs[i] for i in images}, {i: generated[i].words for i in images})
                unk = sum("<unk>" in generated[i].words for i in images)
                words = sum(len(generated[i].words) for i in images) / len(images)
                setting = (f"beam {beam or model.config.beam} length penalty "
                           f"{model.config.length_penalty if length_penalty is None else length_penalty}: ")
                print(f"{setting if several else ''}{len(images)} images: {format_scores(scores)}  "
                      f"(mean length {words:.1f} words; captions with <unk>: {unk})")
        if args.save:  # the last setting's captions
            _write_jsonl(args.save, [{"image": i, "caption": generated[i].text} for i in images])
        return 0
    if args.command == "anchors":
        train_split, split = _split(pairs, args.train_list, "--train-list"), _split(pairs, args.list, "--list")
        if train_split is None:
            raise ValueError("anchors needs --train-list (the images whose captions are retrieved)")
        features = load_features(train_split + split, args.images, "efficientnet-lite0", args.cache_dir,
                                 progress=False)
        images = _usable(split, features, "--list")
        refs = {i: references_by_image(split)[i] for i in images}
        rows = {}
        for name, captions in (("nearest-neighbour", nearest_neighbour_captions(train_split, images, features)),
                               (args.tags_spec, tags_captions(images, features, args.tags_spec))):
            print(f"{name}: {len(images)} images: {format_scores(score_captions(refs, captions))}")
            for i in images:
                rows.setdefault(i, {"image": i})[name] = captions[i]
        if args.save:
            _write_jsonl(args.save, list(rows.values()))
        return 0
    if args.command == "scst":
        model = CaptionModel.from_pretrained(args.init)
        if args.beam is not None:
            model.config.beam = args.beam
        if args.length_penalty is not None:
            model.config.length_penalty = args.length_penalty
        train_split, valid_split = _split(pairs, args.train_list, "--train-list"), _split(pairs, args.valid_list,
                                                                                          "--valid-list")
        if train_split is None or valid_split is None:
            raise ValueError("scst needs --train-list and --valid-list")
        features = load_features(train_split + valid_split, args.images, model.config.backbone or "efficientnet-lite0",
                                 args.cache_dir)
        options = ScstOptions(args.epochs, args.lr, args.samples, args.batch_images, args.max_len, args.patience,
                              args.seed)
        _, history = scst_finetune(model, train_split, valid_split, features, args.out, options)
        best = max(history, key=selection_key)
        print(f"best epoch {best['epoch']}: " + _format_row(best) + f"; saved to {args.out}")
        return 0
    train_split, valid_split = _split(pairs, args.train_list, "--train-list"), _split(pairs, args.valid_list,
                                                                                      "--valid-list")
    train_pairs = train_split if train_split is not None else pairs
    if valid_split is not None and train_split is None:
        valid_images = {p.image for p in valid_split}
        train_pairs = [p for p in pairs if p.image not in valid_images]
    features = load_features(train_pairs + (valid_split or []), args.images, args.backbone, args.cache_dir,
                             args.random_init)
    flipped = load_features(train_pairs, args.images, args.backbone, args.cache_dir, args.random_init,
                            flipped=True) if args.flip else None
    options = TrainOptions(args.epochs, args.batch_size, args.lr, args.val_fraction, args.min_count, args.beam,
                           args.seed, weight_decay=args.weight_decay, lr_decay=args.lr_decay, patience=args.patience)
    model, history = train_captioner(train_pairs, features, args.out, options, backbone=args.backbone,
                                     device=args.device, val_pairs=valid_split, flipped_features=flipped,
                                     embed_dim=args.embed_dim,
                                     hidden_dim=args.hidden_dim, attention_dim=args.attention_dim,
                                     dropout=args.dropout, alpha_c=args.alpha_c, label_smoothing=args.label_smoothing,
                                     length_penalty=args.length_penalty)
    best = max(history, key=selection_key) if "cider" in history[0] else history[-1]
    print(f"best epoch {best['epoch']}: " + _format_row(best) + f"; saved to {args.out}")
    return 0

