"""Speed and memory of ITJNER inference and training, beside the sum of its parts measured in the same run.

    .venv/bin/python bench/bench_inference.py --preset lite                       # real pip-shipped weights
    .venv/bin/python bench/bench_inference.py --checkpoint assets/itjner-base-twitter2017 --app-path
    .venv/bin/python bench/bench_inference.py --preset base                       # MPNet + LoRA, merged as shipped
    .venv/bin/python bench/bench_inference.py --preset paper --random-init        # the paper's sizes, random weights

For each precision (fp32, and bf16 autocast where the device computes bf16; `--precision` to choose): p50/p95 of one
tweet through the Predictor (with a fresh image when the model reads images), next to the text encoder alone and the
image backbone alone (so the overhead is visible); batch throughput with cached image features; with `--app-path`,
one request through the app's PredictService (details for the heatmaps, the photo's caption; the example photo's
features and caption cached as a user re-asking would have them). Once: load time, a training step (presets), peak
RSS. Not a test: numbers depend on the machine (printed with them).
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

from itjner.backbones import load_benchmark_tokenizer, load_image_backbone, load_tokenizer  # noqa: E402
from itjner.batching import collate  # noqa: E402
from itjner.configuration_itjner import PRESETS, preset  # noqa: E402
from itjner.data import Tweet, read_conll, tokenize  # noqa: E402
from itjner.modeling_itjner import ITJNERModel  # noqa: E402
from itjner.predict import InferenceWeights, Predictor, cpu_has_bf16  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
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


def build(args) -> tuple[Predictor, ITJNERModel | None, float]:
    """(a predictor as inference runs it, the model to time a training step on (presets only), load seconds)."""
    started = time.perf_counter()
    cache = tempfile.mkdtemp(prefix="itjner-bench-")  # a fresh feature cache: "fresh" images really run the CNN
    if args.checkpoint:
        predictor = Predictor.from_pretrained(args.checkpoint, cache_dir=cache)
        return predictor, None, time.perf_counter() - started
    cfg, _ = preset(args.preset)
    cfg.caption_source = "given"  # captions are benchmarked by the caption CLI; keep the NER path measurable
    tokenizer = load_benchmark_tokenizer(cfg.text_encoder) if args.random_init else load_tokenizer(cfg.text_encoder)
    trainable = ITJNERModel.from_config(cfg, random_init=args.random_init)
    model = ITJNERModel.from_config(cfg, random_init=args.random_init).eval()
    if cfg.adapter:  # inference runs a checkpoint's adapter merged into the encoder (from_pretrained does it)
        model.text.encoder = model.text.encoder.merge_and_unload()
    InferenceWeights.register(model)  # as from_pretrained does: bf16 rows run on weights cast once
    backbone = load_image_backbone(cfg.image_backbone, random_init=args.random_init)
    predictor = Predictor(model, tokenizer, f"bench-{args.preset}", cache_dir=cache, image_backbone=backbone)
    return predictor, trainable, time.perf_counter() - started


def per_precision(predictor: Predictor, precision: str, tweets: list[Tweet], repeats: int, seed: int) -> dict:
    """One tweet, the parts, a batch: the Predictor at one precision (`seed`: fresh images no other run used)."""
    from itjner.predict import autocast

    p = predictor
    p.precision = precision
    model, tokenizer, config = p.model, p.tokenizer, p.config
    reads_images = config.multimodal
    tokens = tokenize(TWEET)
    enc = tokenizer(" ".join(tokens), return_tensors="pt")
    cap = tokenizer(CAPTION, return_tensors="pt")
    fresh = iter([image_bytes(seed + i) for i in range(repeats + 2)])  # encoded before the clock starts
    backbone = p.inputs.image_backbone if reads_images else None
    pix = backbone.preprocess(Image.open(io.BytesIO(image_bytes(0))).convert("RGB"))[None] if backbone else None

    @torch.inference_mode()
    def text_part():  # the text encoder: the tweet (and caption, in the one batched call the model makes)
        with autocast(p.device, precision):
            if config.use_caption:
                model.text.encode((enc["input_ids"], enc["attention_mask"]), (cap["input_ids"], cap["attention_mask"]))
            else:
                model.text.encode((enc["input_ids"], enc["attention_mask"]))

    def image_part():  # the image backbone on one preprocessed image
        backbone.features(pix)

    def whole():  # bytes in, entities out: decode, cache, tokenise, encoders, fusion, CRF
        p.predict([Tweet("x", tokens)], images=[next(fresh) if reads_images else None],
                  given_captions=[CAPTION] if config.use_caption else None)

    parts = {"text": text_part, "whole": whole} | ({"image": image_part} if backbone else {})
    times = interleaved(parts, repeats)
    row = {"one_tweet_ms": {"p50": pct(times["whole"], .5), "p95": pct(times["whole"], .95)},
           "text_encoder_ms_p50": pct(times["text"], .5)}
    if backbone:
        row["image_backbone_ms_p50"] = pct(times["image"], .5)
    row["overhead_ratio_p50"] = row["one_tweet_ms"]["p50"] / (row["text_encoder_ms_p50"] +
                                                             row.get("image_backbone_ms_p50", 0.0))
    blobs = [image_bytes(10_000 + i % 200) for i in range(len(tweets))] if reads_images else [None] * len(tweets)
    p.predict(tweets[:64], images=blobs[:64])  # warm-up (and the cache for the first images)
    if reads_images:
        p.image_features(blobs)  # every image's features cached: the batch row times the model
    t = time.perf_counter()
    p.predict(tweets, images=blobs, batch_size=64)
    row["batch_tweets_per_s"] = len(tweets) / (time.perf_counter() - t)
    return row


def app_path_ms(folder: str, precision: str, repeats: int) -> dict:
    """One request through the app's service (what a click costs before Gradio): p50/p95 in ms."""
    from itjner.app.service import PredictService, read_image_file

    service = PredictService(folder, caption_source=None, cache_dir=tempfile.mkdtemp(prefix="itjner-bench-app-"))
    predictor = service.predictor()
    predictor.precision = precision
    image = read_image_file(REPO / "examples" / "stadium.jpg")
    tokens = tokenize(TWEET)
    times = []
    for i in range(repeats + 1):  # a new tweet each time: the recent-answers cache never answers
        t = time.perf_counter()
        service.predict_tokens(tokens + [f"#{i}"], image)
        times.append(time.perf_counter() - t)
    times = times[1:]
    return {"p50": pct(times, .5), "p95": pct(times, .95)}


