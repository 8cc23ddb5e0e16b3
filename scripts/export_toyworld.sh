#!/usr/bin/env bash
# The toy-world checkpoint the app offers (assets/itjner-lite-toyworld): generate, train (lite, frozen text encoder,
# no captions), store fp16. Reproduces the committed one.
# Overrides (for a quick check; the defaults make the committed checkpoint): PYTHON (default .venv/bin/python),
# TOY_RUNS (data and runs, default runs), TOY_OUT (default assets/itjner-lite-toyworld), TOY_SIZES (default
# 900,150,200), TOY_EPOCHS (default 6). Relative paths are from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHON="${PYTHON:-.venv/bin/python}" TOY_RUNS="${TOY_RUNS:-runs}"
export TOY_OUT="${TOY_OUT:-assets/itjner-lite-toyworld}" TOY_SIZES="${TOY_SIZES:-900,150,200}"
TOY_EPOCHS="${TOY_EPOCHS:-6}"
"$PYTHON" -m itjner toyworld generate --out "$TOY_RUNS/toyworld-data" --sizes "$TOY_SIZES" --seed 0
"$PYTHON" -m itjner toyworld experiment --data "$TOY_RUNS/toyworld-data" --out "$TOY_RUNS/toyworld" --variants full \
    --epochs "$TOY_EPOCHS"
"$PYTHON" - <<'PY'
import os

import torch
from itjner.checkpoints import load_card
from itjner.modeling_itjner import ITJNERModel
runs, out, sizes = os.environ["TOY_RUNS"], os.environ["TOY_OUT"], os.environ["TOY_SIZES"]
card = load_card(f"{runs}/toyworld/full")
card["data"] = f"toy world: itjner toyworld generate --sizes {sizes} --seed 0"
card["images"] = f"{runs}/toyworld-data/images (see scripts/export_toyworld.sh)"
card["toy"] = True
ITJNERModel.from_pretrained(f"{runs}/toyworld/full").save_pretrained(out, card=card, dtype=torch.float16)
print(f"wrote {out}")
PY
