"""How local are the frozen backbone's 7x7 region features on the toy world? (evidence for issue 4's heatmap check)

    .venv/bin/python scripts/toy_locality.py            # lite backbone (EfficientNet-Lite0)
    .venv/bin/python scripts/toy_locality.py --sizes 30,15   # a quick check: fewer probe pairs (default 600,300)

1. One cue on a blank background, in many cells: which region's features change most (‖f - f_blank‖)? If the grid
   were sharply local that would be the cue's own cell; the script counts own cell, 3x3 neighbourhood, and prints a map.
2. A linear probe for the cue type on the MEAN of the 49 region features (no attention at all), on toy pairs with two
   decoys (all three types in every image, the subject framed): if pooling decodes the type, a model has no pressure
   to make its attention peak on the cue.
"""
import argparse
import os
import random
import tempfile
from pathlib import Path

from itjner import runtime

runtime.prepare()  # before torch loads: passive OpenMP waiting
import torch  # noqa: E402
from PIL import Image  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from itjner.backbones import load_image_backbone  # noqa: E402
from itjner.images import FeatureStore  # noqa: E402
from itjner.toyworld import CUE_TYPES, GRID, SIZE, _draw_cue, cells_touch, generate, load_meta  # noqa: E402


@torch.inference_mode()
def blank_background(backbone) -> None:
    blank = Image.new("RGB", (SIZE, SIZE), (175, 175, 175))
    base = backbone.features(backbone.preprocess(blank)[None])[0]
    cells = [c for c in range(GRID * GRID) if 0 < c // GRID < GRID - 1 and 0 < c % GRID < GRID - 1]
    own = close = 0
    for cue in CUE_TYPES:
        for cell in cells:
            img = blank.copy()
            _draw_cue(img, cue, cell)
            change = (backbone.features(backbone.preprocess(img)[None])[0] - base).norm(dim=1)
            own += int(change.argmax()) == cell
            close += cells_touch(int(change.argmax()), cell)
    n = len(CUE_TYPES) * len(cells)
    print(f"blank background, {n} cues in interior cells: largest feature change in the cue's own cell "
          f"{100 * own / n:.1f}%, within its 3x3 neighbourhood {100 * close / n:.1f}%")
    img = blank.copy()
    _draw_cue(img, "ORG", 24)
    change = (backbone.features(backbone.preprocess(img)[None])[0] - base).norm(dim=1)
    print("feature change map for an ORG emblem in cell 24 (row 3, col 3):")
    print(change.view(GRID, GRID).round().int())


def pooled_probe(backbone, train: int = 600, test: int = 300) -> None:
    with tempfile.TemporaryDirectory(prefix="toy-probe-") as folder:  # the toy pairs and their features
        _probe(backbone, generate(folder, sizes=(train, 10, test), seed=0, decoys=2))


def _probe(backbone, data) -> None:
    store = FeatureStore(backbone, Path(data) / "cache")

    def pooled(split):
        meta = [m for m in load_meta(data, split) if m["related"]]
        feats, _ = store.features_for_ids(Path(data) / "images", [m["image_id"] for m in meta])
        return torch.stack([f.float().mean(0) for f in feats]), torch.tensor([CUE_TYPES.index(m["cue_type"]) for m in meta])

    (x, y), (xt, yt) = pooled("train"), pooled("test")
    mu, sd = x.mean(0), x.std(0) + 1e-5
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], len(CUE_TYPES))
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(probe((x - mu) / sd), y).backward()
        opt.step()
    acc = (probe((xt - mu) / sd).argmax(1) == yt).float().mean().item()
    print(f"linear probe on mean-pooled regions, two decoys per image: type accuracy {100 * acc:.1f}% "
          f"on {len(yt)} held-out pairs (chance 33.3%)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="600,300", help="train,test toy pairs of the linear probe")
    sizes = [int(n) for n in parser.parse_args().sizes.split(",")]
    random.seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    bb = load_image_backbone("efficientnet-lite0")
    blank_background(bb)
    pooled_probe(bb, *sizes)
