"""Speed and memory of ITJNER inference and training, beside the sum of its parts measured in the same run.

    .venv/bin/python bench/bench_inference.py --preset lite            # real pip-shipped weights
    .venv/bin/python bench/bench_inference.py --preset paper --random-init   # the paper's sizes, random weights

Reports p50/p95 latency of one tweet + fresh image through the Predictor, next to the text encoder alone and the
image backbone alone (so the overhead ratio is visible); batch throughput with cached image features and with fresh
images; a training step; peak RSS. Not a test: numbers depend on the machine (printed with them).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from itjner import runtime

runtime.prepare()  # before torch loads: passive OpenMP waiting
import torch  # noqa: E402
from PIL import Image  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from itjner.backbones import load_benchmark_tokenizer, load_image_backbone, load_text_encoder, load_tokenizer  # noqa: E402
from itjner.configuration_itjner import preset  # noqa: E402
from itjner.data import Tweet, read_conll, tokenize  # noqa: E402
from itjner.batching import collate  # noqa: E402
from itjner.modeling_itjner import ITJNERModel  # noqa: E402
from itjner.predict import Predictor  # noqa: E402

CAPTION = "a basketball player on a court"
TWEET = "RT @nba : Kevin Durant joins the Golden State Warriors in Oakland after nine seasons with the Thunder"


def image_bytes(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A JPEG of noise (small) or, for photo sizes, a smooth random image (noise would make a 5 MB file)."""
    g = torch.Generator().manual_seed(seed)
    w, h = size
    if w * h <= 320 * 240:
        arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8)
    else:
        small = torch.rand(1, 3, h // 32, w // 32, generator=g)
        arr = (torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear")[0].permute(1, 2, 0) * 255).byte()
    buf = io.BytesIO()
    Image.fromarray(arr.numpy()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Time several functions round-robin, so drift in machine load hits each of them alike."""
    for fn in fns.values():
        fn()  # warm-up
    out = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t)
    return out


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="lite", choices=["lite", "paper", "tiny"])
    ap.add_argument("--random-init", action="store_true")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--tweets", default=str(Path(__file__).resolve().parents[2] / "shared/data/twitter2017/test.txt"))
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    cfg, train_cfg = preset(args.preset)
    cfg.caption_source = "given"  # captions are benchmarked by the caption CLI; keep the NER path measurable
    tokenizer = load_benchmark_tokenizer(cfg.text_encoder) if args.random_init else load_tokenizer(cfg.text_encoder)
    model = ITJNERModel(cfg, load_text_encoder(cfg.text_encoder, random_init=args.random_init)).eval()
    # a fresh feature cache: every "fresh" image below really goes through the backbone
    predictor = Predictor(model, tokenizer, f"bench-{args.preset}", cache_dir=tempfile.mkdtemp(prefix="itjner-bench-"))
    predictor.inputs._image_backbone = load_image_backbone(cfg.image_backbone, random_init=args.random_init)
    backbone = predictor.inputs.image_backbone
    tokens = tokenize(TWEET)
    enc = tokenizer(" ".join(tokens), return_tensors="pt")
    cap = tokenizer(CAPTION, return_tensors="pt")

    res = {"preset": args.preset, "random_init": args.random_init, "machine": machine()}
    pix = backbone.preprocess(Image.open(io.BytesIO(image_bytes(0))).convert("RGB"))[None]
    fresh_one = iter([image_bytes(1 + i) for i in range(args.repeats + 1)])  # encoded before the clock starts

    @torch.inference_mode()
    def text_part():  # the text encoder: tweet and caption, in the one batched call the model makes
        model.text.encode((enc["input_ids"], enc["attention_mask"]), (cap["input_ids"], cap["attention_mask"]))

    @torch.inference_mode()
    def image_part():  # the image backbone on one preprocessed image
        backbone.features(pix)

    def whole():  # bytes in, entities out: decode, cache, tokenise, encoders, fusion, CRF
        predictor.predict([Tweet("x", tokens)], images=[next(fresh_one)], given_captions=[CAPTION])

    times = interleaved({"text": text_part, "image": image_part, "whole": whole}, args.repeats)
    text_t, image_t, full_t = times["text"], times["image"], times["whole"]
    res["one_tweet_image_ms"] = {"p50": pct(full_t, .5), "p95": pct(full_t, .95)}
    res["text_encoder_tweet_and_caption_ms_p50"] = pct(text_t, .5)
    res["image_backbone_ms_p50"] = pct(image_t, .5)
    res["overhead_ratio_p50"] = pct(full_t, .5) / (pct(text_t, .5) + pct(image_t, .5))

    tweets = read_conll(args.tweets) if Path(args.tweets).is_file() else [Tweet(str(i), tokens) for i in range(700)]
    blobs = [image_bytes(10_000 + i % 200) for i in range(len(tweets))]
    predictor.inputs.image_inputs(blobs)  # fill the cache
    captions = [CAPTION] * len(tweets)  # every tweet captioned: the slow case (no caption skips the caption path)
    for name, given in (("batch_cached_tweets_per_s", captions), ("batch_cached_no_caption_tweets_per_s", None)):
        t = time.perf_counter()
        predictor.predict(tweets, images=blobs, batch_size=64, given_captions=given)
        res[name] = len(tweets) / (time.perf_counter() - t)
    fresh = [image_bytes(50_000 + i) for i in range(64)]
    t = time.perf_counter()
    predictor.predict(tweets[:64], images=fresh, batch_size=64, given_captions=captions[:64])
    res["batch_fresh_images_tweets_per_s"] = 64 / (time.perf_counter() - t)
    photos = [image_bytes(70_000 + i, (1600, 1200)) for i in range(32)]  # phone-photo size
    t = time.perf_counter()
    predictor.predict(tweets[:32], images=photos, batch_size=64, given_captions=captions[:32])
    res["batch_fresh_1600x1200_photos_tweets_per_s"] = 32 / (time.perf_counter() - t)

    res["train_step_ms_p50"] = train_step_ms(model, predictor, tweets, train_cfg.batch_size, args.repeats)
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


def train_step_ms(model, predictor, tweets, batch_size: int, repeats: int) -> float:
    sample = tweets[:batch_size]
    blobs = [image_bytes(10_000 + i) for i in range(len(sample))]
    examples, *_ = predictor.inputs.prepare(sample, blobs)
    batch = collate(examples, model.config)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()

    def step():
        loss = model(batch, labels=batch["labels"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    times = timed(step, max(5, repeats // 3))
    model.eval()
    return pct(times, .5)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, " \
           f"{torch.get_num_threads()} threads, {'CUDA' if torch.cuda.is_available() else 'CPU only'}"


if __name__ == "__main__":
    main()
