"""Checkpoints, presets, tokenisation edge cases, images, and a short real training run."""
import io
import json
import math

import pytest
import numpy as np
import torch
from PIL import Image

from fixtures.paths import DATA
from itjner.backbones import BackboneUnavailable, load_image_backbone, load_text_encoder
from itjner.configuration_itjner import preset
from itjner.data import Tweet
from itjner.images import FeatureStore, ImageError, decode_image
from itjner.modeling_itjner import ITJNERModel
from itjner.predict import Predictor
from itjner.tokenization import encode_words


def png_bytes(size=(64, 48), mode="RGB", color=(200, 30, 30)):
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 128).save(buf, format="PNG")
    return buf.getvalue()


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


def test_long_tweets_are_truncated_explicitly_and_odd_words_keep_a_slot(tiny_tokenizer):
    words = ["⚾", "️", "\u200b", "Paris"] + ["supercalifragilistic"] * 60
    enc = encode_words(tiny_tokenizer, words, max_length=64)
    assert len(enc.input_ids) <= 64
    assert enc.truncated_words > 0 and len(enc.word_index) + enc.truncated_words == len(words)
    assert enc.word_index[:4] == sorted(set(enc.word_index[:4]))  # every kept word has its own position


def test_predictor_tags_truncated_words_as_O(tiny_config, tiny_tokenizer):
    tiny_config.max_length = 16
    model = ITJNERModel.from_config(tiny_config).eval()
    tweet = Tweet("t", ["word"] * 40)
    pred = Predictor(model, tiny_tokenizer).predict([tweet], images=[None], details=True)[0]
    assert len(pred.tags) == 40 and pred.details["truncated_words"] > 0
    assert set(pred.tags[-pred.details["truncated_words"]:]) == {"O"}


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


def jpeg_bytes(size, seed=0):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 12, 16, generator=g)
    arr = torch.nn.functional.interpolate(small, size=(size[1], size[0]), mode="bilinear")[0].permute(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray((arr * 255).byte().numpy()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


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


def test_short_training_on_twitter2017_lowers_the_loss(tmp_path):
    from itjner.train import train

    model_cfg, train_cfg = preset("tiny")
    train_cfg.epochs, train_cfg.lr, train_cfg.head_lr = 3, 2e-3, 2e-3
    result = train(model_cfg.with_ablation(text_only=True), train_cfg, (DATA / "twitter2017"), tmp_path / "run",
                   limit=96, test=False, log=lambda *_: None)
    losses = [h["train_loss"] for h in result["history"]]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < 0.8 * losses[0]
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["modalities"] == "text" and card["seed"] == train_cfg.seed
    assert "Trained without images" in (tmp_path / "run" / "README.md").read_text()


@pytest.mark.parametrize("source", ["tags", "given", "lstm"])
def test_the_ner_model_reads_captions_from_every_source(tmp_path, tiny_config, tiny_tokenizer, source):
    from itjner.modeling_captioner import CaptionerConfig, CaptionModel, Vocabulary

    spec = "tags:0.01" if source == "tags" else source
    if source == "lstm":  # a captioner on the tiny backbone that has learnt one caption: enough to prove the wiring
        from itjner.modeling_captioner import pad_captions

        vocab = Vocabulary.build(["a red circle"])
        torch.manual_seed(0)
        cap = CaptionModel(CaptionerConfig(feature_dim=512, vocab_size=len(vocab), backbone="tiny-cnn", max_len=5,
                                           dropout=0.0), vocab)
        backbone = load_image_backbone("tiny-cnn")
        feats = backbone.features(backbone.preprocess(decode_image(png_bytes(size=(120, 90))))[None])
        opt = torch.optim.Adam(cap.parameters(), lr=1e-2)
        for _ in range(40):
            loss, _ = cap.loss(feats, pad_captions([vocab.encode("a red circle")]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        cap.eval().save_pretrained(tmp_path / "cap")
        spec = f"lstm:{tmp_path / 'cap'}"
    model = ITJNERModel.from_config(tiny_config).eval()
    predictor = Predictor(model, tiny_tokenizer, caption_source=spec)
    tweets = [Tweet("a", ["Zorvan", "on", "stage"]), Tweet("b", ["no", "image", "here"])]
    preds = predictor.predict(tweets, images=[png_bytes(size=(120, 90)), None],
                              given_captions=["a singer on a stage", None], details=True)
    assert preds[0].caption.strip(), f"{source} gave no caption"
    assert preds[1].caption == ""  # no image, no alt text: the caption path is masked
    if source == "lstm":
        attn = preds[0].details["caption_attention"]
        assert attn and all(len(a) == 49 for a in attn)
    if source == "tags":
        assert preds[0].caption.startswith("a photo of")
    # the caption really reaches the model: another caption changes the emissions of the captioned tweet
    if source == "given":
        other = predictor.predict(tweets[:1], images=[png_bytes(size=(120, 90))], given_captions=["a map of Paris"])
        first = predictor.predict(tweets[:1], images=[png_bytes(size=(120, 90))], given_captions=["a singer"])
        assert other[0].score != first[0].score
