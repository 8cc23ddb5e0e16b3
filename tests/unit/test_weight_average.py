"""`train --ema DECAY`: dev is scored, and the checkpoint saved, with a moving average of the weights."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fixtures.paths import DATA


def test_the_average_follows_its_formula_and_applied_puts_the_raw_weights_back():
    from itjner.train import WeightAverage

    layer = torch.nn.Linear(3, 2)
    frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    layer.register_parameter("frozen", frozen)
    average = WeightAverage(layer, decay=0.9)
    expected = layer.weight.detach().clone()
    for step in range(1, 6):
        with torch.no_grad():
            layer.weight.add_(1.0)
        average.update()
        d = min(0.9, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * layer.weight.detach()
    raw = layer.weight.detach().clone()
    with average.applied():
        assert torch.allclose(layer.weight, expected)
        assert not torch.allclose(layer.weight, raw)
    assert torch.equal(layer.weight, raw)  # training goes on from the raw weights
    assert len(average.params) == 2  # weight and bias; the frozen parameter is not averaged


@pytest.mark.slow  # trains
def test_a_run_with_ema_saves_the_averaged_weights(tmp_path):
    from itjner.configuration_itjner import preset
    from itjner.modeling_itjner import ITJNERModel
    from itjner.train import train

    model_cfg, train_cfg = preset("tiny")
    model_cfg = model_cfg.with_ablation(text_only=True)
    for name, decay in (("raw", 0.0), ("ema", 0.99)):
        train(model_cfg, replace(train_cfg, epochs=1, batch_size=8, ema=decay), DATA / "twitter2017",
              tmp_path / name, random_init=True, limit=32, test=False, log=lambda *_: None)
    raw = ITJNERModel.from_pretrained(tmp_path / "raw").state_dict()
    ema = ITJNERModel.from_pretrained(tmp_path / "ema").state_dict()
    moved = [k for k in raw if raw[k].is_floating_point() and not torch.allclose(raw[k], ema[k])]
    assert moved, "the --ema checkpoint holds the raw weights"
    assert ITJNERModel.from_pretrained(tmp_path / "ema").config.preset == "tiny"
