import itertools
from dataclasses import replace

import pytest
import torch

from fixtures.photos import png_bytes
from itjner.backbones import load_image_backbone
from itjner.data import Tweet
from itjner.batching import build_examples, collate
from itjner.images import decode_image
from itjner.predict import Predictor
from itjner.modeling_crf import CRFDecoder
from itjner.modeling_itjner import ITJNERModel

TWEETS = [
    Tweet("a", ["Kevin", "Durant", "joins", "the", "Golden", "State", "Warriors"], ["B-PER", "I-PER", "O", "O", "B-ORG", "I-ORG", "I-ORG"]),
    Tweet("b", ["RT", "@user", ":", "in", "Oakland", "today", "⚾", "️"], ["O", "O", "O", "O", "B-LOC", "O", "O", "O"]),
    Tweet("c", ["Hello"], ["O"]),
]


def make_batch(cfg, tokenizer, image=(True, True, False), caption=("a stage", "", "a dog on grass"), seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(49, cfg.image_dim, generator=g) if has else None for has in image]
    examples = build_examples(TWEETS, tokenizer, cfg, feats, list(caption))
    return collate(examples, cfg)


def model_for(cfg):
    torch.manual_seed(0)
    return ITJNERModel.from_config(cfg).eval()


def test_shapes_masks_and_attention_maps(tiny_config, tiny_tokenizer):
    model = model_for(tiny_config)
    batch = make_batch(tiny_config, tiny_tokenizer)
    out = model(batch, labels=batch["labels"], output_attentions=True)
    assert out.emissions.shape == (3, 8, 9)
    assert out.word_mask.sum(1).tolist() == [7, 8, 1]
    assert torch.isfinite(out.loss)
    lt = batch["input_ids"].shape[1]
    heads = tiny_config.num_heads
    words = batch["word_index"].shape[1]
    assert out.attentions["Q"].shape == (3, heads, words, 49)
    assert out.attentions["Z"].shape == (3, heads, 49, lt)
    assert out.attentions["H"].shape == (3, heads, words, 49)
    assert out.gate.shape == (3, words, tiny_config.hidden_size)
    q = out.attentions["Q"]
    assert torch.allclose(q.sum(-1), torch.ones_like(q.sum(-1)), atol=1e-5)
    assert torch.isfinite(out.emissions).all()


def test_word_rows_only_equal_every_row_then_gathered(tiny_config, tiny_tokenizer):
    """H and Q run on the words' query rows alone; that must equal running them on every sub-token and picking the
    words' rows afterwards (the maths the paper writes)."""
    model = model_for(tiny_config)
    batch = make_batch(tiny_config, tiny_tokenizer)
    every = dict(batch)
    n = batch["input_ids"].shape[1]
    every["word_index"] = torch.arange(n).expand(3, n)
    every["word_mask"] = torch.ones(3, n, dtype=torch.bool)
    with torch.no_grad():
        words, all_rows = model(batch, output_attentions=True), model(every, output_attentions=True)
    index = batch["word_index"]
    picked = all_rows.emissions.gather(1, index[..., None].expand(-1, -1, all_rows.emissions.shape[-1]))
    assert torch.allclose(words.emissions, picked, atol=1e-5)
    q_rows = all_rows.attentions["Q"].gather(2, index[:, None, :, None].expand(-1, model.config.num_heads, -1, 49))
    assert torch.allclose(words.attentions["Q"], q_rows, atol=1e-6)


def test_one_shared_or_separate_encoder_calls_and_skipped_captions_give_the_same_output(tiny_config, tiny_tokenizer,
                                                                                     monkeypatch):
    import itjner.modeling_itjner as modeling

    model = model_for(tiny_config)
    batch = make_batch(tiny_config, tiny_tokenizer)
    runs = []
    for limit in (10_000, -1):  # always share one call / never share
        monkeypatch.setattr(modeling, "MAX_SHARED_CALL_PADDING", limit)
        with torch.no_grad():
            runs.append(model(batch).emissions)
    assert torch.allclose(runs[0], runs[1], atol=1e-5)
    # no tweet captioned: the caption path is skipped, and nothing changes (P = R for such tweets anyway)
    bare = make_batch(tiny_config, tiny_tokenizer, caption=("", "", ""))
    no_caption_config = tiny_config.with_ablation(no_caption=True)
    without = ITJNERModel(no_caption_config, model.text.encoder).eval()
    without.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        assert torch.allclose(model(bare).emissions, without(bare).emissions, atol=1e-5)


def test_fused_attention_kernel_gives_the_same_tags_as_the_drawn_weights(tiny_config, tiny_tokenizer):
    """Plain tagging takes torch's fused attention kernel; asking for the maps takes the explicit softmax. A tweet
    with no image (every region key masked) must come out the same, finite, on both."""
    model = model_for(tiny_config)
    batch = make_batch(tiny_config, tiny_tokenizer)
    with torch.no_grad():
        fused, drawn = model(batch), model(batch, output_attentions=True)
    assert fused.attentions is None and drawn.attentions["Q"] is not None
    assert torch.isfinite(fused.emissions).all()
    assert torch.allclose(fused.emissions, drawn.emissions, atol=1e-5)
    assert model.decode(fused) == model.decode(drawn)


