"""Toy world: tweet+image pairs where only the image can decide an entity's type (proves the image branch works).

Each "related" pair says something neutral about a made-up name ("Can't stop thinking about Zorvan today") and the
image shows one visual cue — a person-like figure (PER), a map-like patch (LOC) or a logo-like emblem (ORG) — in
one random cell of the 7x7 grid over a cluttered background. "Unrelated" pairs have a text that decides the type by
itself ("Flying to Zorvan tomorrow") and an image that is clutter, or a cue that disagrees; the gate should close.

    python -m itjner.toyworld generate --out toy                       # images/ + train/valid/test.txt + meta
    python -m itjner.toyworld experiment --data toy --out runs/toy     # full model vs text-only vs ablations
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from .data import Tweet, write_conll

GRID, SIZE = 7, 224
CELL = SIZE // GRID
CUE_TYPES = ("PER", "LOC", "ORG")
NAMES = ("Zorvan", "Kelmar", "Ostrid", "Paxley", "Quennel", "Virosa", "Brantis", "Delvio", "Faroni", "Gistel",
         "Halvor", "Jentra", "Lomack", "Morvel", "Nastri", "Pellow", "Ravick", "Sombre", "Tavish", "Ulbrec")
NEUTRAL = ("Can't stop thinking about {} today", "Just saw {} and wow", "Big news about {} this morning",
           "{} again , what a day", "Everyone is talking about {} right now", "Look at {} !")
DECISIVE = {
    "PER": ("Happy birthday to my friend {} !", "{} said she is proud of her team", "Interview with {} , the singer"),
    "LOC": ("Flying to {} tomorrow for vacation", "The weather in {} is terrible", "Streets of {} after the storm"),
    "ORG": ("Shares of {} Inc. fell after earnings", "{} Corp announced a merger", "I applied for a job at {} Ltd ."),
}


@dataclass
class ToyPair:
    tweet: Tweet
    image: Image.Image
    name_index: int
    cue_type: str | None
    cue_cell: int | None  # row-major 7x7 index
    related: bool


def _clutter(rng: random.Random, avoid: int | None) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), tuple(rng.randint(150, 200) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 6)):  # cue-coloured fragments: the cue's colours alone do not give it away
        cell = rng.randrange(GRID * GRID)
        if cell != avoid:
            _draw_fragment(draw, rng, cell)
    for _ in range(rng.randint(12, 20)):
        cell = rng.randrange(GRID * GRID)
        if cell == avoid:
            continue
        r, c = divmod(cell, GRID)
        x, y = c * CELL + rng.randint(0, 16), r * CELL + rng.randint(0, 16)
        grey = rng.randint(90, 170)
        shape = rng.choice(("rect", "line", "dot"))
        if shape == "rect":
            draw.rectangle((x, y, x + rng.randint(6, 14), y + rng.randint(6, 14)), fill=(grey, grey, grey - 10))
        elif shape == "line":
            draw.line((x, y, x + rng.randint(-14, 14), y + rng.randint(4, 16)), fill=(grey - 40,) * 3, width=2)
        else:
            draw.ellipse((x, y, x + 6, y + 6), fill=(grey, grey - 20, grey - 20))
    return img


def _draw_fragment(draw: ImageDraw.ImageDraw, rng: random.Random, cell: int) -> None:
    """One piece of a cue, never a whole one: a red block, a skin-coloured disc, a sea patch, an orange disc."""
    r, c = divmod(cell, GRID)
    x0, y0 = c * CELL + rng.randint(0, 12), r * CELL + rng.randint(0, 12)
    kind = rng.randrange(4)
    if kind == 0:
        draw.rectangle((x0, y0, x0 + 14, y0 + 10), fill=(220, 20, 20))
    elif kind == 1:
        draw.ellipse((x0, y0, x0 + 10, y0 + 10), fill=(240, 190, 150))
    elif kind == 2:
        draw.rectangle((x0, y0, x0 + 16, y0 + 16), fill=(60, 140, 230))
    else:
        draw.ellipse((x0, y0, x0 + 18, y0 + 18), fill=(255, 140, 0))


def _draw_cue(img: Image.Image, cue: str, cell: int) -> None:
    r, c = divmod(cell, GRID)
    x0, y0 = c * CELL, r * CELL
    d = ImageDraw.Draw(img)
    if cue == "PER":  # person-like figure: head, torso, legs
        d.ellipse((x0 + 11, y0 + 2, x0 + 21, y0 + 12), fill=(240, 190, 150), outline=(0, 0, 0))
        d.rectangle((x0 + 9, y0 + 12, x0 + 23, y0 + 23), fill=(220, 20, 20))
        d.line((x0 + 12, y0 + 23, x0 + 10, y0 + 31), fill=(0, 0, 0), width=3)
        d.line((x0 + 20, y0 + 23, x0 + 22, y0 + 31), fill=(0, 0, 0), width=3)
    elif cue == "LOC":  # map-like patch: sea, land, grid lines
        d.rectangle((x0, y0, x0 + CELL - 1, y0 + CELL - 1), fill=(60, 140, 230))
        d.polygon([(x0 + 4, y0 + 6), (x0 + 20, y0 + 3), (x0 + 28, y0 + 18), (x0 + 12, y0 + 28)], fill=(40, 170, 60))
        for k in range(0, CELL, 8):
            d.line((x0 + k, y0, x0 + k, y0 + CELL - 1), fill=(255, 255, 255))
            d.line((x0, y0 + k, x0 + CELL - 1, y0 + k), fill=(255, 255, 255))
    else:  # logo-like emblem: ring, disc, star-ish bar
        d.ellipse((x0 + 1, y0 + 1, x0 + CELL - 2, y0 + CELL - 2), fill=(255, 140, 0), outline=(255, 255, 255), width=3)
        d.ellipse((x0 + 10, y0 + 10, x0 + CELL - 11, y0 + CELL - 11), fill=(20, 20, 120))
        d.line((x0 + 6, y0 + CELL // 2, x0 + CELL - 7, y0 + CELL // 2), fill=(255, 255, 0), width=3)


def _draw_frame(img: Image.Image, cell: int) -> None:
    """The highlight that marks the tweet's subject among decoys: a yellow frame around its cell."""
    r, c = divmod(cell, GRID)
    x0, y0 = c * CELL, r * CELL
    ImageDraw.Draw(img).rectangle((x0, y0, x0 + CELL - 1, y0 + CELL - 1), outline=(255, 230, 0), width=3)


