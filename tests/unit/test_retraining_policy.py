"""The retraining policy of the ML backend, without a server: the acceptance rule, the stable held-out split, the
training mix, and the job bookkeeping (restart pick-up, consecutive versions, bounded disk). The real-server loop is in
tests/integration/test_retraining.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from itjner.data import Tweet
from itjner.labelstudio.retraining import (LabelStudioTrainer, RetrainOptions, decide, heldout_side,
                                           training_tweets)


def tweets(n, prefix="t"):
    return [Tweet(f"{prefix}{i}", f"tweet number {i} from {prefix}".split(), ["O"] * 5) for i in range(n)]


def test_a_tie_is_not_a_gain_and_forgetting_the_base_data_is_refused():
    opt = RetrainOptions()
    assert decide({"heldout": 80.0, "dev": 86.0}, {"heldout": 80.0, "dev": 85.0}, opt)[0] is False
    ok, why = decide({"heldout": 82.0, "dev": 85.8}, {"heldout": 80.0, "dev": 86.0}, opt)
    assert ok and "82.00 vs 80.00" in why
    ok, why = decide({"heldout": 90.0, "dev": 84.0}, {"heldout": 80.0, "dev": 86.0}, opt)
    assert not ok and "dev fell by 2.00" in why
    assert decide({"heldout": 81.0, "dev": None}, {"heldout": 80.0, "dev": None}, opt)[0]
    assert not decide({"heldout": 81.0, "dev": 86.0}, {"heldout": 80.0, "dev": 86.0}, RetrainOptions(min_gain=2))[0]


def test_the_heldout_side_of_a_tweet_never_moves_and_ignores_tokenisation():
    pool = tweets(2000)
    sides = [heldout_side(t, 0.3) for t in pool]
    assert sides == [heldout_side(t, 0.3) for t in pool]
    assert 0.26 < sum(sides) / len(sides) < 0.34
    same = Tweet("x", ["sauce", ".", "."]), Tweet("x", ["sauce.."])
    assert heldout_side(same[0], 0.5) == heldout_side(same[1], 0.5)
    # a growing share only adds tweets to the held-out side
    assert all(heldout_side(t, 0.5) for t in pool if heldout_side(t, 0.3))


def test_annotations_are_a_small_share_of_the_mix_and_never_replayed_twice():
    fit = tweets(8, "a")
    replay_pool = tweets(500, "r") + fit[:2]
    mixed, repeat = training_tweets(fit, replay_pool, RetrainOptions(replay=300))
    replayed = [t for t in mixed if t.image_id.startswith("r")]
    assert len(replayed) == 300 and repeat == 2  # 8 x 2 = 16: about 5% of 316
    assert sum(t.image_id.startswith("a") for t in mixed) == 8 * 2
    assert mixed == training_tweets(fit, replay_pool, RetrainOptions(replay=300))[0]  # seeded


@pytest.fixture()
def base(tmp_path, tiny_config):
    import torch

    from itjner.modeling_itjner import ITJNERModel

    torch.manual_seed(0)
    ITJNERModel.from_config(tiny_config.with_ablation(text_only=True)).save_pretrained(tmp_path / "base")
    return tmp_path / "base"


def job_folder(trainer, name, result=None, model_from=None, pid=None):
    import shutil

    work = trainer.dir / "jobs" / name
    work.mkdir(parents=True)
    (work / "job.json").write_text(json.dumps({"project": 3}))
    if result is not None:
        (work / "result.json").write_text(json.dumps(result))
    if model_from is not None:
        shutil.copytree(model_from, work / "model")
    if pid is not None:
        (work / "pid").write_text(str(pid))
    return work


def result(accepted):
    return {"annotated": 10, "trained_on": 7, "heldout": 3, "replay": 300, "dev": 1000,
            "new": {"heldout": 90.0, "dev": 86.0}, "serving": {"heldout": 80.0, "dev": 86.1},
            "accepted": accepted, "why": "held-out annotations F1 90.00 vs 80.00", "train_seconds": 1.0}


def test_jobs_finished_while_the_backend_was_down_are_picked_up(base, tmp_path):
    loaded = []
    trainer = LabelStudioTrainer(tmp_path / "versions", base, RetrainOptions(), lambda f: loaded.append(f) or f.name)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job_folder(trainer, "job-1", result(True), model_from=base, pid=dead.pid)
    (job_folder(trainer, "job-2", pid=dead.pid) / "train.log").write_text("starting\nKilled by the test\n\n")
    job_folder(trainer, "job-3", result(False), model_from=base, pid=dead.pid)
    lines = trainer.recover()
    assert lines == ["job-1: accepted while the backend was down", "job-2: failed while the backend was down",
                     "job-3: rejected while the backend was down"]
    rows = trainer.history()
    assert [r["status"] for r in rows] == ["accepted", "failed", "rejected"]
    assert rows[0]["version"] == "base-v1" and loaded == [tmp_path / "versions" / "base-v1"]
    assert "ended without a result" in rows[1]["reason"] and rows[2]["new"]["heldout"] == 90.0
    assert "Killed by the test" in rows[1]["reason"]  # the last line of its log, the cause in one line
    assert not list((tmp_path / "versions" / "jobs").iterdir())  # rejected and failed jobs leave nothing
    assert trainer.serving() == tmp_path / "versions" / "base-v1"


def test_versions_are_numbered_in_a_row_and_old_ones_pruned(base, tmp_path):
    trainer = LabelStudioTrainer(tmp_path / "versions", base, RetrainOptions(keep=2), lambda f: f.name)
    for i, accepted in enumerate([True, False, True, True, False, True]):
        work = job_folder(trainer, f"job-{i}", result(accepted), model_from=base)
        trainer._finish(work, f"job-{i}", 3)
    names = [r.get("version") for r in trainer.history() if r["status"] == "accepted"]
    assert names == ["base-v1", "base-v2", "base-v3", "base-v4"]
    kept = sorted(p.name for p in (tmp_path / "versions").iterdir() if p.name.startswith("base-"))
    assert kept == ["base-v3", "base-v4"] and trainer.serving().name == "base-v4"
    assert base.is_dir()


def test_a_running_job_is_watched_again_after_a_restart(base, tmp_path):
    import time

    trainer = LabelStudioTrainer(tmp_path / "versions", base, RetrainOptions(), lambda f: f.name)
    work = job_folder(trainer, "job-9")
    script = (f"import json, time, pathlib; time.sleep(1.5); "
              f"pathlib.Path({str(work / 'result.json')!r}).write_text(json.dumps({result(False)!r}))")
    # a process that looks like a retraining job (its command line names the module), finishing later
    proc = subprocess.Popen([sys.executable, "-c", script, "itjner.labelstudio.retraining"])
    (work / "pid").write_text(str(proc.pid))
    assert trainer.recover() == ["job-9: still training, watched again"]
    assert trainer.status["state"] == "training" and trainer.running()
    proc.wait()
    deadline = time.monotonic() + 20
    while trainer.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert trainer.status["state"] == "rejected" and trainer.history()[-1]["job"] == "job-9"


def test_too_few_heldout_annotations_skip_the_training_and_say_so(base, tmp_path, monkeypatch):
    from itjner.labelstudio import client as client_module

    class FakeClient:
        def __init__(self, url, key, timeout=20.0):
            pass

        def list_tasks(self, project):
            return [{"id": 1, "data": {"text": "Obama visits Paris", "tokens": ["Obama", "visits", "Paris"],
                                       "image_id": "x"},
                     "annotations": [{"id": 1, "result": [], "updated_at": "2026-01-01T00:00:00Z"}]}]

    monkeypatch.setattr(client_module, "LabelStudioClient", FakeClient)
    trainer = LabelStudioTrainer(tmp_path / "versions", base, RetrainOptions(), lambda f: f.name)
    assert trainer.start(5, "http://ls", "key", base)["status"] == "started"
    import time

    deadline = time.monotonic() + 20
    while trainer.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    row = trainer.history()[-1]
    assert row["status"] == "skipped" and "1 annotated tweet(s)" in row["reason"]
    assert row["reason"].endswith("Annotate more tweets; the serving model stays")
    assert not list((tmp_path / "versions" / "jobs").iterdir())


def test_a_job_just_started_is_waited_for_not_taken_for_dead(base, tmp_path):
    """Right after the fork the child's command line is still the backend's, so /proc cannot tell it from a dead
    process: the backend waits for its own child instead (a job was once marked failed 3 ms after it started)."""
    trainer = LabelStudioTrainer(tmp_path / "versions", base, RetrainOptions(), lambda f: f.name)
    work = job_folder(trainer, "job-5")
    script = (f"import json, time, pathlib; time.sleep(1.0); "
              f"pathlib.Path({str(work / 'result.json')!r}).write_text(json.dumps({result(False)!r}))")
    proc = subprocess.Popen([sys.executable, "-c", script])  # its command line does not name the module
    trainer._watch(work, "job-5", 3, proc.pid, proc)
    assert proc.returncode == 0  # waited for and reaped
    assert trainer.history()[-1]["status"] == "rejected" and trainer.status["state"] == "rejected"