def train_step_ms(model: ITJNERModel, tokenizer, tweets: list[Tweet], batch_size: int, precision: str,
                  repeats: int) -> float:
    from itjner.batching import build_examples
    from itjner.predict import autocast

    sample = [t for t in tweets if t.tags is not None][:batch_size]
    batch = collate(build_examples(sample, tokenizer, model.config), model.config)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    device = next(model.parameters()).device

    def step():
        with autocast(device, precision):
            loss = model(batch, labels=batch["labels"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(max(3, repeats // 5)):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    model.eval()
    return pct(times, .5)


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {'CUDA' if torch.cuda.is_available() else 'CPU only'}, "
            f"bf16 {'native' if cpu_has_bf16() else 'emulated'} on the CPU")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="lite", choices=sorted(PRESETS))
    ap.add_argument("--checkpoint", help="time this saved model (its adapter merged, as the app runs it)")
    ap.add_argument("--random-init", action="store_true")
    ap.add_argument("--precision", help="comma-separated: fp32,bf16 (default: both where bf16 is native, else fp32)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=320, help="tweets in the batch-throughput row")
    ap.add_argument("--tweets", default=str(REPO / "data" / "twitter2017" / "test.txt"))
    ap.add_argument("--app-path", action="store_true", help="also time one request through the app's service")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    predictor, trainable, load_s = build(args)
    native = cpu_has_bf16() or torch.cuda.is_available()
    precisions = args.precision.split(",") if args.precision else (["fp32", "bf16"] if native else ["fp32"])
    tweets = read_conll(args.tweets)[:args.batch] if Path(args.tweets).is_file() else \
        [Tweet(str(i), tokenize(TWEET)) for i in range(args.batch)]
    res = {"model": args.checkpoint or args.preset, "random_init": args.random_init, "machine": machine(),
           "load_s": load_s, "reads": predictor.config.modalities()}
    for k, precision in enumerate(precisions):
        res[precision] = per_precision(predictor, precision, tweets, args.repeats, seed=1 + 1000 * k)
        if args.app_path and args.checkpoint:
            res[precision]["app_path_ms"] = app_path_ms(args.checkpoint, precision, args.repeats)
    if trainable is not None:
        _, train_cfg = preset(args.preset)
        res["train_step_ms_p50"] = train_step_ms(trainable, predictor.tokenizer, tweets, train_cfg.batch_size,
                                                 train_cfg.precision, args.repeats)
        res["train_precision"] = train_cfg.precision
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
