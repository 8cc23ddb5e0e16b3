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