def make_pair(rng: random.Random, image_id: str, related: bool, decoys: int = 0) -> ToyPair:
    """`decoys` extra cues, unframed, in other cells, cycling through the types the framed cue is not: with two decoys
    every image shows all three types once, so pooling the regions says nothing about the type; only the framed cell
    decides."""
    name = rng.choice(NAMES)
    label = rng.choice(CUE_TYPES)
    if related:
        cue, text = label, rng.choice(NEUTRAL)
    else:
        cue = rng.choice((None, None) + tuple(t for t in CUE_TYPES if t != label))
        text = rng.choice(DECISIVE[label])
    cell = rng.randrange(GRID * GRID) if cue else None
    # decoy cells are drawn only when asked for, so decoys=0 keeps the random stream (and the shipped toy data) as it was
    decoy_cells = rng.sample([c for c in range(GRID * GRID) if c != cell], decoys) if decoys else []
    img = _clutter(rng, cell)
    others = [t for t in CUE_TYPES if t != cue]
    for k, other in enumerate(decoy_cells):
        _draw_cue(img, others[k % len(others)] if cue else rng.choice(CUE_TYPES), other)
    if cue:
        _draw_cue(img, cue, cell)
        if decoys:
            _draw_frame(img, cell)
    tokens = text.format(name).split()
    idx = tokens.index(name)
    tags = ["O"] * len(tokens)
    tags[idx] = f"B-{label}"
    return ToyPair(Tweet(image_id, tokens, tags), img, idx, cue, cell, related)


