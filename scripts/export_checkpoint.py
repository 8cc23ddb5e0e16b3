"""Store a trained checkpoint compactly (fp16) and prove the stored file by evaluating it.

    .venv/bin/python scripts/export_checkpoint.py runs/t17/lite-s1 assets/itjner-lite-twitter2017

Evaluates the fp16 copy on dev and test (and the original on test if it was trained with --no-test), records those
figures in its card (the card's figures are then what
`itjner evaluate` prints for the stored file) and keeps the fp32 figures beside them for comparison.
"""
import json
import sys
from pathlib import Path

import torch

from itjner.checkpoints import load_card
from itjner.data import read_conll, split_path
from itjner.modeling_itjner import ITJNERModel
from itjner.predict import Predictor
from itjner.train import evaluate_tweets


def main(src: str, dst: str) -> None:
    card = load_card(src)
    ITJNERModel.from_pretrained(src).save_pretrained(dst, card=card, dtype=torch.float16)
    stored = Predictor.from_pretrained(dst)
    for split, key in (("dev", "dev"), ("test", "test")):
        tweets = read_conll(split_path(card["data"], split))
        if card.get(key) is None:  # trained with --no-test: the fp32 model's test figures, measured now
            card[key] = evaluate_tweets(Predictor.from_pretrained(src), tweets, progress=False)
        card[f"{key}_fp32"] = card[key]
        card[key] = evaluate_tweets(stored, tweets, progress=False)
        scores = card[key]
        print(f"{split}: fp32 F1 {card[f'{key}_fp32']['overall']['f1']:.4f} -> fp16 F1 {scores['overall']['f1']:.4f}")
    card["stored_dtype"] = "float16"
    card["data"] = card["data"].replace(str(Path.cwd()) + "/", "")
    stored.model.save_pretrained(dst, card=card, dtype=torch.float16)
    size = sum(p.stat().st_size for p in Path(dst).iterdir())
    print(f"wrote {dst} ({size / 2**20:.1f} MiB)")
    print(json.dumps({k: card[k]["overall"]["f1"] for k in ("dev", "test", "dev_fp32", "test_fp32")}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
