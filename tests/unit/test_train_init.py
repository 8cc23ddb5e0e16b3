"""`train` from an existing checkpoint, with pulled annotations added to a base split; dev must not be train."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fixtures.paths import DATA
from itjner.data import read_conll, write_conll


def _cfgs():
    from itjner.configuration_itjner import preset

    model_cfg, train_cfg = preset("tiny")
    return model_cfg.with_ablation(text_only=True), replace(train_cfg, epochs=1, batch_size=8)


@pytest.mark.slow  # trains
def test_a_pulled_file_alone_is_refused_as_its_own_dev_set(tmp_path):
    from itjner.train import train

    pulled = tmp_path / "pulled.txt"
    write_conll(read_conll(DATA / "twitter2017" / "valid.txt")[:8], pulled)
    with pytest.raises(ValueError, match="dev data .* is also training data"):
        train(*_cfgs(), pulled, tmp_path / "out", random_init=True)
    folder = tmp_path / "ds"  # pulled tweets that are also in the dev split: refused too
    folder.mkdir()
    write_conll(read_conll(DATA / "twitter2017" / "train.txt")[:8], folder / "train.txt")
    write_conll(read_conll(DATA / "twitter2017" / "valid.txt")[:8], folder / "valid.txt")
    with pytest.raises(ValueError, match="8 of 8 dev tweets"):
        train(*_cfgs(), folder, tmp_path / "out", random_init=True, add_train=[pulled])
    logs = []
    train(*_cfgs(), pulled, tmp_path / "out", random_init=True, test=False, allow_dev_is_train=True, log=logs.append)
    assert any(line.startswith("WARNING: THE DEV DATA") for line in logs)


@pytest.mark.slow  # trains
def test_fine_tunes_a_checkpoint_on_a_base_split_plus_the_pulled_file(tmp_path):
    import torch

    from itjner.modeling_itjner import ITJNERModel
    from itjner.train import Trainer, train

    model_cfg, train_cfg = _cfgs()
    torch.manual_seed(3)
    start = ITJNERModel.from_config(model_cfg, random_init=True)
    start.save_pretrained(tmp_path / "start")
    trainer = Trainer(model_cfg, train_cfg, tmp_path / "x", random_init=True, init_from=tmp_path / "start")
    for a, b in zip(start.state_dict().values(), trainer.model.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu())  # the weights are the checkpoint's, not fresh ones
    folder = tmp_path / "ds"
    folder.mkdir()
    write_conll(read_conll(DATA / "twitter2017" / "train.txt")[:16], folder / "train.txt")
    write_conll(read_conll(DATA / "twitter2017" / "valid.txt")[:8], folder / "valid.txt")
    pulled = tmp_path / "pulled.txt"
    write_conll(read_conll(DATA / "twitter2017" / "train.txt")[100:108], pulled)
    logs = []
    train(model_cfg, train_cfg, folder, tmp_path / "out", init_from=tmp_path / "start", add_train=[pulled],
          test=False, log=logs.append)
    assert any("on 24 tweets, dev 8" in line for line in logs)
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    assert card["init_from"] == str(tmp_path / "start") and card["add_train"] == [str(pulled)]
    assert card["train_tweets"] == 24 and any(f"+ 8 tweets from {pulled}" in line for line in logs)
    from itjner.train import load_splits

    train_tweets, _, _ = load_splits(folder, [pulled], limit=4, log=logs.append)  # a smoke test cuts every file
    assert len(train_tweets) == 8 and f"train: + 4 tweets from {pulled}" in logs
    readme = (tmp_path / "out" / "README.md").read_text()  # the model card says what data it saw
    assert f"more training tweets from `{pulled}`" in readme and "trained on 24 tweets in all" in readme
