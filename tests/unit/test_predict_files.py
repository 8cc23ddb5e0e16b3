"""Batch pre-annotation: resumable output, and torchrun sharding identical to one process."""
import json
import os
import subprocess
import sys

import pytest
import torch

from itjner.predict_files import done_indices, predict_file
from itjner.data import Tweet, write_conll
from itjner.modeling_itjner import ITJNERModel
from itjner.predict import Predictor

from fixtures.paths import REPO


@pytest.fixture()
def tiny_ckpt(tmp_path, tiny_config):
    torch.manual_seed(0)
    tiny_config.use_caption = False
    ITJNERModel.from_config(tiny_config.with_ablation(text_only=True)).save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


@pytest.fixture()
def tweets_file(tmp_path):
    words = ["Kevin", "Durant", "Oakland", "the", "Warriors", "love", "NBA", "in", "at", "Paris"]
    tweets = [Tweet(f"id{i}", [words[(i * 7 + k) % len(words)] for k in range(3 + i % 9)]) for i in range(37)]
    write_conll(tweets, tmp_path / "tweets.txt")
    return tmp_path / "tweets.txt"


def test_rerun_skips_done_rows_and_recovers_a_torn_line(tmp_path, tiny_ckpt, tweets_file):
    predictor = Predictor.from_pretrained(tiny_ckpt)
    full = tmp_path / "full.jsonl"
    assert predict_file(predictor, tweets_file, full, chunk=8, progress=False) == 37
    reference = full.read_text()
    # simulate an interrupted run: 2 complete chunks and half a line
    lines = reference.splitlines(keepends=True)
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(lines[:16]) + lines[16][:25])
    assert done_indices(partial) == set(range(16))
    assert predict_file(predictor, tweets_file, partial, chunk=8, progress=False) == 21
    assert partial.read_text() == reference
    assert predict_file(predictor, tweets_file, partial, chunk=8, progress=False) == 0  # nothing left to do
    row = json.loads(lines[0])
    assert set(row) >= {"index", "image_id", "tokens", "tags", "entities", "score"}


@pytest.mark.parametrize("native_bf16", [True, False])
def test_precision_auto_is_bf16_only_on_cpus_that_compute_it(tmp_path, tiny_ckpt, tweets_file, monkeypatch,
                                                               native_bf16):
    from itjner import cli, predict

    seen = []
    real = ITJNERModel.forward

    def spy(self, *args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ITJNERModel, "forward", spy)
    monkeypatch.setattr(predict, "cpu_has_bf16", lambda: native_bf16)
    for precision, autocast in (("bf16", True), ("fp32", False), ("auto", native_bf16)):
        out = tmp_path / f"{precision}.jsonl"
        assert cli.main(["predict", "--data", str(tweets_file), "--checkpoint", str(tiny_ckpt), "--out", str(out),
                         "--device", "cpu", "--precision", precision]) == 0
        assert len(out.read_text().splitlines()) == 37
        assert seen and set(seen) == {autocast}, precision
        seen.clear()
    with pytest.raises(ValueError, match="precision must be one of"):
        Predictor.from_pretrained(tiny_ckpt, precision="fp16")


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(tmp_path, tiny_ckpt, tweets_file):
    one = tmp_path / "one.jsonl"
    predict_file(Predictor.from_pretrained(tiny_ckpt), tweets_file, one, progress=False)
    two = tmp_path / "two.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "itjner", "predict", "--data", str(tweets_file), "--checkpoint", str(tiny_ckpt), "--out", str(two)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert two.read_text() == one.read_text()
    assert not list(tmp_path.glob("two.jsonl.part*"))


@pytest.mark.slow
def test_torchrun_ddp_training_matches_one_process(tmp_path):
    from fixtures.paths import DATA

    data = (DATA / "twitter2017")
    common = ["-m", "itjner", "train", "--preset", "tiny", "--text-only", "--data", str(data), "--limit", "48",
              "--epochs", "2", "--batch-size", "8", "--no-test"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    single = subprocess.run([sys.executable] + common + ["--out", str(tmp_path / "one")], env=env,
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
                         + common + ["--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=600, cwd=REPO)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())["history"]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())["history"]
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.1)
