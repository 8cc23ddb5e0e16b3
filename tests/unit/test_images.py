"""Decoding images users send: messages without Python internals, big phone photos accepted, a real bomb guard."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures.photos import jpeg_bytes, png_bytes
from itjner.backbones import load_image_backbone
from itjner.images import MAX_PIXELS, FeatureStore, ImageError, decode_image


def jpeg(size, colour=(90, 140, 200), quality=80) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.mark.parametrize("data", [b"not an image at all", b"\xff\xd8\xff not really a jpeg", jpeg((64, 48))[:300],
                                  b"\x89PNG\r\n\x1a\n" + b"\0" * 50])
def test_unreadable_images_are_described_without_python_internals(data):
    with pytest.raises(ImageError) as info:
        decode_image(data)
    message = str(info.value)
    assert message.startswith("not a readable image")
    for internal in ("<_io", "BytesIO", "object at", "0x", "Traceback"):
        assert internal not in message, message


def test_a_100_megapixel_phone_photo_is_decoded_reduced():
    data = jpeg((12000, 8400))  # 100.8 megapixels, as large phone cameras write them
    image = decode_image(data)
    w, h = image.size
    assert w * h <= MAX_PIXELS and abs(w / h - 12000 / 8400) < 0.01 and w >= 3000
    assert decode_image(data, min_side=224).size[1] >= 224  # the backbone path decodes smaller still


def test_what_cannot_be_reduced_is_refused_and_pillow_is_left_alone():
    limit = Image.MAX_IMAGE_PIXELS
    buf = io.BytesIO()
    Image.new("1", (9000, 5000)).save(buf, "PNG")  # 45 Mpx PNG: no reduced decoding for PNG
    with pytest.raises(ImageError, match="too large to decode safely"):
        decode_image(buf.getvalue())
    assert Image.MAX_IMAGE_PIXELS == limit  # the process-wide Pillow setting is not ours to change


@pytest.mark.parametrize("size", [(1, 1), (3, 200)])
def test_tiny_images_are_refused_as_too_small_to_read(size):
    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, "PNG")
    with pytest.raises(ImageError, match="too small to read"):
        decode_image(buf.getvalue())


@pytest.mark.parametrize("make,problem", [
    (lambda: b"not an image at all", "not a readable image"),
    (lambda: png_bytes()[:40], "not a readable image"),
])
def test_bad_images_raise_clear_errors(make, problem):
    with pytest.raises(ImageError, match=problem):
        decode_image(make())


def test_odd_image_modes_decode_to_rgb():
    for mode in ("L", "RGBA", "P", "I;16", "CMYK"):
        buf = io.BytesIO()
        Image.new(mode, (20, 10)).save(buf, format="TIFF" if mode in ("I;16", "CMYK") else "PNG")
        assert decode_image(buf.getvalue()).mode == "RGB"


def test_decompression_bomb_is_refused(monkeypatch):
    import itjner.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="too large"):
        decode_image(png_bytes(size=(100, 100)))


def test_feature_cache_runs_the_backbone_once_per_image(tmp_path):
    backbone = load_image_backbone("tiny-cnn")
    calls = []
    original = backbone.features
    backbone.features = lambda x: calls.append(len(x)) or original(x)
    store = FeatureStore(backbone, tmp_path)
    blob = png_bytes()
    f1, p1 = store.features_for_bytes([blob, None, b"junk"])
    assert f1[0].shape == (49, 512) and f1[1] is None and p1[1] == "missing" and p1[2].startswith("unreadable")
    fresh = FeatureStore(backbone, tmp_path)  # new process: reads the disk cache
    f2, _ = fresh.features_for_bytes([blob])
    assert calls == [1] and torch.equal(f1[0], f2[0])


def test_large_jpegs_decode_reduced_for_the_backbone_small_ones_exactly():
    big = decode_image(jpeg_bytes((1600, 1200)), min_side=224)
    assert big.size == (400, 300) and big.mode == "RGB"   # libjpeg's 1/4 scale: the smallest not under 224
    assert decode_image(jpeg_bytes((1600, 1200))).size == (1600, 1200)  # display paths get the full image
    small = jpeg_bytes((320, 240))
    assert np.array_equal(np.asarray(decode_image(small, 224)), np.asarray(decode_image(small)))


def test_feature_memory_is_bounded_and_evicted_features_come_back_from_disk(tmp_path):
    """A million-image predict run must not keep every feature in RAM; what is evicted is re-read, not recomputed."""
    backbone = load_image_backbone("tiny-cnn")
    calls = []
    original = backbone.features
    backbone.features = lambda x: calls.append(len(x)) or original(x)
    store = FeatureStore(backbone, tmp_path, max_in_memory=2)
    blobs = [png_bytes(color=(40 * i, 0, 0)) for i in range(5)]
    first, _ = store.features_for_bytes(blobs)
    assert len(store.memory) == 2 and sum(calls) == 5
    again, _ = store.features_for_bytes(blobs[:3])
    assert sum(calls) == 5 and len(store.memory) == 2
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not list(store.dir.glob("*.tmp"))

