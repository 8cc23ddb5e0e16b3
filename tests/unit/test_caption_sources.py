"""Caption sources behind one spec string: tags (real EfficientNet-Lite0 classifier), given text, a trained LSTM
captioner checkpoint, transformers models (offline: the error, and a tiny random BLIP folder)."""
from __future__ import annotations

import io
import time

import pytest
import torch
from PIL import Image, ImageDraw

from itjner.backbones import imagenet_labels, load_image_backbone
from itjner.captioning.data import CaptionPair
from itjner.captioning.sources import (CaptionResult, CaptionSourceUnavailable, GivenCaptionSource, TagsCaptionSource,
                                    make_caption_source, short_label, tags_text)
from itjner.captioning.training import TrainOptions, train_captioner
from itjner.images import FeatureStore


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/test_captioner.py: immune to a busy second core
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lite():
    return load_image_backbone("efficientnet-lite0")


def rings() -> Image.Image:
    """Concentric red and white rings (Lite0: "maze" / "coil", each ~0.5)."""
    image = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(image)
    for i in range(12):
        draw.ellipse((12 + i * 8, 12 + i * 8, 212 - i * 8, 212 - i * 8), fill="red" if i % 2 == 0 else "white")
    return image


def curtain() -> Image.Image:
    """Dark red vertical folds (Lite0: "theater curtain", ~0.44)."""
    image = Image.new("RGB", (224, 224), (200, 20, 30))
    draw = ImageDraw.Draw(image)
    for x in range(0, 224, 14):
        draw.line((x, 0, x, 224), fill=(120, 0, 10), width=5)
    return image


