#!/usr/bin/env bash
# The toy-world checkpoint the app offers (assets/itjner-lite-toyworld): generate, train (lite, frozen text encoder,
# no captions), store fp16. Reproduces the committed one.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/itjner toyworld generate --out runs/toyworld-data --sizes 900,150,200 --seed 0
.venv/bin/itjner toyworld experiment --data runs/toyworld-data --out runs/toyworld --variants full --epochs 6
.venv/bin/python - <<'PY'
import torch
from itjner.checkpoints import load_card
from itjner.modeling_itjner import ITJNERModel
card = load_card("runs/toyworld/full")
card["data"] = "toy world: itjner toyworld generate --sizes 900,150,200 --seed 0"
card["images"] = "runs/toyworld-data/images (see scripts/export_toyworld.sh)"
ITJNERModel.from_pretrained("runs/toyworld/full").save_pretrained("assets/itjner-lite-toyworld", card=card, dtype=torch.float16)
PY
