"""Train the region-attention captioner on any image-caption data, and caption an image with it.

    python -m itjner.caption train --captions captions.json --images DIR --out runs/captioner
    python -m itjner.caption generate --checkpoint runs/captioner --image photo.jpg [--beam 3]

Captions are read from COCO-format JSON (`images`: id/file_name, `annotations`: image_id/caption) or JSONL
(`{"image": "<file name>", "caption": "..."}` per line). Frozen region features come from the same cached
`FeatureStore` the NER model uses, so each image passes through the backbone once. Every epoch reports the
validation loss and corpus BLEU-4; the checkpoint with the best validation BLEU-4 is kept in --out.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..modeling_captioner import CaptionerConfig, CaptionModel, Vocabulary, pad_captions, tokenize


@dataclass(frozen=True)
class CaptionPair:
    image: str    # file name relative to the images folder
    caption: str


# ------------------------------------------------------------------------------------------------------- readers
def read_captions(path: str | Path) -> list[CaptionPair]:
    """COCO-format JSON or JSONL, chosen by content (a JSON object with `annotations` is COCO)."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # several objects: JSONL
        if isinstance(data, dict) and ("annotations" in data or "images" in data):
            return _read_coco(data, path)
    return _read_jsonl(text, path)


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


# ------------------------------------------------------------------------------------------------------- BLEU-4
def corpus_bleu(references: Sequence[Sequence[Sequence[str]]], hypotheses: Sequence[Sequence[str]],
                max_n: int = 4) -> float:
    """Papineni et al.'s corpus BLEU (uniform weights, no smoothing): clipped n-gram precisions summed over the
    corpus, geometric mean, brevity penalty against the reference length closest to each hypothesis."""
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for refs, hyp in zip(references, hypotheses):
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp, n)
            best = Counter()
            for ref in refs:
                best |= _ngrams(ref, n)
            matches[n - 1] += sum(min(c, best[g]) for g, c in counts.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if hyp_len == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = min(0.0, 1.0 - ref_len / hyp_len)
    return math.exp(log_precision + brevity)


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


# ----------------------------------------------------------------------------------------------------- training
@dataclass
class TrainOptions:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 4e-4
    val_fraction: float = 0.1
    min_count: int = 5
    beam: int = 3
    seed: int = 1
    grad_clip: float = 5.0
    progress: bool = True


def split_by_image(pairs: list[CaptionPair], val_fraction: float, seed: int):
    """Train/validation pairs, split by image so no validation image is seen in training."""
    images = sorted({p.image for p in pairs})
    random.Random(seed).shuffle(images)
    n_val = round(len(images) * val_fraction)
    if val_fraction > 0 and len(images) > 1:
        n_val = min(max(n_val, 1), len(images) - 1)
    val_images = set(images[:n_val])
    return [p for p in pairs if p.image not in val_images], [p for p in pairs if p.image in val_images]


def evaluate(model: CaptionModel, pairs: list[CaptionPair], features: dict[str, torch.Tensor],
             beam: int, batch_size: int = 64) -> dict:
    """Validation CE loss per word and corpus BLEU-4 of generated captions against all captions of each image."""
    model.eval()
    refs = defaultdict(list)
    for p in pairs:
        refs[p.image].append(tokenize(p.caption))
    loss_sum, batches = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            feats, caps = _batch(model, chunk, features)
            loss_sum += model.loss(feats, caps)[1].item()
            batches += 1
    images = sorted(refs)
    hyps = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        hyps += [c.words for c in model.generate(torch.stack([features[i] for i in chunk]), beam=beam)]
    return {"val_loss": loss_sum / max(batches, 1), "bleu4": corpus_bleu([refs[i] for i in images], hyps),
            "exact": sum(h in refs[i] for h, i in zip(hyps, images)) / max(len(images), 1)}


def _batch(model: CaptionModel, chunk: list[CaptionPair], features: dict[str, torch.Tensor]):
    device = next(model.parameters()).device
    feats = torch.stack([features[p.image] for p in chunk]).to(device).float()
    caps = pad_captions([model.vocab.encode(p.caption) for p in chunk]).to(device)
    return feats, caps


def train_captioner(pairs: list[CaptionPair], features: dict[str, torch.Tensor], out: str | Path | None,
                    options: TrainOptions | None = None, backbone: str | None = None,
                    device: str | torch.device = "cpu", **config) -> tuple[CaptionModel, list[dict]]:
    """Train on pairs whose image has features (others are skipped); keep the best-BLEU-4 checkpoint in `out`.
    `config` overrides CaptionerConfig fields (embed_dim, hidden_dim, ...). Returns the best model and the history."""
    from tqdm.auto import tqdm

    options = options or TrainOptions()
    pairs = [p for p in pairs if features.get(p.image) is not None]
    if not pairs:
        raise ValueError("no caption has a usable image: check --images and the file names in the caption file")
    torch.manual_seed(options.seed)
    train, val = split_by_image(pairs, options.val_fraction, options.seed)
    vocab = Vocabulary.build((p.caption for p in train), options.min_count)
    feature_dim = next(iter(features[p.image] for p in train)).shape[-1]
    cfg = CaptionerConfig(feature_dim=feature_dim, vocab_size=len(vocab), beam=options.beam, backbone=backbone,
                          **config)
    model = CaptionModel(cfg, vocab).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
    rng = random.Random(options.seed)
    history, best = [], None
    for epoch in range(1, options.epochs + 1):
        model.train()
        order = train[:]
        rng.shuffle(order)
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
        row = {"epoch": epoch, "train_loss": total / max(len(bar), 1)}
        row.update(evaluate(model, val, features, options.beam) if val else {})
        history.append(row)
        key = (row["bleu4"], -row["val_loss"]) if val else (epoch,)  # without validation: the last epoch
        improved = best is None or key > best[0]
        if improved:
            best = (key, epoch,
                    {k: v.detach().clone() for k, v in model.state_dict().items()})
            if out is not None:
                model.config.extra = {"epoch": epoch, **{k: row[k] for k in ("bleu4", "val_loss") if k in row}}
                model.save_pretrained(out)
        if options.progress:
            print(_format_row(row) + ("  *best*" if improved else ""), file=sys.stderr)
    model.load_state_dict(best[2])
    model.config.extra = {"epoch": best[1]}
    if out is not None:
        Path(out, "history.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    return model.eval(), history


def _format_row(row: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


def load_features(pairs: list[CaptionPair], images_dir: str | Path, backbone_name: str, cache_dir=None,
                  random_init: bool = False, chunk: int = 256, progress: bool = True) -> dict[str, torch.Tensor]:
    """Frozen region features per image file (cached on disk); unusable images are reported and left out."""
    from tqdm.auto import tqdm

    from ..backbones import load_image_backbone
    from ..images import FeatureStore, ImageReport

    store = FeatureStore(load_image_backbone(backbone_name, random_init=random_init), cache_dir)
    names = sorted({p.image for p in pairs})
    report, features = ImageReport(), {}
    for start in tqdm(range(0, len(names), chunk), desc="image features", disable=not progress):
        batch = names[start:start + chunk]
        feats, _ = store.features_for_ids(images_dir, batch, report)
        features.update({n: f for n, f in zip(batch, feats) if f is not None})
    print(report.summary(), file=sys.stderr)
    return features


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="itjner caption", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a captioner on image-caption data")
    train.add_argument("--captions", required=True, help="COCO-format caption JSON or JSONL {image, caption}")
    train.add_argument("--images", required=True, help="folder the caption file's image names are relative to")
    train.add_argument("--out", required=True, help="checkpoint folder (best validation BLEU-4 is kept)")
    train.add_argument("--backbone", default="efficientnet-lite0",
                       help="image backbone: efficientnet-lite0 (offline) or a timm name, e.g. res2net101_26w_4s")
    train.add_argument("--random-init", action="store_true", help="random backbone weights (benchmarks only)")
    train.add_argument("--cache-dir", default=None, help="feature cache (default ~/.cache/itjner/features)")
    train.add_argument("--epochs", type=int, default=TrainOptions.epochs)
    train.add_argument("--batch-size", type=int, default=TrainOptions.batch_size)
    train.add_argument("--lr", type=float, default=TrainOptions.lr)
    train.add_argument("--val-fraction", type=float, default=TrainOptions.val_fraction)
    train.add_argument("--min-count", type=int, default=TrainOptions.min_count,
                       help="words seen fewer times in training captions become <unk>")
    train.add_argument("--beam", type=int, default=TrainOptions.beam, help="beam width for validation and default")
    train.add_argument("--embed-dim", type=int, default=CaptionerConfig.embed_dim)
    train.add_argument("--hidden-dim", type=int, default=CaptionerConfig.hidden_dim)
    train.add_argument("--attention-dim", type=int, default=CaptionerConfig.attention_dim)
    train.add_argument("--dropout", type=float, default=CaptionerConfig.dropout)
    train.add_argument("--alpha-c", type=float, default=CaptionerConfig.alpha_c,
                       help="weight of the doubly stochastic attention penalty (0 = off)")
    train.add_argument("--seed", type=int, default=TrainOptions.seed)
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    gen = sub.add_parser("generate", help="caption one image file")
    gen.add_argument("--checkpoint", required=True)
    gen.add_argument("--image", required=True)
    gen.add_argument("--beam", type=int, default=None, help="beam width (default: the checkpoint's)")
    gen.add_argument("--attention", action="store_true", help="print JSON with per-word 7x7 attention weights")
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..backbones import BackboneUnavailable
    from ..images import ImageError

    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (FileNotFoundError, ValueError, ImageError, BackboneUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.command == "generate":
        caption = caption_image(args.checkpoint, args.image, args.beam)
        if args.attention:
            print(json.dumps({"caption": caption.text, "score": caption.score, "attention": caption.attention}))
        else:
            print(caption.text)
        return 0
    pairs = read_captions(args.captions)
    features = load_features(pairs, args.images, args.backbone, args.cache_dir, args.random_init)
    options = TrainOptions(args.epochs, args.batch_size, args.lr, args.val_fraction, args.min_count, args.beam,
                           args.seed)
    model, history = train_captioner(pairs, features, args.out, options, backbone=args.backbone, device=args.device,
                                     embed_dim=args.embed_dim, hidden_dim=args.hidden_dim,
                                     attention_dim=args.attention_dim, dropout=args.dropout, alpha_c=args.alpha_c)
    best = max(history, key=lambda r: (r["bleu4"], -r["val_loss"])) if "bleu4" in history[0] else history[-1]
    print(f"best epoch {best['epoch']}: " + _format_row(best) + f"; saved to {args.out}")
    return 0

