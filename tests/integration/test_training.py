"""A short real training run on Twitter-2017 text (slow: it trains)."""
import json
import math

import pytest

from fixtures.paths import DATA
from itjner.configuration_itjner import preset

pytestmark = [pytest.mark.slow]


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

