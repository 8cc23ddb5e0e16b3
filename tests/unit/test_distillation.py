"""Distillation: a teacher's CRF marginals as soft targets, against the student's own differentiable marginals."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from fixtures.paths import DATA
from itjner.data import read_conll, write_conll
from itjner.distillation import soft_targets
from test_model import random_crf


def test_torch_marginals_equal_the_inference_ones_on_a_ragged_batch():
    dec = random_crf(9, seed=7)
    lengths = torch.tensor([1, 5, 12, 12, 3])
    mask = torch.arange(12)[None] < lengths[:, None]
    emissions = torch.randn(5, 12, 9) * 2
    log_p = dec.log_marginals(emissions, mask)
    assert torch.allclose(log_p.exp() * mask[..., None], dec.marginals(emissions, mask), atol=1e-5)


def test_soft_target_loss_is_minimal_at_the_teachers_marginals_and_trains_towards_them():
    dec = random_crf(5, seed=1)
    mask = torch.ones(2, 6, dtype=torch.bool)
    teacher = dec.marginals(torch.randn(2, 6, 5) * 2, mask)
    emissions = torch.zeros(2, 6, 5, requires_grad=True)
    first = dec.soft_target_loss(emissions, mask, teacher).item()
    opt = torch.optim.Adam([emissions], lr=0.1)
    for _ in range(400):
        opt.zero_grad()
        dec.soft_target_loss(emissions, mask, teacher).backward()
        opt.step()
    student = dec.marginals(emissions.detach(), mask)
    assert dec.soft_target_loss(emissions, mask, teacher).item() < first
    assert (student - teacher).abs().max() < 0.02


def test_soft_targets_are_the_teacher_where_it_saw_the_word_and_gold_after():
    teacher = np.full((2, 3), 1 / 3, dtype=np.float32)  # the teacher cut the tweet after two words
    out = soft_targets(teacher, [0, 1, 2, 1], 3)
    assert out.shape == (4, 3)
    assert np.allclose(out[:2], 1 / 3)
    assert out[2].tolist() == [0, 0, 1] and out[3].tolist() == [0, 1, 0]


@pytest.mark.slow  # trains
def test_training_with_a_teacher_computes_its_marginals_once_and_records_it(tmp_path, monkeypatch):
    from itjner import distillation
    from itjner.configuration_itjner import preset
    from itjner.train import train

    monkeypatch.setenv("ITJNER_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "ds"
    data.mkdir()
    for split, name in (("train", "train.txt"), ("valid", "valid.txt")):
        write_conll(read_conll(DATA / "twitter2017" / name)[:16], data / name)
    model_cfg, train_cfg = preset("tiny")
    model_cfg, train_cfg = model_cfg.with_ablation(text_only=True), replace(train_cfg, epochs=1)
    train(model_cfg, train_cfg, data, tmp_path / "teacher", random_init=True, test=False)
    loads = []
    real = distillation.Predictor.from_pretrained
    monkeypatch.setattr(distillation.Predictor, "from_pretrained", lambda *a, **k: loads.append(1) or real(*a, **k))
    for run in ("s1", "s2"):
        train(model_cfg, replace(train_cfg, distil_weight=0.7), data, tmp_path / run, random_init=True, test=False,
              teacher=tmp_path / "teacher")
    assert len(loads) == 1  # the second student reads the cached marginals
    import json

    card = json.loads((tmp_path / "s2" / "card.json").read_text())
    assert card["teacher"] == str(tmp_path / "teacher") and card["train"]["distil_weight"] == 0.7
    assert "distilled from teacher" in (tmp_path / "s2" / "README.md").read_text()


def test_a_temperature_softens_the_marginals_and_keeps_the_best_path():
    dec = random_crf(9, seed=11)
    mask = torch.ones(4, 7, dtype=torch.bool)
    emissions = torch.randn(4, 7, 9) * 4
    sharp, soft = dec.marginals(emissions, mask), dec.marginals(emissions, mask, temperature=3.0)
    entropy = lambda p: -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
    assert entropy(soft) > entropy(sharp) + 0.1
    assert torch.allclose(soft.sum(-1), torch.ones(4, 7), atol=1e-5)
    scaled = CRFScaled(dec, 3.0)
    assert dec.decode(emissions, mask) == scaled.decode(emissions / 3.0, mask)


class CRFScaled:
    """The same CRF with every score divided by t: Viterbi must not change."""

    def __init__(self, dec, t):
        import copy

        self.dec = copy.deepcopy(dec)
        with torch.no_grad():
            for p in self.dec.crf.parameters():
                p.div_(t)

    def decode(self, emissions, mask):
        return self.dec.decode(emissions, mask)


def _tiny_dataset(tmp_path, n=16):
    folder = tmp_path / "ds"
    folder.mkdir()
    for name in ("train.txt", "valid.txt"):
        write_conll(read_conll(DATA / "twitter2017" / name)[:n], folder / name)
    return folder


@pytest.mark.slow  # trains
def test_unlabeled_tweets_are_tagged_by_the_teacher_and_join_training(tmp_path, monkeypatch):
    from itjner.configuration_itjner import preset
    from itjner.distillation import teacher_tagged
    from itjner.predict import Predictor
    from itjner.train import train

    monkeypatch.setenv("ITJNER_CACHE", str(tmp_path / "cache"))
    data = _tiny_dataset(tmp_path)
    model_cfg, train_cfg = preset("tiny")
    model_cfg, train_cfg = model_cfg.with_ablation(text_only=True), replace(train_cfg, epochs=1)
    train(model_cfg, train_cfg, data, tmp_path / "teacher", random_init=True, test=False)
    other = [replace(t, tags=["B-PER"] * len(t.tokens)) for t in read_conll(DATA / "twitter2015" / "train.txt")[:12]]
    write_conll(other, tmp_path / "untagged.txt")

    tagged = teacher_tagged(tmp_path / "teacher", other)
    expected = [p.tags for p in Predictor.from_pretrained(tmp_path / "teacher").predict(other)]
    assert [t.tags for t in tagged] == expected  # the teacher's tags, not the file's
    assert [t.tokens for t in tagged] == [t.tokens for t in other]

    logs = []
    train(model_cfg, train_cfg, data, tmp_path / "student", random_init=True, test=False, log=logs.append,
          teacher=tmp_path / "teacher", unlabeled=[tmp_path / "untagged.txt"])
    assert any("on 28 tweets" in line for line in logs), logs  # 16 gold + 12 teacher-tagged
    import json

    card = json.loads((tmp_path / "student" / "card.json").read_text())
    assert card["unlabeled"] == [str(tmp_path / "untagged.txt")] and card["unlabeled_tweets"] == 12
    readme = (tmp_path / "student" / "README.md").read_text()
    assert "tags ignored" in readme and "trained on 28 tweets in all, 12 of them tagged by the teacher" in readme


def test_unlabeled_tweets_need_a_teacher_and_may_not_be_dev_tweets(tmp_path):
    from itjner.configuration_itjner import preset
    from itjner.train import train

    data = _tiny_dataset(tmp_path)
    model_cfg, train_cfg = preset("tiny")
    model_cfg = model_cfg.with_ablation(text_only=True)
    with pytest.raises(ValueError, match="need a teacher"):
        train(model_cfg, train_cfg, data, tmp_path / "s", random_init=True, unlabeled=[data / "valid.txt"])
    with pytest.raises(ValueError, match="dev or test tweets"):
        train(model_cfg, train_cfg, data, tmp_path / "s", random_init=True, teacher=tmp_path / "t",
              unlabeled=[data / "valid.txt"])
    assert not (tmp_path / "s").exists()