def test_every_parameter_receives_gradient(tiny_config, tiny_tokenizer):
    model = model_for(tiny_config).train()
    batch = make_batch(tiny_config, tiny_tokenizer)
    model(batch, labels=batch["labels"]).loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # pooler-free encoder: only embedding rows of unused token ids may be zero, never whole tensors
    assert dead == []


def _emissions(model, batch):
    with torch.no_grad():
        return model(batch).emissions


def test_missing_image_and_caption_are_masked_not_fed(tiny_config, tiny_tokenizer):
    model = model_for(tiny_config)
    a = make_batch(tiny_config, tiny_tokenizer)
    b = dict(a)
    b["image_feats"] = a["image_feats"].clone()
    b["image_feats"][2] = 1000.0  # tweet c has no image: its features must not matter
    b["caption_ids"] = a["caption_ids"].clone()
    b["caption_ids"][1] = 1037  # tweet b has no caption: its ids must not matter
    ea, eb = _emissions(model, a), _emissions(model, b)
    assert torch.allclose(ea[1:], eb[1:], atol=1e-5)
    # ...while a present image does matter
    c = dict(a)
    c["image_feats"] = a["image_feats"].clone()
    c["image_feats"][0] += 5.0
    assert not torch.allclose(_emissions(model, c)[0], ea[0], atol=1e-4)


@pytest.mark.parametrize("switch,gone", [
    ("no_caption", ["caption.", "interaction.caption_guided."]),
    ("no_gate", ["interaction.text_guided.gate."]),
    ("no_image_text", ["interaction.image_guided."]),
    ("text_only", ["image.", "caption.", "interaction.", "aux_decoder."]),
])
def test_ablation_switch_removes_its_path(tiny_config, tiny_tokenizer, switch, gone):
    full = model_for(tiny_config)
    cfg = tiny_config.with_ablation(**{switch: True})
    ablated = model_for(cfg)
    names = [n for n, _ in ablated.named_parameters()]
    for prefix in gone:
        assert any(n.startswith(prefix) for n, _ in full.named_parameters())
        assert not any(n.startswith(prefix) for n in names), f"{switch} left {prefix} parameters"
    batch = make_batch(cfg, tiny_tokenizer)
    out = ablated(batch, labels=batch["labels"], output_attentions=True)
    out.loss.backward()
    assert all(p.grad is not None for p in ablated.parameters()), "an ablated model has unused parameters"
    if switch == "no_gate":
        assert out.gate is None
    if switch == "no_image_text":
        assert "Z" not in out.attentions and "H" not in out.attentions and "Q" in out.attentions
    if switch in ("no_caption", "text_only"):
        assert "P" not in out.attentions
        other = make_batch(cfg, tiny_tokenizer, caption=("a cat", "a tree", "a man"))
        assert torch.allclose(_emissions(ablated.eval(), batch), _emissions(ablated, other), atol=1e-5)
    if switch == "text_only":
        other = make_batch(cfg, tiny_tokenizer, seed=5)
        assert torch.allclose(_emissions(ablated.eval(), batch), _emissions(ablated, other), atol=1e-5)


def test_fusion_ffn_width_is_a_config_field_and_old_checkpoints_keep_four(tiny_config, tmp_path):
    from itjner.configuration_itjner import ITJNERConfig, preset

    d = tiny_config.hidden_size
    narrow = model_for(replace(tiny_config, fusion_ffn_mult=1))
    widths = {name: mod.ffn[0].out_features for name, mod in narrow.named_modules() if hasattr(mod, "ffn")}
    assert widths.pop("text.text_self_attention") == 4 * d  # the text path (shared with text-only models) keeps 4
    assert set(widths) == {"image.region_self_attention", "caption.caption_self_attention",
                           "interaction.caption_guided.block", "interaction.image_guided.region_block",
                           "interaction.image_guided.text_block", "interaction.text_guided.word_block"}
    assert set(widths.values()) == {d}
    narrow.save_pretrained(tmp_path / "narrow")
    assert ITJNERModel.from_pretrained(tmp_path / "narrow").interaction.text_guided.word_block.ffn[0].out_features == d
    old = tiny_config.to_dict()
    del old["fusion_ffn_mult"]  # a config.json written before the field existed
    assert ITJNERConfig.from_dict(old).fusion_ffn_mult == 4
    assert preset("lite")[0].fusion_ffn_mult == 1 and preset("paper")[0].fusion_ffn_mult == 4


def test_caption_query_modes_both_give_text_length(tiny_config, tiny_tokenizer):
    for mode in ("text", "caption"):
        cfg = replace(tiny_config, caption_query=mode)
        model = model_for(cfg)
        batch = make_batch(cfg, tiny_tokenizer)
        out = model(batch, output_attentions=True)
        assert out.attentions["P"].shape[2] == (batch["input_ids"].shape[1] if mode == "text" else batch["input_ids"].shape[1])
        assert torch.isfinite(out.emissions).all()


