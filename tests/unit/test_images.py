"""Decoding images users send: messages without Python internals, big phone photos accepted, a real bomb guard."""
import io

import pytest
from PIL import Image

from itjner.images import MAX_PIXELS, ImageError, decode_image


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
