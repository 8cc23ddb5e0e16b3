"""The CPU seconds the app's own work costs for one burst of N requests, stage by stage, in this process alone.

    python bench/app_cpu_budget.py [--checkpoint DIR] [--photos 20] [--rounds 3] [--threads N]

The load test (bench/load_test_app.py) measures the whole app against a no-op Gradio app (bench/gradio_floor.py).
This script measures the part the floor does not have, with no web server and no clients competing for the cores:
what `PredictService` and the Predict tab's handler do for N requests that arrive together, each with a tweet of
its own and a photo no request sent before (the load test's photos). Stages, in the order the app runs them:

- reading the uploads (decode, display copy, sha256), once per request in the handler;
- the NER model, one micro-batch of N tweets with details (attention maps), as `MicroBatcher` runs it;
- captioning the N photos (the backbone's region features, then one beam search over all of them), as the
  micro-batch's `after` hook runs it;
- the caption panel's heatmap and JPEG, once per request in the handler.

Prints the CPU seconds (all threads of this process) and wall seconds of each stage, the minimum over --rounds.
On a 2-core machine the load test's burst is bound by CPU: a stage's CPU seconds are what it adds to the burst.
Not a timed test.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from itjner import runtime

runtime.prepare()  # before torch loads: passive OpenMP waiting, as the app
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from load_test_app import images, tweets  # noqa: E402


def timed(fn) -> tuple[object, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def one_round(service, n: int, tag: str) -> tuple[dict[str, tuple[float, float]], int]:
    from itjner.app.service import read_image_file, tokens_from_text
    from itjner.app.tab_predict import PREDICT_OUTPUTS, caption_panel
    from itjner.data import Tweet

    predictor = service.predictor()
    files = images(n, new=tag)
    texts = [f"{t} , {tag}" for t in tweets(n)]
    stages: dict[str, tuple[float, float]] = {}
    uploads, *stages["read the uploads"] = timed(lambda: [read_image_file(f) for f in files])
    batch = [Tweet("budget", tokens_from_text(t)) for t in texts]
    preds, *stages["NER model (one micro-batch)"] = timed(lambda: predictor.predict(
        batch, images=[img.usable for img in uploads], given_captions=[None] * n, details=True,
        digests=[img.digest for img in uploads]))
    wanted = [img for pred, img in zip(preds, uploads) if service.photo_captioner.wanted(pred, img)]
    _, *stages["caption the photos (features + beam search)"] = timed(
        lambda: service.photo_captioner.caption_batch(predictor, wanted))

    widgets = {name: name for name in PREDICT_OUTPUTS}  # the handler's own panel code, keyed by output name

    def caption_panels():
        for pred, img in zip(preds, uploads):
            caption_panel(widgets, service.photo_captioner.for_prediction(pred, predictor, img), img.image)

    _, *stages["caption heatmaps + JPEG"] = timed(caption_panels)
    return stages, len(wanted)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="model folder (default: the app's default checkpoint)")
    p.add_argument("--photos", type=int, default=20, help="requests in the burst, each with a new photo")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, as the app)")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    runtime.prepare(args.threads)
    runtime.quiet_transformers()
    from itjner.app.service import PredictService
    from itjner.checkpoints import default_checkpoint

    checkpoint = args.checkpoint or str(default_checkpoint()[0])
    with tempfile.TemporaryDirectory() as cache:
        service = PredictService(checkpoint, "cpu", cache_dir=Path(cache))
        service.warm_up()
        rounds, captioned = zip(*[one_round(service, args.photos, f"budget{r}") for r in range(args.rounds)])
    import torch

    best = {stage: {"cpu_s": min(r[stage][0] for r in rounds), "wall_s": min(r[stage][1] for r in rounds)}
            for stage in rounds[0]}
    total = sum(row["cpu_s"] for row in best.values())
    print(f"{args.photos} requests with new photos ({min(captioned)} captioned), {Path(checkpoint).name}, "
          f"{torch.get_num_threads()} torch thread(s), best of {args.rounds}:")
    for stage, row in best.items():
        print(f"  {stage:46s} CPU {row['cpu_s']:.2f} s   wall {row['wall_s']:.2f} s")
    print(f"  {'all of the app’s own work':46s} CPU {total:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": checkpoint, "photos": args.photos,
                                               "threads": torch.get_num_threads(), "stages": best,
                                               "captioned": min(captioned), "total_cpu_s": total}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
