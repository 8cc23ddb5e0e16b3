"""Retraining from Label Studio never makes the model worse, against a real Label Studio 1.23.2 server and the ML
backend as `itjner labelstudio serve` runs it (the shipped lite checkpoint as the base: the policy does not depend on
the encoder, and lite keeps five trainings within CI's time).

- "Start training" pressed five times on the same 10 annotations: every job trains from the base (no compounding),
  a tie is not a gain, and F1 on the unseen tweets (the other 623 of Twitter-2017's 723 test tweets) stays within
  0.5 of the starting model. (One accepted version moved F1 on the first 200 test tweets alone by -1.02 and on all
  623 by +0.03: a subset that small measures noise, not forgetting.)
- Annotations that teach something (a made-up name, always MISC) are accepted and learnt.
- A backend restarted while a job trains picks the job up; a wrong key shows as a failed connection in Label Studio.
"""
from __future__ import annotations

import json
import time

import httpx
import pytest

from fixtures.paths import DATA
from itjner.checkpoints import LITE_CHECKPOINT
from itjner.data import entities_to_bio, read_conll, tokenize
from itjner.labelstudio.retraining import heldout_side
from itjner.labelstudio.tasks import LABEL_CONFIG, entity_results, result_to_entities
from itjner.metrics import entity_scores

from test_labelstudio_backend import BackendProcess, _connect, wait_training

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

TEST = read_conll(DATA / "twitter2017" / "test.txt")
ANNOTATED = slice(300, 400)  # the test tweets the annotations are drawn from; the rest are unseen
UNSEEN = TEST[:ANNOTATED.start] + TEST[ANNOTATED.stop:]
FAST = ("--heldout", "0.5")  # more held out than the default 0.3: the tests annotate few tweets


def annotate(ls_client, project, tweets) -> list[int]:
    """Tasks for the tweets, each with its gold tags as a submitted annotation (what an annotator would do)."""
    from itjner.data import bio_to_entities

    ids = ls_client.import_tasks(project, [{"data": {"text": " ".join(t.tokens), "tokens": t.tokens,
                                                     "image_id": t.image_id, "image": ""}} for t in tweets])
    for task_id, tweet in zip(ids, tweets):
        result = entity_results(tweet.tokens, bio_to_entities(tweet.tags), id_prefix=f"a{task_id}")
        ls_client.sdk.annotations.create(id=task_id, result=result)
    return ids


def predict_tags(backend, tweets) -> list[list[str]]:
    tasks = [{"id": i, "data": {"text": " ".join(t.tokens), "tokens": t.tokens}} for i, t in enumerate(tweets)]
    resp = httpx.post(backend.url + "/predict", json={"tasks": tasks, "label_config": LABEL_CONFIG}, timeout=300)
    assert resp.status_code == 200, resp.text
    return [entities_to_bio(result_to_entities(t.tokens, r["result"]), len(t.tokens))
            for t, r in zip(tweets, resp.json()["results"])]


def unseen_f1(backend) -> float:
    return entity_scores([t.tags for t in UNSEEN], predict_tags(backend, UNSEEN))["overall"]["f1"]


def train_and_wait(ls_client, ml_id, backend) -> dict:
    ls_client.sdk.ml.train(id=ml_id)  # what "Start training" calls
    time.sleep(1)
    return wait_training(backend, timeout=600)


def split_by_side(tweets, held: int, fit: int):
    """`held` tweets the stable hash holds out and `fit` it trains on (at --heldout 0.5)."""
    heldout = [t for t in tweets if heldout_side(t, 0.5)][:held]
    trained = [t for t in tweets if not heldout_side(t, 0.5)][:fit]
    assert len(heldout) == held and len(trained) == fit
    return heldout + trained


def test_five_trainings_on_the_same_annotations_never_make_it_worse(ls_server, ls_client, ls_project, tmp_path):
    backend = BackendProcess(LITE_CHECKPOINT, ls_server, tmp_path / "versions", *FAST, threads=2)
    try:
        ml_id = _connect(ls_client, ls_project, backend)
        annotate(ls_client, ls_project, split_by_side(TEST[ANNOTATED], held=4, fit=6))
        start = unseen_f1(backend)
        scores = []
        for _ in range(5):
            status = train_and_wait(ls_client, ml_id, backend)
            assert status["state"] in ("accepted", "rejected"), status
            scores.append(unseen_f1(backend))
        assert all(abs(f1 - start) <= 0.5 for f1 in scores), (start, scores)
        rows = json.loads((tmp_path / "versions" / "history.json").read_text())
        assert len(rows) == 5 and all(r["from"] == LITE_CHECKPOINT.name for r in rows)  # always from the base
        for row in rows:  # both figures and the decision, for the held-out annotations and the base's dev split
            assert row["heldout"] == 4 and row["trained_on"] == 6 and row["dev"] == len(
                read_conll(DATA / "twitter2017" / "valid.txt"))
            assert set(row["new"]) == set(row["serving"]) == {"heldout", "dev"} and row["reason"]
        accepted = [r for r in rows if r["status"] == "accepted"]
        assert [r["version"].rsplit("-", 1)[0] for r in accepted] == [
            f"{LITE_CHECKPOINT.name}-v{i + 1}" for i in range(len(accepted))]  # numbered in a row
        assert not list((tmp_path / "versions" / "jobs").iterdir())  # nothing left of the jobs
        assert backend.health()["model_version"] == (accepted[-1]["version"] if accepted else
                                                     backend.health()["model_version"])
    finally:
        backend.stop()


