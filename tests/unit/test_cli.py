"""The command lines users type, run as subprocesses."""
import os
import subprocess
import sys

import pytest
from fixtures.paths import DATA, REPO


def run(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "itjner", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.slow
def test_train_then_evaluate_reproduces_the_card(tmp_path):
    data = (DATA / "twitter2017")
    out = tmp_path / "ckpt"
    proc = run("train", "--preset", "tiny", "--text-only", "--data", str(data), "--limit", "40", "--epochs", "1",
               "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "best dev P" in proc.stdout
    card = (out / "README.md").read_text()
    assert "itjner train --preset tiny" in card and "test (evaluated once)" in card
    ev = run("evaluate", str(out), "--data", str(data / "test.txt"), "--split", "test", "--json", str(tmp_path / "s.json"))
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert "overall" in ev.stdout and (tmp_path / "s.json").exists()


@pytest.mark.slow
def test_train_takes_its_switches_and_a_predict_rerun_keeps_the_rows(tmp_path):
    import json

    out = tmp_path / "wide"
    proc = run("train", "--preset", "tiny", "--data", str((DATA / "twitter2017")), "--limit", "16", "--epochs", "1",
               "--no-test", "--fusion-ffn-mult", "2", "--dropout", "0.25", "--char-cnn", "8", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["fusion_ffn_mult"] == 2 and config["dropout"] == 0.25 and config["char_cnn"] == 8
    assert "FFN width of the multimodal blocks 2×, character CNN width 8" in (out / "README.md").read_text()
    # the checkpoint tags a file; a rerun writes nothing new and says what it kept
    tweets = tmp_path / "five.txt"
    tweets.write_text("\n\n".join((DATA / "twitter2017" / "test.txt").read_text().split("\n\n")[:5]) + "\n")
    first = run("predict", "--checkpoint", str(out), "--data", str(tweets), "--out", str(tmp_path / "p.jsonl"))
    again = run("predict", "--checkpoint", str(out), "--data", str(tweets), "--out", str(tmp_path / "p.jsonl"))
    assert first.returncode == again.returncode == 0, first.stderr[-2000:] + again.stderr[-2000:]
    assert "tagged 5 tweet(s)" in first.stdout and "already there" not in first.stdout
    assert "tagged 0 tweet(s)" in again.stdout and "(5 already there were kept)" in again.stdout
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 5


def test_paper_preset_offline_fails_with_a_clear_message(tmp_path):
    proc = run("train", "--preset", "paper", "--data", str((DATA / "twitter2017")), "--limit", "4",
               "--out", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert "albert-base-v2" in proc.stderr and "Traceback" not in proc.stderr


def test_evaluate_rejects_a_folder_that_is_not_a_checkpoint(tmp_path):
    proc = run("evaluate", str(tmp_path), "--data", str(tmp_path))
    assert proc.returncode == 2 and "not an ITJNER checkpoint" in proc.stderr
