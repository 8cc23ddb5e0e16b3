"""Smoke tests for scripts/: each script runs as its users run it (a subprocess from the repository root) on tiny
inputs built here, and what it says it writes is checked. scripts/results_table.py has its own unit test."""
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fixtures.paths import DATA, REPO

pytestmark = [pytest.mark.slow]  # trains small models and runs EfficientNet-Lite0: about a minute in all


def run(args, tmp_path, **env) -> subprocess.CompletedProcess:
    """Run `args` from the repository root, offline, with the caches and temp files under tmp_path."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "ITJNER_CACHE": str(tmp_path / "cache"),
                "ITJNER_DATA_DIR": str(tmp_path / "itjner-data"), "TMPDIR": str(tmp_path / "tmp"), **env}
    proc = subprocess.run([str(a) for a in args], cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (f"{' '.join(map(str, args))} exited {proc.returncode}\n"
                                  f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


def safetensors_dtypes(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return {k: fh.get_tensor(k).dtype for k in fh.keys()}


# ------------------------------------------------------------------------------------- scripts/export_checkpoint.py
@pytest.fixture()
def small_twitter(tmp_path):
    """The first tweets of each Twitter-2017 split, as a dataset folder."""
    from itjner.data import read_conll, write_conll

    folder = tmp_path / "t17"
    folder.mkdir()
    for name, n in (("train.txt", 16), ("valid.txt", 16), ("test.txt", 16)):
        write_conll(read_conll(DATA / "twitter2017" / name)[:n], folder / name)
    return folder


def f1(predictor, path) -> float:
    from itjner.data import read_conll
    from itjner.train import evaluate_tweets

    return evaluate_tweets(predictor, read_conll(path), progress=False)["overall"]["f1"]


def test_export_checkpoint_stores_fp16_and_records_its_figures(tmp_path, small_twitter):
    from itjner.predict import Predictor

    src, dst = tmp_path / "ck", tmp_path / "ck-fp16"
    # --limit: the training card's dev figure is on the first 8 dev tweets; the export must measure the whole split
    run([sys.executable, "-m", "itjner", "train", "--preset", "tiny", "--data", small_twitter, "--limit", "8",
         "--epochs", "1", "--no-test", "--text-only", "--out", src], tmp_path)
    proc = run([sys.executable, "scripts/export_checkpoint.py", src, dst], tmp_path)

    lines = proc.stdout.strip().splitlines()
    assert re.fullmatch(r"dev: trained weights F1 [\d.]+ -> fp16 copy fp32 [\d.]+(, bf16 [\d.]+)?", lines[-4])
    assert re.fullmatch(r"test: trained weights F1 [\d.]+ -> fp16 copy fp32 [\d.]+(, bf16 [\d.]+)?", lines[-3])
    assert lines[-2].startswith(f"wrote {dst} (") and "ms per tweet at" in lines[-2]
    printed = json.loads(lines[-1])
    card = json.loads((dst / "card.json").read_text())
    assert card["stored_dtype"] == "float16" and card["speed"]["ms_per_tweet"] > 0
    assert {k: card[k]["overall"]["f1"] for k in ("dev", "test", "dev_fp32", "test_fp32")} == printed
    readme = (dst / "README.md").read_text()
    assert "| precision | dev F1 | test F1 |" in readme and "ms to tag one tweet" in readme
    assert {v for k, v in safetensors_dtypes(dst / "model.safetensors").items() if v.is_floating_point} \
        == {torch.float16}
    # the card's figures are what the stored file scores in each precision, and the original on the whole splits
    original = Predictor.from_pretrained(src)
    for precision, scores in card["precision_scores"].items():
        stored = Predictor.from_pretrained(dst, precision=precision)
        for key, split in (("dev", "valid.txt"), ("test", "test.txt")):
            assert scores[key] == pytest.approx(f1(stored, small_twitter / split))
    assert card["test"]["overall"]["f1"] == card["precision_scores"][card["precision"]]["test"]
    for key, split in (("dev", "valid.txt"), ("test", "test.txt")):
        assert card[f"{key}_fp32"]["overall"]["f1"] == pytest.approx(f1(original, small_twitter / split))


def test_export_checkpoint_keeps_a_lora_adapter_apart(tmp_path, small_twitter):
    from fixtures.encoders import tiny_encoder_dir
    from itjner.adapters import has_adapter
    from itjner.configuration_itjner import preset
    from itjner.modeling_itjner import ITJNERModel
    from itjner.predict import Predictor

    encoder = tiny_encoder_dir(tmp_path / "encoder")
    cfg, _ = preset("tiny")
    cfg = cfg.with_ablation(text_only=True)
    cfg.text_encoder, cfg.adapter = str(encoder), {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
    torch.manual_seed(0)
    src, dst = tmp_path / "ck", tmp_path / "ck-fp16"
    ITJNERModel.from_config(cfg).save_pretrained(src, card={"data": str(small_twitter), "dev": None, "test": None})

    proc = run([sys.executable, "scripts/export_checkpoint.py", src, dst], tmp_path)

    assert (dst / "encoder_adapter" / "adapter_model.safetensors").is_file()
    assert not any(k.startswith("text.encoder.") for k in safetensors_dtypes(dst / "model.safetensors"))
    assert has_adapter(ITJNERModel.from_pretrained(dst, merge=False).text.encoder)
    card = json.loads((dst / "card.json").read_text())
    assert card["stored_dtype"] == "float16"
    assert card["test"]["overall"]["f1"] == pytest.approx(f1(Predictor.from_pretrained(dst), small_twitter / "test.txt"))
    size = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    assert f"wrote {dst} ({size / 2**20:.1f} MiB;" in proc.stdout


# -------------------------------------------------------------------------------------- scripts/export_toyworld.sh
def test_export_toyworld_writes_a_toy_checkpoint_where_told(tmp_path):
    from itjner.checkpoints import is_toy
    from itjner.predict import Predictor

    shipped = sorted((p.name, p.stat().st_mtime_ns) for p in (REPO / "assets" / "itjner-lite-toyworld").iterdir())
    out = tmp_path / "toy-ck"
    proc = run(["bash", "scripts/export_toyworld.sh"], tmp_path, PYTHON=sys.executable, TOY_RUNS=str(tmp_path / "runs"),
               TOY_OUT=str(out), TOY_SIZES="12,6,6", TOY_EPOCHS="1")

    assert f"wrote {out}" in proc.stdout
    assert (tmp_path / "runs" / "toyworld-data" / "images").is_dir()
    card = json.loads((out / "card.json").read_text())
    assert card["data"] == "toy world: itjner toyworld generate --sizes 12,6,6 --seed 0"
    assert card["images"].startswith(f"{tmp_path / 'runs'}/toyworld-data/images") and is_toy(card) and card["toy"]
    dtypes = safetensors_dtypes(out / "model.safetensors")
    assert dtypes and not any(k.startswith("text.encoder.") for k in dtypes)  # the frozen encoder comes by name
    assert {v for v in dtypes.values() if v.is_floating_point} == {torch.float16}
    predictor = Predictor.from_pretrained(out)
    assert predictor.config.use_image and predictor.config.freeze_text_encoder
    # the committed checkpoint is untouched
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (REPO / "assets" / "itjner-lite-toyworld").iterdir()) == shipped


# ---------------------------------------------------------------------------------------- scripts/ship_captioner.py
COLOURS = {"red": (215, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 215)}


def flickr_like(folder: Path) -> Path:
    """A Flickr8k-shaped folder (captions.txt, images/, train/valid/test_images.txt) of 12 drawn shapes."""
    from PIL import Image, ImageDraw

    (folder / "images").mkdir(parents=True)
    rng, rows, names = random.Random(0), ["image,caption"], []
    for copy in range(2):
        for colour, rgb in COLOURS.items():
            for shape in ("circle", "square"):
                image = Image.new("RGB", (224, 224), (235, 235, 235))
                x, y = rng.randint(20, 150), rng.randint(20, 150)
                draw = ImageDraw.Draw(image)
                (draw.ellipse if shape == "circle" else draw.rectangle)((x, y, x + 50, y + 50), fill=rgb)
                name = f"{copy}-{colour}-{shape}.jpg"
                image.save(folder / "images" / name)
                names.append(name)
                rows += [f"{name},a {colour} {shape} on a grey background", f"{name},A {colour} {shape} ."]
    (folder / "captions.txt").write_text("\n".join(rows) + "\n")
    for split, chosen in (("train", names[:8]), ("valid", names[8:10]), ("test", names[10:])):
        (folder / f"{split}_images.txt").write_text("\n".join(chosen) + "\n")
    return folder


def test_ship_captioner_writes_a_checkpoint_with_its_card(tmp_path):
    from itjner.caption_metrics import METRICS
    from itjner.modeling_captioner import CaptionModel

    flickr, run_dir, out, cache = flickr_like(tmp_path / "flickr"), tmp_path / "cap-run", tmp_path / "cap", tmp_path / "features"
    run([sys.executable, "-m", "itjner", "caption", "train", "--captions", flickr / "captions.txt",
         "--images", flickr / "images", "--train-list", flickr / "train_images.txt",
         "--valid-list", flickr / "valid_images.txt", "--out", run_dir, "--cache-dir", cache, "--epochs", "2",
         "--min-count", "1", "--beam", "1", "--embed-dim", "16", "--hidden-dim", "32", "--attention-dim", "16",
         "--device", "cpu"], tmp_path)
    proc = run([sys.executable, "scripts/ship_captioner.py", run_dir, out, "--flickr", flickr, "--beam", "2",
                "--length-penalty", "0.5", "--no-repeat-ngram-size", "2", "--train-command", "itjner caption train X",
                "--cache-dir", cache], tmp_path)

    assert {"config.json", "vocab.json", "model.safetensors", "card.json", "README.md"} <= {p.name for p in out.iterdir()}
    model = CaptionModel.from_pretrained(out)
    assert (model.config.beam, model.config.length_penalty, model.config.no_repeat_ngram_size) == (2, 0.5, 2)
    card = json.loads((out / "card.json").read_text())
    assert card["data"]["split"] == {"train": 8, "valid": 2, "test": 2}
    assert card["decoding"] == {"beam": 2, "length_penalty": 0.5, "no_repeat_ngram_size": 2,
                                "never_emitted": ["<unk>", "<pad>", "<start>"]}
    assert card["train_command"] == "itjner caption train X"
    assert card["epochs_run"] == 2 and card["best_epoch"] in (1, 2)
    assert card["vocab_size"] == len(model.vocab)
    dtype = "float16" if all(v == torch.float16 for v in safetensors_dtypes(out / "model.safetensors")
                             .values() if v.is_floating_point) else "float32"
    assert card["weights_dtype"] == dtype
    for scores in (card["valid"], card["test"], *card["test_anchors"].values()):
        assert set(scores) == set(METRICS)
    assert f"wrote {out} (" in proc.stderr
    assert re.search(r"^test: BLEU-1 ", proc.stderr, re.M)
    readme = (out / "README.md").read_text()
    assert "| this captioner, valid (2 images) |" in readme and "| this captioner, test (2 images) |" in readme


# ----------------------------------------------------------------------------------------- scripts/toy_locality.py
def test_toy_locality_prints_both_figures(tmp_path):
    proc = run([sys.executable, "scripts/toy_locality.py", "--sizes", "30,15"], tmp_path)

    out = proc.stdout
    blank = re.search(r"blank background, 75 cues in interior cells: largest feature change in the cue's own cell "
                      r"([\d.]+)%, within its 3x3 neighbourhood ([\d.]+)%", out)
    assert blank, out
    assert float(blank[2]) >= 90.0  # docs/toyworld.md: 100% (the grid is local to a 3x3 block)
    assert "feature change map for an ORG emblem in cell 24 (row 3, col 3):" in out
    probe = re.search(r"linear probe on mean-pooled regions, two decoys per image: type accuracy ([\d.]+)% on (\d+) "
                      r"held-out pairs \(chance 33.3%\)", out)
    assert probe, out
    assert not list((tmp_path / "tmp").glob("toy-probe-*")), "the toy pairs it generated are left behind"
    assert 0 < int(probe[2]) <= 15 and 0.0 <= float(probe[1]) <= 100.0
