"""The embedded default checkpoint (assets/) loads offline and tags a simple tweet sensibly."""
import json

import pytest

from itjner.data import Tweet, tokenize
from itjner.checkpoints import DEFAULT_CHECKPOINT
from itjner.predict import Predictor


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
    assert "Trained without images" in readme and "itjner train --preset lite --data data/twitter2017" in readme
    size = sum(p.stat().st_size for p in DEFAULT_CHECKPOINT.iterdir())
    assert size < 60 * 1024 * 1024


def test_evaluating_the_stored_file_reproduces_the_card(predictor):
    from fixtures.paths import DATA
    from itjner.data import read_conll
    from itjner.train import evaluate_tweets

    card = json.loads((DEFAULT_CHECKPOINT / "card.json").read_text())
    tweets = read_conll((DATA / "twitter2017") / "test.txt")
    scores = evaluate_tweets(predictor, tweets, progress=False)
    for key in ("precision", "recall", "f1"):
        assert scores["overall"][key] == pytest.approx(card["test"]["overall"][key], abs=1e-9)


def test_bf16_on_cpu_keeps_the_default_checkpoint_s_tags(predictor):
    """The opt-in CPU bf16 path (predict --precision bf16) may move a tweet or two, not the scores."""
    from fixtures.paths import DATA
    from itjner.data import read_conll
    from itjner.metrics import entity_scores

    tweets = read_conll((DATA / "twitter2017") / "valid.txt")[:300]
    fast = Predictor(predictor.model, predictor.tokenizer, precision="bf16")
    exact, approx = predictor.predict(tweets), fast.predict(tweets)
    assert sum(a.tags != b.tags for a, b in zip(exact, approx)) <= 6
    gold = [t.tags for t in tweets]
    f1 = [entity_scores(gold, [p.tags for p in preds])["overall"]["f1"] for preds in (exact, approx)]
    assert abs(f1[0] - f1[1]) < 1.0


def test_toy_world_checkpoint_reads_the_image():
    """The shipped toy-world model types an ambiguous name from the image alone."""
    import io
    import random

    from itjner.toyworld import make_pair

    toy = DEFAULT_CHECKPOINT.parent / "itjner-lite-toyworld"
    predictor = Predictor.from_pretrained(toy)
    assert predictor.config.use_image and predictor.config.freeze_text_encoder
    rng = random.Random(123)
    pairs = [make_pair(rng, f"t{i}", related=True) for i in range(12)]
    blobs = []
    for p in pairs:
        buf = io.BytesIO()
        p.image.save(buf, format="JPEG", quality=95)
        blobs.append(buf.getvalue())
    preds = predictor.predict([p.tweet for p in pairs], images=blobs)
    correct = sum(pr.tags[p.name_index] == p.tweet.tags[p.name_index] for p, pr in zip(pairs, preds))
    assert correct >= 11
    blind = predictor.predict([p.tweet for p in pairs], images=[None] * len(pairs))
    assert sum(pr.tags[p.name_index] == p.tweet.tags[p.name_index] for p, pr in zip(pairs, blind)) <= 8