def generate(out: str | Path, sizes=(2000, 300, 300), related_fraction: float = 0.7, seed: int = 0,
             decoys: int = 0) -> Path:
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, n in zip(("train.txt", "valid.txt", "test.txt"), sizes):
        pairs = [make_pair(rng, f"{split[:-4]}-{i:05d}", rng.random() < related_fraction, decoys) for i in range(n)]
        for p in pairs:
            p.image.save(out / "images" / f"{p.tweet.image_id}.jpg", quality=95)
        write_conll([p.tweet for p in pairs], out / split)
        meta = [{"image_id": p.tweet.image_id, "name_index": p.name_index, "cue_type": p.cue_type,
                 "cue_cell": p.cue_cell, "related": p.related} for p in pairs]
        (out / f"{split[:-4]}.meta.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return out


def load_meta(data: str | Path, split: str = "test") -> list[dict]:
    path = Path(data) / f"{split}.meta.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def cells_touch(a: int, b: int) -> bool:
    """Two row-major grid cells are the same or neighbours (the 3x3 block around b)."""
    return abs(a // GRID - b // GRID) <= 1 and abs(a % GRID - b % GRID) <= 1


def grounding_report(predictor, data: str | Path, split: str = "test") -> dict:
    """Accuracy on the names of related pairs, heatmap-peak hit rate, and mean gate (related vs unrelated)."""
    import numpy as np

    from .data import read_conll
    from .metrics import entity_scores

    split_file = {"test": "test.txt", "dev": "valid.txt", "train": "train.txt"}[split]
    tweets, meta = read_conll(Path(data) / split_file), load_meta(data, split)
    preds = predictor.predict(tweets, images_dir=Path(data) / "images", details=True)
    related = [i for i, m in enumerate(meta) if m["related"]]
    correct = [preds[i].tags[meta[i]["name_index"]] == tweets[i].tags[meta[i]["name_index"]] for i in related]
    report = {"name_accuracy_related": 100 * float(np.mean(correct)),
              "entity_f1_all": entity_scores([t.tags for t in tweets], [p.tags for p in preds])["overall"]["f1"]}
    details = [p.details for p in preds]
    if details[0] and "Q" in details[0]:
        peaks = [int(details[i]["Q"][:, meta[i]["name_index"]].mean(0).argmax()) for i in related]
        cues = [meta[i]["cue_cell"] for i in related]
        report["heatmap_peak_in_cue_cell"] = 100 * float(np.mean([p == c for p, c in zip(peaks, cues)]))
        report["heatmap_peak_near_cue_cell"] = 100 * float(np.mean([cells_touch(p, c) for p, c in zip(peaks, cues)]))
    if details[0] and details[0].get("gate") is not None:
        for key in ("gate", "gate_effective"):
            gate = [float(d[key][m["name_index"]]) for d, m in zip(details, meta)]
            report[f"{key}_related"] = float(np.mean([g for g, m in zip(gate, meta) if m["related"]]))
            report[f"{key}_unrelated"] = float(np.mean([g for g, m in zip(gate, meta) if not m["related"]]))
    return report


VARIANTS = {"full": {}, "text-only": {"text_only": True}, "no-gate": {"no_gate": True},
            "no-image-text": {"no_image_text": True}}


def experiment(data, out, variants=tuple(VARIANTS), epochs: int = 4, seed: int = 1, log=print) -> dict:
    """Train each variant on the toy world (lite preset, frozen text encoder, no captions) and report."""
    from .configuration_itjner import preset
    from .predict import Predictor
    from .train import train

    results = {}
    for name in variants:
        model_cfg, train_cfg = preset("lite")
        model_cfg = model_cfg.with_ablation(no_caption=True, **VARIANTS[name])
        model_cfg.freeze_text_encoder = True
        train_cfg.epochs, train_cfg.seed = epochs, seed
        run = Path(out) / name
        train(model_cfg, train_cfg, data, run, images_dir=Path(data) / "images", test=False, log=log)
        results[name] = grounding_report(Predictor.from_pretrained(run), data)
        log(f"{name}: {json.dumps(results[name])}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="itjner toyworld", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write a toy-world dataset (CoNLL + images)")
    g.add_argument("--out", required=True)
    g.add_argument("--sizes", default="2000,300,300", help="train,dev,test pairs")
    g.add_argument("--related-fraction", type=float, default=0.7)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--decoys", type=int, default=0, help="unframed cues besides the framed one, cycling through the types it is not")
    e = sub.add_parser("experiment", help="train full / text-only / ablations and report grounding metrics")
    e.add_argument("--data", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--variants", default=",".join(VARIANTS))
    e.add_argument("--epochs", type=int, default=4)
    e.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "generate":
        sizes = tuple(int(x) for x in args.sizes.split(","))
        out = generate(args.out, sizes, args.related_fraction, args.seed, args.decoys)
        print(f"wrote {out}: {' / '.join(map(str, sizes))} train / valid / test tweets with their images "
              f"(seed {args.seed}; the same seed writes the same files)")
    else:
        results = experiment(args.data, args.out, args.variants.split(","), args.epochs, args.seed)
        Path(args.out, "grounding.json").write_text(json.dumps(results, indent=2) + "\n")
        for name, r in results.items():
            print(name, " ".join(f"{k}={v:.2f}" for k, v in r.items()))
    return 0

