"""Tagging edge cases: tweets longer than the encoder's input are cut explicitly and their tail is tagged O."""
from itjner.data import Tweet
from itjner.modeling_itjner import ITJNERModel
from itjner.predict import Predictor
from itjner.tokenization import encode_words


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



def test_a_text_longer_than_the_encoder_input_is_tagged_whole_in_overlapping_windows(tiny_config, tiny_tokenizer):
    from itjner.tokenization import window_owners, word_windows

    tiny_config.max_length = 16
    words = ("Obama visits Paris and London with Angela Merkel on Monday " * 7).split()
    spans = word_windows(tiny_tokenizer, words, 16)
    assert spans[0][0] == 0 and spans[-1][1] == len(words) and len(spans) > 3
    assert all(nxt[0] < prev[1] for prev, nxt in zip(spans, spans[1:]))  # windows overlap: context at every cut
    assert all(encode_words(tiny_tokenizer, words[a:b], 16).truncated_words == 0 for a, b in spans)
    owners = window_owners(spans)
    assert [w for lo, hi in owners for w in range(lo, hi)] == list(range(len(words)))
    model = ITJNERModel.from_config(tiny_config.with_ablation(text_only=True)).eval()
    predictor = Predictor(model, tiny_tokenizer)
    pred = predictor.predict([Tweet("t", words)], images=[None])[0]
    assert len(pred.tags) == len(words) and pred.details is None
    for (a, b), (lo, hi) in zip(spans, owners):  # each word is tagged by the window that owns it
        alone = predictor.predict([Tweet("t", words[a:b])], images=[None])[0]
        assert pred.tags[lo:hi] == alone.tags[lo - a:hi - a]


def test_bf16_weights_cast_once_tag_exactly_as_autocast_and_fp32_comes_back_exact(tmp_path, tiny_config,
                                                                                  tiny_tokenizer):
    """A loaded checkpoint keeps its linear weights in bf16 while it runs bf16 (not cast again on every call):
    the same tags and confidences, to the bit, as autocast over fp32 weights; fp32 afterwards is fp32 again; a model
    that is not loaded for inference (training's) is never touched."""
    import torch

    torch.manual_seed(0)
    model = ITJNERModel.from_config(tiny_config.with_ablation(text_only=True)).eval()
    model.save_pretrained(tmp_path / "ckpt", card={"data": "unit test", "seed": 0})
    tweets = [Tweet("x", ["Kevin", "Durant", "joins", "the", "Warriors", "in", "Oakland"]), Tweet("y", ["hi"])]

    def run(predictor, precision):
        predictor.precision = precision
        return [(p.tags, p.score, [e.score for e in p.entities]) for p in
                predictor.predict(tweets, images=[None, None])]

    loaded = Predictor.from_pretrained(tmp_path / "ckpt", precision="bf16")
    reference = Predictor(ITJNERModel.from_pretrained(tmp_path / "ckpt"), tiny_tokenizer)  # autocast every call
    fp32 = run(reference, "fp32")
    assert run(loaded, "bf16") == run(reference, "bf16")
    linears = [m for m in loaded.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert {p.dtype for p in reference.model.parameters()} == {torch.float32}  # not loaded by from_pretrained
    assert run(loaded, "fp32") == fp32 and {p.dtype for p in loaded.model.parameters()} == {torch.float32}
