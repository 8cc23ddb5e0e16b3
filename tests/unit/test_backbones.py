"""The offline text-encoder aliases: the `base` preset's MPNet comes as a zip split over five wheels."""
import zipfile
from pathlib import Path

import pytest

from itjner import backbones
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