def shape(colour, box, kind="circle") -> Image.Image:
    image = Image.new("RGB", (224, 224), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    (draw.ellipse if kind == "circle" else draw.rectangle)(box, fill=colour)
    return image


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------------ tags
def test_tags_caption_is_confident_imagenet_labels(lite):
    source = make_caption_source("tags:0.2:3", image_backbone=lite)
    assert isinstance(source, TagsCaptionSource) and source.backbone is lite  # reused, not loaded twice
    names = {short_label(label) for label in imagenet_labels()}
    probs = lite.classify_features(lite.features(lite.preprocess(rings())[None])).softmax(-1)[0]
    result, stage, missing = source.caption(images=[rings(), curtain(), None])
    labels = result.details["labels"]
    assert 1 <= len(labels) <= 3 and result.text == tags_text([name for name, _ in labels])
    assert result.text.startswith("a photo of a") and result.attention is None
    for name, p in labels:
        assert name in names and p >= 0.2
    expected = [(short_label(imagenet_labels()[i]), p) for p, i in zip(*probs.topk(5)) if p >= 0.2]
    assert [n for n, _ in labels] == [n for n, _ in expected]
    assert [p for _, p in labels] == pytest.approx([float(p) for _, p in expected], abs=1e-3)
    assert "theater curtain" in stage.text
    assert missing.text == "" and missing.details is None
    print(f"tags: {result.text!r}; {stage.text!r}")


def test_tags_threshold_and_max_labels(lite):
    strict = make_caption_source("tags:0.99", image_backbone=lite).caption(images=[rings()])[0]
    assert strict.text == "" and strict.details["labels"] == []  # nothing confident enough: nothing written
    one = make_caption_source("tags:0.01:1", image_backbone=lite).caption(images=[rings()])[0]
    assert len(one.details["labels"]) == 1 and "," not in one.text
    assert short_label("theater curtain, theatre curtain, stage curtain") == "theater curtain"
    assert tags_text(["envelope"]) == "a photo of an envelope" and tags_text([]) == ""
    with pytest.raises(ValueError, match="tags"):
        make_caption_source("tags:high")


def test_tags_from_cached_features_equal_pixels(lite, tmp_path):
    source = TagsCaptionSource(0.05, 3, image_backbone=lite)
    store = FeatureStore(lite, tmp_path)
    images = [rings(), curtain()]
    feats, _ = store.features_for_bytes([jpeg(img) for img in images])  # float16 on disk, as the NER model uses
    from_pixels = source.probabilities(images=[Image.open(io.BytesIO(jpeg(img))) for img in images])
    from_features = source.probabilities(features=feats)
    for a, b in zip(from_pixels, from_features):
        assert torch.allclose(a, b, atol=2e-3) and a.argmax() == b.argmax()
    with pytest.raises(ValueError, match="efficientnet-lite0 features"):
        source.caption(features=[torch.zeros(49, 2048)])
    # cost per image on this CPU: from pixels (backbone forward) vs from cached features (pooled classifier only)
    image = curtain()
    source.caption(images=[image])
    start = time.perf_counter()
    for _ in range(10):
        source.caption(images=[image])
    per_pixels = (time.perf_counter() - start) / 10
    start = time.perf_counter()
    for _ in range(10):
        source.caption(features=feats[:1])
    per_features = (time.perf_counter() - start) / 10
    print(f"tags cost per image (1 thread): {per_pixels * 1000:.1f} ms from pixels, "
          f"{per_features * 1000:.2f} ms from cached features")
    assert per_features < per_pixels


# ----------------------------------------------------------------------------------------------------------- given
def test_given_alt_text_and_jsonl(tmp_path):
    source = make_caption_source("given")
    assert isinstance(source, GivenCaptionSource) and not source.reads_images
    out = source.caption(images=[None, shape("red", (0, 0, 50, 50))], given=["  Fans at  the\nstadium ", None])
    assert [r.text for r in out] == ["Fans at the stadium", ""]  # text kept without image; none given -> ""
    path = tmp_path / "alt.jsonl"
    path.write_text('{"image_id": "17", "caption": "a stage"}\n\n{"image_id": 18, "caption": "a dog"}\n')
    source = make_caption_source(f"given:{path}")
    out = source.caption(image_ids=["17", "18", "19"], given=[None, "my own words", None])
    assert [r.text for r in out] == ["a stage", "my own words", ""]
    path.write_text('{"image_id": "17", "caption": "a stage"}\n{"id": "18"}\n')
    with pytest.raises(ValueError, match="alt.jsonl:2"):
        make_caption_source(f"given:{path}")


# ------------------------------------------------------------------------------------------------------------ lstm
@pytest.fixture(scope="module")
def lstm_checkpoint(lite, tmp_path_factory):
    """A tiny captioner that memorises four drawn scenes (seconds on CPU), saved like the CLI saves it."""
    scenes = {"a red circle at the top left": shape((215, 40, 40), (10, 10, 70, 70)),
              "a blue square at the bottom right": shape((40, 70, 215), (150, 150, 214, 214), "square"),
              "a green circle in the middle": shape((40, 160, 60), (80, 80, 144, 144)),
              "a red square at the top right": shape((215, 40, 40), (150, 10, 214, 70), "square")}
    feats = lite.features(torch.stack([lite.preprocess(img) for img in scenes.values()]))
    features = {caption: f for caption, f in zip(scenes, feats)}
    pairs = [CaptionPair(caption, caption) for caption in scenes]
    out = tmp_path_factory.mktemp("lstm")
    options = TrainOptions(epochs=80, batch_size=4, lr=3e-3, val_fraction=0.0, min_count=1, beam=2, progress=False)
    train_captioner(pairs, features, out, options, backbone="efficientnet-lite0", embed_dim=32, hidden_dim=64,
                    attention_dim=32, dropout=0.0)
    return out, scenes


def test_lstm_source_captions_images_and_features(lite, lstm_checkpoint, tmp_path):
    out, scenes = lstm_checkpoint
    source = make_caption_source(f"lstm:{out}", image_backbone=lite)
    assert source.backbone is lite and source.feature_backbone == "efficientnet-lite0"
    images = list(scenes.values())
    results = source.caption(images=images + [None])
    assert [r.text for r in results] == list(scenes) + [""]
    for r in results[:-1]:
        assert len(r.attention) == len(r.text.split()) and all(len(a) == 49 for a in r.attention)
        assert r.details["logprob"] <= 0
        assert r.details["likely_poor"] is False  # memorised captions: near-certain words
        assert r.details["logprob_per_token"] == pytest.approx(r.details["logprob"] / (len(r.text.split()) + 1),
                                                               abs=1e-3)
    assert results[-1].attention is None
    store = FeatureStore(lite, tmp_path)
    feats, _ = store.features_for_bytes([None] + [jpeg(img) for img in images])
    assert [r.text for r in source.caption(features=feats)] == [""] + list(scenes)
    with pytest.raises(ValueError, match="1280-d"):
        source.caption(features=[torch.zeros(49, 2048)])


def test_lstm_bad_checkpoint(tmp_path):
    with pytest.raises(CaptionSourceUnavailable, match="not a captioner checkpoint"):
        make_caption_source(f"lstm:{tmp_path / 'nothing'}")


# -------------------------------------------------------------------------------------------------- transformers
@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_hf_missing_weights_say_what_to_do(offline, tmp_path):
    for model_id in (str(tmp_path / "no-such-blip"), "Salesforce/blip-image-captioning-base"):
        with pytest.raises(CaptionSourceUnavailable) as info:
            make_caption_source(f"hf:{model_id}")
        message = str(info.value)
        assert model_id in message and f"hf download {model_id}" in message and "local folder" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptionSourceUnavailable, match="folder exists but does not hold"):
        make_caption_source(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="unknown caption source"):
        make_caption_source("blip")


def test_hf_local_folder_runs(offline, tmp_path):
    """The real loading and generation code on a tiny random BLIP saved to a folder (text is noise)."""
    from transformers import AutoTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    from itjner.backbones import minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config = BlipConfig(text_config=dict(vocab_size=tokenizer.vocab_size, encoder_hidden_size=32,
                                         bos_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                                         pad_token_id=tokenizer.pad_token_id, **small),
                        vision_config=dict(image_size=32, patch_size=16, **small), projection_dim=32)
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(tmp_path / "blip")
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(tmp_path / "blip")
    source = make_caption_source(f"hf:{tmp_path / 'blip'}")
    text, missing = source.caption(images=[shape("red", (0, 0, 90, 90)).resize((64, 48)), None])
    assert isinstance(text, CaptionResult) and text.text.strip() and missing.text == ""

