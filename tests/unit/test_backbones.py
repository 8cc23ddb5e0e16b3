"""Backbones by name: the offline text-encoder aliases (the `base` preset's MPNet comes as a zip split over five
wheels), the image grid encoders (7x7 regions, row-major, pretrained), and the hub-only ones failing clearly."""
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from itjner import backbones
from itjner.backbones import BackboneUnavailable, load_image_backbone, load_text_encoder
from itjner.configuration_itjner import PRESETS, preset


def _split_zip(tmp_path: Path, files: dict[str, bytes], parts: int) -> list[Path]:
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w") as z:
        for name, data in files.items():
            z.writestr(f"all-mpnet-base-v2/{name}", data)
    blob = whole.read_bytes()
    size = -(-len(blob) // parts)
    paths = []
    for i in range(parts):
        p = tmp_path / f"m.zip.{i + 1:03d}"
        p.write_bytes(blob[i * size:(i + 1) * size])
        paths.append(p)
    return paths


def test_split_zip_parts_unpack_into_one_folder(tmp_path):
    files = {"config.json": b'{"model_type": "mpnet"}', "model.safetensors": bytes(range(256)) * 400}
    target = tmp_path / "cache" / "all-mpnet-base-v2"
    backbones._unpack_zip_parts(_split_zip(tmp_path, files, 5), target)
    assert {p.name for p in target.iterdir()} == set(files)
    assert (target / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert [p.name for p in target.parent.iterdir()] == ["all-mpnet-base-v2"]  # no temporary left behind


def test_mpnet_dir_unpacks_once_and_reuses_the_cache(tmp_path, monkeypatch):
    files = {"model.safetensors": b"weights"}
    parts = _split_zip(tmp_path, files, 2)
    calls = []
    monkeypatch.setenv("ITJNER_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setattr(backbones, "_mpnet_parts", lambda: calls.append(1) or parts)
    first, second = backbones.mpnet_dir(), backbones.mpnet_dir()
    assert first == second == str(tmp_path / "weights" / "all-mpnet-base-v2")
    assert len(calls) == 1


def test_missing_mpnet_wheels_say_how_to_install(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(backbones.BackboneUnavailable, match="requirements-base.txt"):
        backbones._mpnet_parts()


def test_base_preset_is_lite_with_the_mpnet_encoder():
    lite, base = PRESETS["lite"][0], PRESETS["base"][0]
    assert base.text_encoder == "mpnet-base" and base.hidden_size == 768
    assert (base.image_backbone, base.word_shape) == (lite.image_backbone, lite.word_shape)
    assert preset("lite")[1].crf_lr == preset("base")[1].crf_lr == 5e-2


def test_lite_preset_loads_offline_with_7x7_grid_features():
    cfg, _ = preset("lite")
    backbone = load_image_backbone(cfg.image_backbone)
    x = backbone.preprocess(Image.new("RGB", (320, 200), "white"))[None]
    feats = backbone.features(x)
    assert feats.shape == (1, 49, cfg.image_dim)
    encoder = load_text_encoder(cfg.text_encoder)
    assert encoder.config.hidden_size == cfg.hidden_size


def test_preprocess_resizes_to_the_backbone_square_and_normalises_per_channel():
    backbone = load_image_backbone("efficientnet-lite0")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 160, 3), dtype=np.uint8))
    x = backbone.preprocess(img)
    resized = np.asarray(img.resize((224, 224), Image.BICUBIC), dtype=np.float64) / 255
    mean, std = np.array(backbone.spec.mean), np.array(backbone.spec.std)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert np.allclose(x.permute(1, 2, 0).numpy(), (resized - mean) / std, atol=1e-6)
    gray = backbone.preprocess(img.convert("L"))  # odd modes go through RGB
    assert gray.shape == (3, 224, 224) and torch.equal(gray[0] * backbone.spec.std[0] + backbone.spec.mean[0],
                                                       gray[1] * backbone.spec.std[1] + backbone.spec.mean[1])


def test_lite_backbone_grid_is_row_major_and_pretrained():
    """A bright patch in grid cell (row 1, column 5) must change the features near region 12, not near its
    transpose (row 5, column 1)."""
    backbone = load_image_backbone("efficientnet-lite0")
    img = Image.new("RGB", (224, 224), "black")
    img.paste(Image.new("RGB", (32, 32), "white"), (5 * 32, 1 * 32))
    energy = backbone.features(backbone.preprocess(img)[None])[0].norm(dim=-1)
    base = backbone.features(backbone.preprocess(Image.new("RGB", (224, 224), "black"))[None])[0].norm(dim=-1)
    row, col = divmod(int((energy - base).abs().argmax()), 7)
    assert row <= 2 and col >= 4


def test_classifier_head_on_cached_features_matches_the_full_network():
    backbone = load_image_backbone("efficientnet-lite0")
    x = backbone.preprocess(Image.new("RGB", (300, 200), (30, 120, 200)))[None]
    with torch.inference_mode():
        full = backbone.net(x)  # the whole pretrained network, classifier included
    from_cache = backbone.classify_features(backbone.features(x).half())
    assert full.argmax() == from_cache.argmax()
    assert torch.allclose(full.softmax(-1), from_cache.softmax(-1), atol=2e-2)


def test_paper_preset_without_hub_fails_naming_the_backbone(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneUnavailable, match="albert-base-v2"):
        load_text_encoder("albert-base-v2")
    with pytest.raises(BackboneUnavailable, match="res2net101_26w_4s"):
        load_image_backbone("res2net101_26w_4s")


def test_paper_preset_random_init_builds_the_paper_sizes():
    cfg, _ = preset("paper")
    enc = load_text_encoder(cfg.text_encoder, random_init=True)
    assert (enc.config.hidden_size, enc.config.num_hidden_layers, enc.config.embedding_size) == (768, 12, 128)
    backbone = load_image_backbone(cfg.image_backbone, random_init=True)
    assert backbone.channels == 2048

