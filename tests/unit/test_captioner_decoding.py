"""Captioner decoding and layout: n-gram blocking (no_repeat_ngram_size) in greedy and beam search, the
configuration / tokenization / modeling split, old config.json files still loading, and the lstm source's
"likely poor" signal. Fast and offline (tiny random models; the shipped checkpoint on drawn photos)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "assets" / "captioner-flickr8k"


def repeated_ngrams(words: list, n: int) -> list[tuple]:
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return sorted({g for g in grams if grams.count(g) > 1})


# ------------------------------------------------------------------------------------------------ n-gram blocking
def test_banned_next_words_crafted():
    from itjner.modeling_captioner import banned_next_words

    seq = [5, 6, 7, 5, 6]
    assert banned_next_words(seq, 0) == set()
    assert banned_next_words(seq, 1) == {5, 6, 7}          # no word twice
    assert banned_next_words(seq, 2) == {7}                # "6 7" exists: after 6, 7 would repeat it
    assert banned_next_words(seq, 3) == {7}                # "5 6 7" exists, seq ends in "5 6"
    assert banned_next_words(seq, 4) == set()              # "7 5 6" has not been seen before
    assert banned_next_words([4, 4, 4], 2) == {4}
    assert banned_next_words([4], 3) == set()              # too short to complete a 3-gram


def looping_model(seed: int, max_len: int = 14):
    """A tiny random captioner rigged to loop: two words dominate every step and <end> is all but impossible."""
    from itjner.configuration_captioner import CaptionerConfig
    from itjner.modeling_captioner import CaptionModel
    from itjner.tokenization_captioner import Vocabulary

    torch.manual_seed(seed)
    vocab = Vocabulary(["a", "dog", "runs", "on", "grass", "man", "the", "park"])
    config = CaptionerConfig(feature_dim=16, embed_dim=8, hidden_dim=16, attention_dim=8, vocab_size=len(vocab),
                             max_len=max_len, no_repeat_ngram_size=0)
    model = CaptionModel(config, vocab).eval()
    with torch.no_grad():
        model.out.weight.mul_(0.3)
        model.out.bias.zero_()
        model.out.bias[vocab.stoi["a"]] = 6.0
        model.out.bias[vocab.stoi["dog"]] = 5.0
        model.out.bias[Vocabulary.end_id] = -8.0
    return model


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beam", [1, 3, 5])
def test_generate_never_repeats_an_ngram(seed, beam):
    model = looping_model(seed)
    feats = torch.randn(4, 49, 16)
    plain = model.generate(feats, beam=beam, no_repeat_ngram_size=0)
    assert all(repeated_ngrams(c.words, 2) for c in plain)  # unblocked, every caption loops
    for n in (1, 2, 3, 4):
        for caption in model.generate(feats, beam=beam, no_repeat_ngram_size=n):
            assert caption.words and not repeated_ngrams(caption.words, n), (n, caption.words)
            assert len(caption.attention) == len(caption.words)
            assert np.isfinite(caption.score) and caption.score <= 0
            assert not {"<unk>", "<pad>", "<start>", "<end>"} & set(caption.words)
    with_one = model.generate(feats, beam=beam, no_repeat_ngram_size=1)
    assert all(len(c.words) <= 8 for c in with_one)  # 8 words, each at most once: then only <end> is left


def test_blocking_defaults_to_the_config_and_greedy_matches_its_batch():
    model = looping_model(0)
    feats = torch.randn(3, 49, 16)
    model.config.no_repeat_ngram_size = 3
    default = [c.words for c in model.generate(feats, beam=1)]
    assert default == [c.words for c in model.generate(feats, beam=1, no_repeat_ngram_size=3)]
    assert default != [c.words for c in model.generate(feats, beam=1, no_repeat_ngram_size=0)]
    one_by_one = [model.generate(f, beam=1)[0].words for f in feats]  # batched greedy blocks per caption
    assert one_by_one == default


def free_model(seed: int, max_len: int = 12):
    """A tiny random captioner whose captions end at different lengths (no rigging)."""
    from itjner.configuration_captioner import CaptionerConfig
    from itjner.modeling_captioner import CaptionModel
    from itjner.tokenization_captioner import Vocabulary

    torch.manual_seed(seed)
    vocab = Vocabulary(["a", "dog", "runs", "on", "grass", "man", "the", "park", "red", "ball"])
    config = CaptionerConfig(feature_dim=16, embed_dim=8, hidden_dim=16, attention_dim=8, vocab_size=len(vocab),
                             max_len=max_len)
    model = CaptionModel(config, vocab).eval()
    with torch.no_grad():
        model.out.weight.mul_(6.0)  # peaked, varied distributions: hypotheses finish at different steps
        model.out.bias[Vocabulary.end_id] = 0.0
    return model


@pytest.mark.parametrize("beam,ngram,penalty", [(3, 2, 0.0), (5, 0, 0.0), (3, 2, 0.7), (2, 1, 0.0)])
def test_batched_beam_search_is_the_per_image_search(beam, ngram, penalty):
    """generate() decodes all images' beams together; each caption must be exactly the one a search of that image
    alone finds (words, score, attention), whichever step each image's search stops at."""
    lengths = set()
    for seed in range(4):
        model = free_model(seed)
        torch.manual_seed(seed)
        feats = torch.randn(7, 49, 16) * (1 + torch.arange(7.0)[:, None, None])
        together = model.generate(feats, beam=beam, no_repeat_ngram_size=ngram, length_penalty=penalty)
        alone = [model.beam_search(f, beam, model.config.max_len, penalty, ngram) for f in feats]
        lengths |= {len(c.words) for c in alone}
        for a, b in zip(alone, together):
            assert a.words == b.words
            assert a.score == pytest.approx(b.score, rel=1e-6, abs=1e-5)
            assert np.allclose(a.attention, b.attention, atol=1e-5)
    assert len(lengths) > 1  # the searches really stop at different steps


