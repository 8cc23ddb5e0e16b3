"""Store a trained checkpoint compactly (fp16) and prove the stored file by evaluating it.

    .venv/bin/python scripts/export_checkpoint.py runs/t17/base-lora-s1 assets/itjner-base-twitter2017

Evaluates the fp16 copy on dev and test in each compute precision this machine runs (fp32, and bf16 where the CPU
or GPU computes it natively) and records them in its card (`precision_scores`; `itjner evaluate --precision P`
reprints them), the figures of `auto` as the card's dev/test, the trained weights' figures before the fp16 copy
(dev_fp32/test_fp32, measured now when the run skipped test or used --limit; kept when an exported checkpoint is
exported again), and the time to tag one tweet at `auto` (`speed`, for the app's model picker). A LoRA checkpoint
keeps its adapter apart (encoder_adapter/).
"""
import json
import platform
import sys
import time
from pathlib import Path

import torch

from itjner.checkpoints import load_card
from itjner.data import Tweet, read_conll, split_path, tokenize
from itjner.modeling_itjner import ITJNERModel
from itjner.predict import Predictor, cpu_has_bf16, effective_precision
from itjner.train import evaluate_tweets

TWEET = "RT @nba : Kevin Durant joins the Golden State Warriors in Oakland after nine seasons with the Thunder"


def ms_per_tweet(predictor: Predictor, repeats: int = 30) -> float:
    """Median time to tag one 20-word tweet (no image: what a text-only model costs per request)."""
    tweet = [Tweet("x", tokenize(TWEET))]
    predictor.predict(tweet, images=[None])
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predictor.predict(tweet, images=[None])
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2] * 1000


def main(src: str, dst: str) -> None:
    card = load_card(src)
    # merge=False: a LoRA checkpoint keeps its adapter apart (encoder_adapter/); a merged model cannot be saved
    ITJNERModel.from_pretrained(src, merge=False).save_pretrained(dst, card=card, dtype=torch.float16)
    precisions = ["fp32"] + (["bf16"] if cpu_has_bf16() or torch.cuda.is_available() else [])
    stored = {p: Predictor.from_pretrained(dst, precision=p) for p in precisions}
    auto = effective_precision(stored["fp32"].device, "auto")
    card["precision_scores"] = {p: {} for p in precisions}
    for split in ("dev", "test"):
        tweets = read_conll(split_path(card["data"], split))
        # trained with --no-test, or with --limit (its figures are on the first tweets only): the trained weights'
        # figures on the whole split, measured now
        if card.get(split) is None or card.get("limit"):
            card[split] = evaluate_tweets(Predictor.from_pretrained(src), tweets, progress=False)
        if "stored_dtype" not in card:  # a re-export keeps the figures of the weights as trained
            card[f"{split}_fp32"] = card[split]
        for precision, predictor in stored.items():
            scores = evaluate_tweets(predictor, tweets, progress=False)
            card["precision_scores"][precision][split] = scores["overall"]["f1"]
            if precision == auto:
                card[split] = scores
        print(f"{split}: trained weights F1 {card[f'{split}_fp32']['overall']['f1']:.4f} -> fp16 copy "
              + ", ".join(f"{p} {s[split]:.4f}" for p, s in card["precision_scores"].items()))
    card["precision"] = auto
    card["speed"] = {"ms_per_tweet": round(ms_per_tweet(stored[auto]), 1), "precision": auto,
                     "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                     "measured": "one 20-word tweet, no image, median of 30 (scripts/export_checkpoint.py)"}
    card["stored_dtype"] = "float16"
    card["data"] = card["data"].replace(str(Path.cwd()) + "/", "")
    ITJNERModel.from_pretrained(dst, merge=False).save_pretrained(dst, card=card, dtype=torch.float16)
    size = sum(p.stat().st_size for p in Path(dst).rglob("*") if p.is_file())  # encoder_adapter/ too
    print(f"wrote {dst} ({size / 2**20:.1f} MiB; {card['speed']['ms_per_tweet']} ms per tweet at {auto})")
    print(json.dumps({k: card[k]["overall"]["f1"] for k in ("dev", "test", "dev_fp32", "test_fp32")}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
