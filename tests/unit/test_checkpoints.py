"""Checkpoint folders: save_pretrained / from_pretrained round trips, and what is not a checkpoint."""
import json

import pytest
import torch

from fixtures.photos import png_bytes
from itjner.data import Tweet
from itjner.modeling_itjner import ITJNERModel
from itjner.predict import Predictor


def test_save_load_round_trip_gives_identical_predictions(tmp_path, tiny_config, tiny_tokenizer):
    torch.manual_seed(0)
    model = ITJNERModel.from_config(tiny_config).eval()
    tweets = [Tweet("x", ["Kevin", "Durant", "in", "Oakland"]), Tweet("y", ["hello", "world"])]
    images = [png_bytes(), None]
    before = Predictor(model, tiny_tokenizer, caption_source="given").predict(
        tweets, images=images, given_captions=["a man with a ball", None], details=True)
    model.save_pretrained(tmp_path / "ckpt", card={"data": "unit test", "seed": 0})
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    assert "image_backbone" in json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert not any("net." in k for k in model.state_dict()), "frozen image backbone must not be stored"
    after = Predictor.from_pretrained(tmp_path / "ckpt", caption_source="given").predict(
        tweets, images=images, given_captions=["a man with a ball", None], details=True)
    for a, b in zip(before, after):
        assert a.tags == b.tags and a.score == pytest.approx(b.score, abs=1e-6)
        assert a.caption == b.caption
    assert before[0].image_problem is None and before[1].image_problem == "missing"
    assert (before[0].details["Q"] == after[0].details["Q"]).all()


def test_invalid_checkpoint_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an ITJNER checkpoint"):
        Predictor.from_pretrained(tmp_path)