def _brute_force(decoder, emissions):
    crf = decoder.crf
    n, c = emissions.shape
    scores = {}
    for path in itertools.product(range(c), repeat=n):
        s = crf.start_transitions[path[0]] + emissions[0, path[0]] + crf.end_transitions[path[-1]]
        for i in range(1, n):
            s = s + crf.transitions[path[i - 1], path[i]] + emissions[i, path[i]]
        scores[path] = s
    return scores


def random_crf(labels: int, seed: int) -> CRFDecoder:
    torch.manual_seed(seed)
    dec = CRFDecoder(4, labels)
    with torch.no_grad():
        for p in dec.crf.parameters():
            p.normal_()
    return dec


def test_crf_viterbi_and_marginals_equal_brute_force():
    dec = random_crf(3, seed=3)
    emissions = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]).bool()
    paths = dec.decode(emissions, mask)
    marg = dec.marginals(emissions, mask)
    for b, length in enumerate([4, 3]):
        scores = _brute_force(dec, emissions[b, :length])
        best = max(scores, key=lambda k: scores[k])
        assert tuple(paths[b]) == best
        log_z = torch.logsumexp(torch.stack(list(scores.values())), 0)
        for i in range(length):
            for c in range(3):
                p = sum((s - log_z).exp() for k, s in scores.items() if k[i] == c)
                assert marg[b, i, c].item() == pytest.approx(p.item(), abs=1e-5)
        assert marg[b, length:].abs().sum() == 0
        nll = dec.nll(emissions[b:b + 1, :length], torch.tensor([best]), mask[b:b + 1, :length])
        assert nll.item() == pytest.approx((log_z - scores[best]).item(), abs=1e-4)


def test_crf_numpy_inference_matches_pytorch_crf_on_a_ragged_batch():
    dec = random_crf(9, seed=5)
    lengths = torch.randint(1, 30, (16,))
    mask = torch.arange(30)[None] < lengths[:, None]
    emissions = torch.randn(16, 30, 9) * 3
    assert dec.decode(emissions, mask) == dec.crf.decode(emissions, mask=mask)
    marg = dec.marginals(emissions, mask)
    assert torch.allclose(marg.sum(-1), mask.float(), atol=1e-5)


def test_subtoken_char_ids_give_every_piece_its_word_with_case_kept(tiny_tokenizer):
    from itjner.tokenization import CHAR_VOCAB, char_ids, encode_words, subtoken_char_ids

    words = ["Durant", "unbelievably", "⚾"]
    enc = encode_words(tiny_tokenizer, words, 64)
    rows = subtoken_char_ids(words, enc.word_index, len(enc.input_ids))
    assert len(rows) == len(enc.input_ids) and rows[0] == [] and rows[-1] == []
    for i, word in enumerate(words):
        end = enc.word_index[i + 1] if i + 1 < len(words) else len(enc.input_ids) - 1
        assert all(rows[p] == char_ids(word) for p in range(enc.word_index[i], end))
    assert char_ids("Durant") != char_ids("durant")
    assert char_ids("⚾") == [CHAR_VOCAB - 1] and len(char_ids("x" * 100)) == 20


def test_char_cnn_sees_case_that_the_uncased_encoder_cannot(tiny_config, tiny_tokenizer, tmp_path):
    """With the word-shape embedding off, "Apple" and "apple" are the same to the uncased encoder; the character CNN
    tells them apart, survives save/load, and a tweet's output does not depend on the padding of its batch."""
    def emissions(model, cfg, tweets):
        with torch.no_grad():
            return model(collate(build_examples(tweets, tiny_tokenizer, cfg), cfg)).emissions

    upper, lower = Tweet("u", ["Apple", "stock", "rises"]), Tweet("l", ["apple", "stock", "rises"])
    long = Tweet("x", ["a", "much", "longer", "tweet", "with", "Extraordinarily", "long", "words"])
    plain = replace(tiny_config, word_shape=False, use_image=False, use_caption=False)
    model = model_for(plain)
    assert torch.allclose(emissions(model, plain, [upper]), emissions(model, plain, [lower]))
    cfg = replace(plain, char_cnn=16)
    model = model_for(cfg)
    assert not torch.allclose(emissions(model, cfg, [upper]), emissions(model, cfg, [lower]))
    alone = emissions(model, cfg, [upper])[0]
    padded = emissions(model, cfg, [upper, long])[0, :3]
    assert torch.allclose(alone, padded, atol=1e-5)
    model.save_pretrained(tmp_path / "ckpt")
    again = ITJNERModel.from_pretrained(tmp_path / "ckpt")
    assert again.config.char_cnn == 16
    assert torch.allclose(emissions(again, cfg, [upper]), alone, atol=1e-6)


@pytest.mark.parametrize("source", ["tags", "given", "lstm"])
def test_the_ner_model_reads_captions_from_every_source(tmp_path, tiny_config, tiny_tokenizer, source):
    from itjner.configuration_captioner import CaptionerConfig
    from itjner.modeling_captioner import CaptionModel
    from itjner.tokenization_captioner import Vocabulary

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

