"""The embedded default checkpoint (assets/) loads offline and tags a simple tweet sensibly."""
import json

import pytest

from itjner.data import Tweet, tokenize
from itjner.predict import DEFAULT_CHECKPOINT, Predictor


@pytest.fixture(scope="module")
def predictor():
    assert (DEFAULT_CHECKPOINT / "model.safetensors").is_file(), "the default checkpoint must be committed"
    return Predictor.from_pretrained(DEFAULT_CHECKPOINT)


def test_default_checkpoint_tags_a_simple_tweet(predictor):
    tokens = tokenize("Kevin Durant joins the Golden State Warriors in Oakland")
    pred = predictor.predict([Tweet("demo", tokens)], images=[None])[0]
    found = {(e.type, " ".join(tokens[e.start:e.end])) for e in pred.entities}
    assert ("PER", "Kevin Durant") in found
    assert ("LOC", "Oakland") in found
    assert any(t == "ORG" and "Warriors" in s for t, s in found)
    assert all(0.0 < e.score <= 1.0 for e in pred.entities)


def test_default_checkpoint_card_says_what_it_saw(predictor):
    card = json.loads((DEFAULT_CHECKPOINT / "card.json").read_text())
    assert card["modalities"] == "text" and not predictor.config.use_image
    assert "twitter2017" in card["data"] and card["test"]["overall"]["f1"] > 80
    readme = (DEFAULT_CHECKPOINT / "README.md").read_text()
    assert "Trained without images" in readme and "python -m itjner" in readme
    size = sum(p.stat().st_size for p in DEFAULT_CHECKPOINT.iterdir())
    assert size < 60 * 1024 * 1024


def test_evaluating_the_stored_file_reproduces_the_card(predictor):
    from conftest import shared_data
    from itjner.data import read_conll
    from itjner.train import evaluate_tweets

    card = json.loads((DEFAULT_CHECKPOINT / "card.json").read_text())
    tweets = read_conll(shared_data("twitter2017") / "test.txt")
    scores = evaluate_tweets(predictor, tweets, progress=False)
    for key in ("precision", "recall", "f1"):
        assert scores["overall"][key] == pytest.approx(card["test"]["overall"][key], abs=1e-9)