def test_batched_beam_search_with_the_shipped_captioner():
    from itjner.modeling_captioner import CaptionModel

    model = CaptionModel.from_pretrained(SHIPPED)
    torch.manual_seed(0)
    feats = torch.randn(6, 49, model.config.feature_dim).relu() * 2
    together = model.generate(feats)
    alone = [model.beam_search(f, model.config.beam, model.config.max_len, None, model.config.no_repeat_ngram_size)
             for f in feats]
    assert [c.words for c in together] == [c.words for c in alone]
    assert [c.score for c in together] == pytest.approx([c.score for c in alone], rel=1e-6, abs=1e-4)


def test_blocked_score_is_the_models_own_log_probability():
    """Blocking sets banned words to -inf after the softmax (as transformers): the chosen caption's score is the
    model's log-probability of it, recomputed here by teacher forcing."""
    from itjner.modeling_captioner import pad_captions

    model = looping_model(1)
    feats = torch.randn(49, 16)
    caption = model.generate(feats, beam=1, no_repeat_ngram_size=2)[0]
    ids = pad_captions([model.vocab.encode(" ".join(caption.words))])
    with torch.no_grad():
        logits, _ = model(feats[None], ids)
        logp = logits.float().clone()
        logp[:, :, [0, 1, 3]] = float("-inf")  # <pad>, <start>, <unk> never emitted
        logp[:, 0, model.vocab.end_id] = float("-inf")  # no empty caption
        logp = logp.log_softmax(-1).gather(2, ids[:, 1:, None])[0, :, 0]
    if len(caption.words) == model.config.max_len:  # out of room: <end> was forced (log 1 = 0)
        logp = logp[:-1]
    assert caption.score == pytest.approx(logp.sum().item(), abs=1e-4)


# --------------------------------------------------------------------------------------------- the module split
def test_split_modules_and_old_configs_load(tmp_path):
    import itjner.modeling_captioner as modeling
    from itjner.caption_metrics import normalise
    from itjner.configuration_captioner import CaptionerConfig
    from itjner.tokenization_captioner import Vocabulary, caption_tokenize

    assert modeling.CaptionerConfig is CaptionerConfig and modeling.Vocabulary is Vocabulary  # one class each
    assert not hasattr(modeling, "tokenize")  # the caption tokenizer says what it is: caption_tokenize
    assert caption_tokenize("A man's hat, on-stage.") == ["a", "man's", "hat", "on", "stage"]
    assert normalise("Two DOGS!") == "two dogs"
    model = looping_model(0)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["no_repeat_ngram_size"] == 0
    del config["no_repeat_ngram_size"]  # as written before the field existed
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = modeling.CaptionModel.from_pretrained(tmp_path)
    assert loaded.config.no_repeat_ngram_size == CaptionerConfig.no_repeat_ngram_size == 2
    assert loaded.vocab.itos == model.vocab.itos
    feats = torch.randn(2, 49, 16)
    assert [c.words for c in loaded.generate(feats, no_repeat_ngram_size=0)] == \
        [c.words for c in model.generate(feats)]


# ------------------------------------------------------------------------------ shipped checkpoint, likely_poor
def test_shipped_checkpoint_loads_captions_and_flags(one_thread):
    from itjner.captioning.sources import LIKELY_POOR_BELOW, LstmCaptionSource, make_caption_source
    from itjner.modeling_captioner import CaptionModel

    model = CaptionModel.from_pretrained(SHIPPED)
    card = json.loads((SHIPPED / "card.json").read_text(encoding="utf-8"))
    assert model.config.no_repeat_ngram_size == card["decoding"]["no_repeat_ngram_size"] == 2
    assert (model.config.beam, model.config.length_penalty) == (card["decoding"]["beam"],
                                                                 card["decoding"]["length_penalty"])
    source = make_caption_source("lstm:assets/captioner-flickr8k")
    assert isinstance(source, LstmCaptionSource)
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)) for _ in range(2)]
    results = source.caption(images=images + [None])
    for r in results[:2]:
        words = r.text.split()
        assert words and not repeated_ngrams(words, 2)
        assert set(r.details) == {"logprob", "logprob_per_token", "likely_poor"}
        assert isinstance(r.details["likely_poor"], bool)
        assert r.details["logprob_per_token"] == pytest.approx(r.details["logprob"] / (len(words) + 1), abs=1e-3)
        assert r.details["likely_poor"] == (r.details["logprob_per_token"] < LIKELY_POOR_BELOW)
    assert results[2].text == "" and results[2].details is None
    strict = LstmCaptionSource(SHIPPED, image_backbone=source.backbone, likely_poor_below=0.0)
    lax = LstmCaptionSource(SHIPPED, image_backbone=source.backbone, likely_poor_below=-1e9,
                            no_repeat_ngram_size=0)
    assert all(r.details["likely_poor"] for r in strict.caption(images=images))  # every log-prob is < 0
    assert not any(r.details["likely_poor"] for r in lax.caption(images=images))