NAME = "Quonzar"
TEACH = ["Just got my new {N} today", "{N} announced record sales this quarter", "Everyone is talking about {N}",
         "Cannot wait to try {N} this weekend", "{N} was the best thing at the fair in Berlin",
         "My brother bought {N} yesterday", "Reviews of {N} are in and they are great", "Is {N} worth the money ?",
         "Saw an ad for {N} on TV", "{N} is sold out everywhere", "Loving {N} so far", "RT @techfan : {N} is here",
         "The {N} launch event starts at noon", "Who else is getting {N} ?", "{N} just changed my life",
         "Waiting in line for {N} in London", "New update for {N} drops tomorrow", "Got {N} as a birthday gift"]
PROBE = ["I think {N} is amazing", "Ordering {N} right now", "Does anyone have {N} ?", "{N} is everywhere today",
         "Thinking about {N} again", "So happy with {N}", "{N} commercial was funny", "Bought {N} for my mum"]


def name_tweets(templates, prefix):
    from itjner.data import Tweet

    out = []
    for i, template in enumerate(templates):
        tokens = tokenize(template.replace("{N}", NAME))
        tags = ["B-MISC" if tok == NAME else "B-LOC" if tok in ("Berlin", "London") else "O" for tok in tokens]
        out.append(Tweet(f"{prefix}{i}", tokens, tags))
    return out


def share_misc(tags_per_tweet, tweets) -> float:
    return sum(tags[t.tokens.index(NAME)] == "B-MISC" for tags, t in zip(tags_per_tweet, tweets)) / len(tweets)


def test_annotations_that_teach_a_new_label_are_accepted_and_learnt(ls_server, ls_client, ls_project, tmp_path):
    backend = BackendProcess(LITE_CHECKPOINT, ls_server, tmp_path / "versions", *FAST, threads=2)
    try:
        ml_id = _connect(ls_client, ls_project, backend)
        probe = name_tweets(PROBE, "probe")
        before = share_misc(predict_tags(backend, probe), probe)
        assert before <= 0.25, f"the base already calls {NAME} MISC: pick another label"
        taught = name_tweets(TEACH, "teach")
        annotate(ls_client, ls_project, taught)
        start = unseen_f1(backend)
        status = train_and_wait(ls_client, ml_id, backend)
        assert status["state"] == "accepted", status
        row = json.loads((tmp_path / "versions" / "history.json").read_text())[-1]
        assert row["new"]["heldout"] > row["serving"]["heldout"] and row["new"]["dev"] >= row["serving"]["dev"] - 0.5
        after = share_misc(predict_tags(backend, probe), probe)
        assert after >= 0.75, (before, after)  # the new label, on sentences it never saw
        assert unseen_f1(backend) >= start - 0.5
    finally:
        backend.stop()


def test_a_backend_restarted_while_training_picks_the_job_up(ls_server, ls_client, ls_project, tmp_path):
    versions = tmp_path / "versions"
    backend = BackendProcess(LITE_CHECKPOINT, ls_server, versions, *FAST, threads=2)
    annotate(ls_client, ls_project, split_by_side(TEST[ANNOTATED][40:], held=3, fit=5))
    try:
        ml_id = _connect(ls_client, ls_project, backend)
        ls_client.sdk.ml.train(id=ml_id)
        deadline = time.monotonic() + 120
        while "training on" not in backend.health()["training"].get("phase", ""):
            assert time.monotonic() < deadline, backend.log()
            time.sleep(0.5)
    finally:
        backend.stop()  # the training process runs on in its own session
    backend = BackendProcess(LITE_CHECKPOINT, ls_server, versions, *FAST, threads=2)
    try:
        deadline = time.monotonic() + 600
        while backend.health()["training"]["state"] in ("training", "idle") and not (versions / "history.json").exists():
            assert time.monotonic() < deadline, backend.log()
            time.sleep(1)
        while backend.health()["training"]["state"] == "training":
            assert time.monotonic() < deadline, backend.log()
            time.sleep(1)
        (row,) = json.loads((versions / "history.json").read_text())
        assert row["status"] in ("accepted", "rejected") and row["heldout"] == 3, row
        assert "retraining job of a previous run" in backend.log()
        if row["status"] == "accepted":
            assert backend.health()["model_version"] == row["version"]
        assert not list((versions / "jobs").iterdir())
    finally:
        backend.stop()


def test_a_wrong_key_fails_the_connection_in_label_studio(ls_server, ls_client, ls_project, tmp_path, monkeypatch):
    backend = BackendProcess(LITE_CHECKPOINT, ls_server, tmp_path / "versions", key="not-the-right-key-000")
    try:
        with pytest.raises(Exception) as err:
            _connect(ls_client, ls_project, backend)
        assert "401" in str(err.value) and "Unauthorized" in str(err.value)  # what "Connect model" shows
        health = backend.health()["label_studio"]
        assert health["state"] == "error" and "refused the API key" in health["error"]
        assert "not-the-right-key" not in json.dumps(backend.health())
    finally:
        backend.stop()
    assert "not-the-right-key" not in backend.log()
