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
import json
import sys
from pathlib import Path

import torch

from ..caption_metrics import format_scores, score_captions
from ..configuration_captioner import CaptionerConfig
from ..modeling_captioner import CaptionModel
from .anchors import nearest_neighbour_captions, tags_captions
from .data import CaptionPair, read_captions, read_image_list, references_by_image, select_images
from .scst import ScstOptions, scst_finetune
from .training import (TrainOptions, format_epoch_row, generate_captions, load_features, selection_key,
                       train_captioner)


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


# --------------------------------------------------------------------------------------------------------- parser
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
    for add in (_train_parser, _scst_parser, _evaluate_parser, _anchors_parser, _generate_parser):
        add(sub)
    return parser


def _train_parser(sub) -> None:
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


def _scst_parser(sub) -> None:
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


def _evaluate_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help="BLEU-1..4 and CIDEr-D of a checkpoint's captions on a split")
    ev.add_argument("--checkpoint", required=True)
    _data_arguments(ev, ("list",))
    ev.add_argument("--beam", type=_number_list(int), default=[None],
                    help="beam width (default: the checkpoint's); a comma-separated list scores each")
    ev.add_argument("--length-penalty", type=_number_list(float), default=[None],
                    help="beam length penalty (default: the checkpoint's); a comma-separated list scores each")
    ev.add_argument("--no-repeat-ngram-size", type=_number_list(int), default=[None],
                    help="never repeat an n-gram of this many words in a caption, 0 = off (default: the "
                         "checkpoint's); a comma-separated list scores each")
    ev.add_argument("--save", default=None, help="also write the generated captions to this JSONL file")


def _anchors_parser(sub) -> None:
    anchors = sub.add_parser("anchors", help="score two reference points on a split: nearest-neighbour caption "
                                             "retrieval from the training images, and the `tags` caption source")
    _data_arguments(anchors, ("train-list", "list"))
    anchors.add_argument("--tags-spec", default="tags", help="caption source spec of the tags anchor")
    anchors.add_argument("--save", default=None, help="also write the anchors' captions to this JSONL file")


def _generate_parser(sub) -> None:
    gen = sub.add_parser("generate", help="caption one image file")
    gen.add_argument("--checkpoint", required=True)
    gen.add_argument("--image", required=True)
    gen.add_argument("--beam", type=int, default=None, help="beam width (default: the checkpoint's)")
    gen.add_argument("--attention", action="store_true", help="print JSON with per-word 7x7 attention weights")


def _number_list(kind):
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number or a comma-separated list, got {text!r}")
    return parse


# ------------------------------------------------------------------------------------------------------- commands
def main(argv: list[str] | None = None) -> int:
    from ..backbones import BackboneUnavailable
    from ..images import ImageError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
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


def _generate(args) -> int:
    caption = caption_image(args.checkpoint, args.image, args.beam)
    if args.attention:
        print(json.dumps({"caption": caption.text, "score": caption.score, "attention": caption.attention}))
    else:
        print(caption.text)
    return 0


def _evaluate(args) -> int:
    pairs = read_captions(args.captions)
    model = CaptionModel.from_pretrained(args.checkpoint)
    split = _split(pairs, args.list, "--list")
    features = load_features(split, args.images, model.config.backbone or "efficientnet-lite0", args.cache_dir,
                             progress=False)
    images = _usable(split, features, "--list")
    refs = references_by_image(split)
    several = len(args.beam) * len(args.length_penalty) * len(args.no_repeat_ngram_size) > 1
    for beam in args.beam:
        for length_penalty in args.length_penalty:
            for ngram in args.no_repeat_ngram_size:
                generated = generate_captions(model, images, features, beam, length_penalty=length_penalty,
                                              no_repeat_ngram_size=ngram)
                scores = score_captions({i: refs[i] for i in images}, {i: generated[i].words for i in images})
                unk = sum("<unk>" in generated[i].words for i in images)
                words = sum(len(generated[i].words) for i in images) / len(images)
                setting = (f"beam {beam or model.config.beam} length penalty "
                           f"{model.config.length_penalty if length_penalty is None else length_penalty} "
                           f"no-repeat n-gram "
                           f"{model.config.no_repeat_ngram_size if ngram is None else ngram}: ")
                print(f"{setting if several else ''}{len(images)} images: {format_scores(scores)}  "
                      f"(mean length {words:.1f} words; captions with <unk>: {unk})")
    if args.save:  # the last setting's captions
        _write_jsonl(args.save, [{"image": i, "caption": generated[i].text} for i in images])
    return 0


def _anchors(args) -> int:
    pairs = read_captions(args.captions)
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


def _scst(args) -> int:
    pairs = read_captions(args.captions)
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
    print(f"best epoch {best['epoch']}: " + format_epoch_row(best) + f"; saved to {args.out}")
    return 0


def _train(args) -> int:
    pairs = read_captions(args.captions)
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
    _, history = train_captioner(train_pairs, features, args.out, options, backbone=args.backbone,
                                device=args.device, val_pairs=valid_split, flipped_features=flipped,
                                embed_dim=args.embed_dim,
                                hidden_dim=args.hidden_dim, attention_dim=args.attention_dim,
                                dropout=args.dropout, alpha_c=args.alpha_c, label_smoothing=args.label_smoothing,
                                length_penalty=args.length_penalty)
    best = max(history, key=selection_key) if "cider" in history[0] else history[-1]
    print(f"best epoch {best['epoch']}: " + format_epoch_row(best) + f"; saved to {args.out}")
    return 0


COMMANDS = {"generate": _generate, "evaluate": _evaluate, "anchors": _anchors, "scst": _scst, "train": _train}
