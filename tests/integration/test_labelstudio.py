"""The Label Studio loop against a real Label Studio 1.23.2 server (tests/fixtures/labelstudio_server.py starts it on 127.0.0.1).

Unit tests at the top need no server; the rest use the `ls_server` fixtures and fail with a clear message when the
server executable is missing under CI=true (skip otherwise).
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import pickle
import random
import time

import httpx
import pytest
from PIL import Image

from itjner.labelstudio import cli as ls_cli
from itjner.labelstudio import client as ls_api
from itjner.labelstudio import tasks as task_format
from itjner.data import (Entity, Prediction, Tweet, bio_to_entities, char_offsets, entities_to_bio, format_conll,
                         parse_conll)
from itjner.labelstudio.outbox import Outbox

pytestmark = [pytest.mark.labelstudio]

SECRET = "sekrit-Key-4242-do-not-leak"


# ---------------------------------------------------------------------------------------------------- test data
def jpeg_bytes(color=(200, 30, 30), size=(32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def png_bytes(color=(10, 200, 30), size=(20, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


HAND_MADE = [  # tokens, entities (start, end, type): adjacent same-type entities, unicode, punctuation, edges
    (["RT", "@JohnSmith", ":", "Barack", "Obama", "visits", "Paris", "today", "!"],
     [(1, 2, "PER"), (3, 5, "PER"), (6, 7, "LOC")]),
    (["Kevin", "Durant", "Stephen", "Curry", "#NBAFinals"], [(0, 2, "PER"), (2, 4, "PER"), (4, 5, "MISC")]),
    (["Zürich", "🇨🇭", "und", "Genève", "—", "«", "Nestlé", "»"], [(0, 1, "LOC"), (3, 4, "LOC"), (6, 7, "ORG")]),
    (["no", "entities", "here", "http://t.co/abc"], []),
    (["Apple"], [(0, 1, "ORG")]),
    (["U.S.", "&amp;", "U.K.", "don't", "agree", "..."], [(0, 1, "LOC"), (2, 3, "LOC")]),
    (["New", "York", "Yankees", "beat", "Red", "Sox", "in", "New", "York"],
     [(0, 3, "ORG"), (4, 6, "ORG"), (7, 9, "LOC")]),
]
VOCAB = ["the", "game", "at", "Madrid", "Real", "FC", "Messi", "#WorldCup", "@BBC", "lol", "!", "Google", "I",
         "love", "Tokyo", "“", "”", "😂", "Taylor", "Swift"]


def make_predictions(n: int = 20, seed: int = 7) -> list[Prediction]:
    """Deterministic predictions (hand-made ones first) with distinct scores per tweet and per entity."""
    rng = random.Random(seed)
    preds = []
    for i in range(n):
        if i < len(HAND_MADE):
            tokens, spans = HAND_MADE[i]
        else:
            tokens = [rng.choice(VOCAB) for _ in range(rng.randint(3, 12))]
            spans, pos = [], 0
            while pos < len(tokens):
                length = rng.randint(1, 3)
                if rng.random() < 0.4 and pos + length <= len(tokens):
                    spans.append((pos, pos + length, rng.choice(["PER", "LOC", "ORG", "MISC"])))
                pos += length
        ents = [Entity(s, e, t, round(0.5 + 0.49 * rng.random(), 6)) for s, e, t in spans]
        tweet = Tweet(image_id=f"img{i:03d}", tokens=list(tokens))
        score = round(rng.random(), 6)
        preds.append(Prediction(tweet=tweet, tags=entities_to_bio(ents, len(tokens)), entities=ents, score=score))
    return preds


def region(tokens, start, end, label, rid="r"):
    """A labels region as the Label Studio UI stores it for a word-granularity selection of words [start, end)."""
    offs = char_offsets(tokens)
    c0, c1 = offs[start][0], offs[end - 1][1]
    return {"id": rid, "from_name": "label", "to_name": "text", "type": "labels", "origin": "manual",
            "value": {"start": c0, "end": c1, "text": " ".join(tokens)[c0:c1], "labels": [label]}}


def task_dict(task) -> dict:
    return task if isinstance(task, dict) else task.model_dump()


# --------------------------------------------------------------------------------------------------- unit tests
def test_label_config_declares_types_word_granularity_and_image():
    cfg = task_format.LABEL_CONFIG
    for t in ("PER", "LOC", "ORG", "MISC"):
        assert f'<Label value="{t}"/>' in cfg
    assert 'granularity="word"' in cfg and 'value="$image"' in cfg and 'value="$text"' in cfg


def test_task_layout_offsets_scores_and_adjacent_entities_stay_apart():
    pred = make_predictions()[1]  # Kevin Durant | Stephen Curry | #NBAFinals
    task = task_format.task_from_prediction(pred, jpeg_bytes(), "itjner-test")
    data = task["data"]
    assert data["text"] == "Kevin Durant Stephen Curry #NBAFinals" and data["tokens"] == pred.tweet.tokens
    assert data["image"].startswith("data:image/jpeg;base64,") and data["image_id"] == "img001"
    assert data["itjner_origin"] == "model" and len(data["itjner_key"]) == 32
    assert "annotations" not in task
    (p,) = task["predictions"]
    assert p["model_version"] == "itjner-test" and p["score"] == pred.score
    values = [(r["value"]["start"], r["value"]["end"], r["value"]["text"], r["value"]["labels"]) for r in p["result"]]
    assert values == [(0, 12, "Kevin Durant", ["PER"]), (13, 26, "Stephen Curry", ["PER"]),
                      (27, 37, "#NBAFinals", ["MISC"])]
    assert [r["score"] for r in p["result"]] == [e.score for e in pred.entities]
    assert len({r["id"] for r in p["result"]}) == 3
    assert all(r["from_name"] == "label" and r["to_name"] == "text" and r["type"] == "labels" for r in p["result"])


def test_no_image_gives_empty_url_and_bad_image_says_why():
    pred = make_predictions()[0]
    assert task_format.task_from_prediction(pred, None, "m")["data"]["image"] == ""
    bad = task_format.task_from_prediction(pred, b"\xff\xd8\xffnot really a jpeg", "m")["data"]
    assert bad["image"] == "" or bad["image"].startswith("data:image/jpeg")
    junk = task_format.task_from_prediction(pred, b"GARBAGE" * 10, "m")["data"]
    assert junk["image"] == "" and "not a readable image" in junk["image_problem"]
    assert task_format.task_from_prediction(pred, png_bytes(), "m")["data"]["image"].startswith("data:image/png;base64,")


def test_big_images_are_downscaled_to_a_small_jpeg():
    big = Image.effect_noise((2400, 1800), 80).convert("RGB")
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    assert len(buf.getvalue()) > task_format.MAX_IMAGE_BYTES
    url, problem = task_format.image_data_url(buf.getvalue())
    assert problem is None and url.startswith("data:image/jpeg;base64,")
    import base64

    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert max(img.size) == task_format.MAX_IMAGE_SIDE


def test_correction_is_an_annotation_next_to_the_raw_prediction():
    pred = make_predictions()[0]
    correction = [Entity(3, 5, "PER"), Entity(6, 7, "LOC"), Entity(7, 8, "MISC")]
    task = task_format.task_from_prediction(pred, None, "itjner-test", correction=correction)
    assert task["data"]["itjner_origin"] == "user-correction"
    assert [r["value"]["labels"][0] for r in task["predictions"][0]["result"]] == ["PER", "PER", "LOC"]
    (ann,) = task["annotations"]
    assert [(r["value"]["text"], r["value"]["labels"]) for r in ann["result"]] == \
        [("Barack Obama", ["PER"]), ("Paris", ["LOC"]), ("today", ["MISC"])]
    # one task per tweet: the correction does not change the task key (issue 15)
    assert task["data"]["itjner_key"] == task_format.task_from_prediction(pred, None, "itjner-test")["data"]["itjner_key"]
    # same tweet and correction -> same key whatever the model version or scores
    assert task["data"]["itjner_key"] == task_format.task_from_prediction(pred, None, "v2", correction=correction[::-1]
                                                                )["data"]["itjner_key"]
    assert task_format.task_from_prediction(pred, None, "m", task_key="given")["data"]["itjner_key"] == "given"


def test_spans_map_back_to_exact_bio_for_random_taggings():
    rng = random.Random(0)
    tags_pool = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
    for _ in range(500):
        tokens = [rng.choice(VOCAB + ["a", "😂😂", "x.y"]) for _ in range(rng.randint(1, 15))]
        tags = entities_to_bio(bio_to_entities([rng.choice(tags_pool) for _ in tokens]), len(tokens))  # canonical
        results = task_format.entity_results(tokens, bio_to_entities(tags))
        problems = []
        back = task_format.result_to_entities(tokens, results, problems)
        assert entities_to_bio(back, len(tokens)) == tags and problems == []


def test_partial_and_odd_regions_map_to_whole_words():
    tokens = ["RT", "@Obama", "in", "New", "York"]
    r = region(tokens, 1, 2, "PER")
    r["value"]["start"] += 1  # "Obama" without the @ (a character-level selection)
    r2 = {"type": "labels", "from_name": "label", "to_name": "text",
          "value": {"start": 13, "end": 15, "labels": ["LOC"]}}  # "Ne": part of one word
    other = {"type": "choices", "from_name": "sentiment", "to_name": "text", "value": {"choices": ["pos"]}}
    problems = []
    ents = task_format.result_to_entities(tokens, [r, r2, other], problems)
    assert entities_to_bio(ents, len(tokens)) == ["O", "B-PER", "O", "B-LOC", "O"]
    overlap = [region(tokens, 3, 5, "LOC"), region(tokens, 4, 5, "ORG")]
    assert entities_to_bio(task_format.result_to_entities(tokens, overlap, problems), 5) == ["O", "O", "O", "B-LOC", "I-LOC"]
    assert any("overlaps" in p for p in problems)


def test_latest_annotation_skips_cancelled_and_uses_update_time():
    anns = [{"id": 1, "updated_at": "2026-01-01T10:00:00Z", "result": []},
            {"id": 3, "updated_at": "2026-01-01T09:00:00Z", "result": []},
            {"id": 2, "updated_at": "2026-01-01T11:00:00Z", "was_cancelled": True, "result": []}]
    assert task_format.latest_annotation(anns)["id"] == 1
    assert task_format.latest_annotation([]) is None


def test_order_by_uncertainty_puts_least_confident_first():
    preds = make_predictions()
    ordered = task_format.order_predictions(preds, "uncertainty")
    assert [p.score for p in ordered] == sorted(p.score for p in preds)
    assert task_format.order_predictions(preds, "file") == preds
    with pytest.raises(ValueError):
        task_format.order_predictions(preds, "random")


def test_api_key_never_in_messages_or_repr(monkeypatch):
    client = ls_api.LabelStudioClient("http://127.0.0.1:9", SECRET, timeout=2)
    assert SECRET not in repr(client) and SECRET not in str(client) and SECRET not in repr(vars(client))
    with pytest.raises(TypeError):
        pickle.dumps(client)
    assert copy.deepcopy(client) is client  # UI state may deep-copy it: shared, not pickled
    # server down
    with pytest.raises(ls_api.LabelStudioUnavailable) as down:
        client.check()
    assert "unreachable" in str(down.value) and SECRET not in str(down.value) and SECRET not in repr(down.value)
    assert down.value.__cause__ is None and down.value.__suppress_context__

    # a server that refuses the key and even echoes it back in its answer
    def echo_401(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": f"Invalid token {request.headers.get('authorization')}"})

    from label_studio_sdk import LabelStudio

    client._sdk = LabelStudio(base_url=client.url, api_key=SECRET, max_retries=0,
                              httpx_client=httpx.Client(transport=httpx.MockTransport(echo_401)))
    with pytest.raises(ls_api.LabelStudioAuthError) as refused:
        client.check()
    msg = str(refused.value)
    assert msg.startswith("Label Studio at http://127.0.0.1:9 refused the API key") and SECRET not in msg
    assert all(SECRET not in str(a) for a in refused.value.args)

    def echo_500(request):
        return httpx.Response(500, text=f"boom {request.headers.get('authorization')}")

    client._sdk = LabelStudio(base_url=client.url, api_key=SECRET, max_retries=0,
                              httpx_client=httpx.Client(transport=httpx.MockTransport(echo_500)))
    with pytest.raises(ls_api.LabelStudioError) as err:
        client.check()
    assert "HTTP 500" in str(err.value) and SECRET not in str(err.value)

    # an expired personal access token (a JWT) is refused by the SDK itself, before any request
    import jwt as pyjwt

    expired = pyjwt.encode({"exp": 1, "token_type": "refresh"}, "k" * 32, algorithm="HS256")
    with pytest.raises(ls_api.LabelStudioAuthError) as old:
        ls_api.connect("http://127.0.0.1:9", expired)
    assert expired not in str(old.value)

    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(ls_api.LabelStudioAuthError, match="LABEL_STUDIO_API_KEY"):
        ls_api.LabelStudioClient("http://127.0.0.1:9")


def test_url_and_key_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", SECRET)
    client = ls_api.LabelStudioClient()
    assert client.url == "http://127.0.0.1:9" and SECRET not in repr(client)


def test_outbox_persists_and_enqueue_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setenv("ITJNER_DATA_DIR", str(tmp_path / "data"))
    box = Outbox()
    assert box.path == tmp_path / "data" / "outbox.sqlite"
    tasks = [task_format.task_from_prediction(p, None, "m") for p in make_predictions(3)]
    ids = [box.enqueue(t, 5) for t in tasks]
    assert ids == [box.enqueue(t, 5) for t in tasks] and len(set(ids)) == 3
    assert Outbox(tmp_path / "data").pending_count() == 3  # a new process sees them
    assert box.status_line() == "3 queued: not sent yet"
    assert box.enqueue(tasks[0], 6) not in ids  # another project is another item


def test_export_writes_tasks_json_without_a_server(tmp_path):
    preds = make_predictions(5)
    images = tmp_path / "images"
    images.mkdir()
    (images / "img000.jpg").write_bytes(jpeg_bytes())
    (images / "img001.jpg").write_bytes(b"broken")
    out = tmp_path / "tasks.json"
    assert task_format.export_tasks_json(preds, images, "itjner-v1", out, order="uncertainty") == 5
    tasks = json.loads(out.read_text(encoding="utf-8"))
    assert [t["predictions"][0]["score"] for t in tasks] == sorted(p.score for p in preds)
    by_id = {t["data"]["image_id"]: t for t in tasks}
    assert by_id["img000"]["data"]["image"].startswith("data:image/jpeg;base64,")
    assert by_id["img001"]["data"]["image"] == "" and "image_problem" in by_id["img001"]["data"]
    assert by_id["img002"]["data"]["image"] == ""


# ------------------------------------------------------------------------------------------ against the server
def test_push_20_tweets_reads_back_exactly(ls_client, ls_project):
    preds = make_predictions(20)
    tasks = task_format.build_tasks(preds, None, "itjner-test", order="uncertainty")
    tasks[0]["data"]["image"] = task_format.image_data_url(jpeg_bytes())[0]
    pushed = ls_client.push_tasks(ls_project, tasks)
    assert len(pushed.created) == 20 and pushed.skipped == []
    assert ls_client.count_tasks(ls_project) == 20

    by_key = {t["data"]["itjner_key"]: p for t, p in zip(tasks, task_format.order_predictions(preds, "uncertainty"))}
    server = sorted((task_dict(t) for t in ls_client.list_tasks(ls_project, page_size=7)), key=lambda t: t["id"])
    assert len(server) == 20  # all three pages
    # created in the requested order: least confident first
    assert [t["predictions"][0]["score"] for t in server] == sorted(p.score for p in preds)
    assert server[0]["data"]["image"].startswith("data:image/jpeg;base64,")
    n_regions = 0
    for task in server:
        pred = by_key[task["data"]["itjner_key"]]
        tokens = pred.tweet.tokens
        assert task["data"]["tokens"] == tokens and task["data"]["text"] == " ".join(tokens)
        assert task["data"]["image_id"] == pred.tweet.image_id
        (sp,) = task["predictions"]
        assert sp["model_version"] == "itjner-test" and sp["score"] == pytest.approx(pred.score, abs=1e-12)
        offs = char_offsets(tokens)
        got = [(r["value"]["start"], r["value"]["end"], r["value"]["text"], r["value"]["labels"], r["score"])
               for r in sp["result"]]
        want = [(offs[e.start][0], offs[e.end - 1][1], " ".join(tokens[e.start:e.end]), [e.type], e.score)
                for e in pred.entities]
        assert got == want
        # and the regions map back to the predicted tags
        assert entities_to_bio(task_format.result_to_entities(tokens, sp["result"]), len(tokens)) == pred.tags
        n_regions += len(got)
    assert n_regions == sum(len(p.entities) for p in preds) > 20

    again = ls_client.push_tasks(ls_project, tasks)  # resend: idempotent
    assert again.created == [] and len(again.skipped) == 20 and ls_client.count_tasks(ls_project) == 20


def test_human_annotation_is_pulled_as_exact_conll(ls_server, ls_client, ls_project, tmp_path, monkeypatch):
    preds = make_predictions(4)
    tasks = task_format.build_tasks(preds, None, "itjner-test")
    ids = ls_client.push_tasks(ls_project, tasks).created
    sdk = ls_client.sdk
    t0, t1, t2 = (p.tweet.tokens for p in preds[:3])
    # task 0: the annotator keeps Barack Obama, retypes @JohnSmith as ORG, drops Paris, adds "today" as MISC
    sdk.annotations.create(id=ids[0], result=[region(t0, 1, 2, "ORG", "a"), region(t0, 3, 5, "PER", "b"),
                                              region(t0, 7, 8, "MISC", "c")], lead_time=3.5)
    # task 1: a first annotation, then a later one (the latest wins), then a skip (ignored)
    sdk.annotations.create(id=ids[1], result=[region(t1, 0, 4, "PER", "x")])
    time.sleep(1.1)
    sdk.annotations.create(id=ids[1], result=[region(t1, 0, 2, "PER", "y"), region(t1, 2, 4, "PER", "z")])
    sdk.annotations.create(id=ids[1], result=[], was_cancelled=True)
    # task 2: unicode tokens, annotated exactly like the prediction
    sdk.annotations.create(id=ids[2], result=[region(t2, 0, 1, "LOC", "u"), region(t2, 3, 4, "LOC", "v"),
                                              region(t2, 6, 7, "ORG", "w")])
    # task 3: not annotated -> not pulled

    expected = (
        "IMGID:img000\nRT\tO\n@JohnSmith\tB-ORG\n:\tO\nBarack\tB-PER\nObama\tI-PER\nvisits\tO\nParis\tO\ntoday\tB-MISC\n"
        "!\tO\n\n"
        "IMGID:img001\nKevin\tB-PER\nDurant\tI-PER\nStephen\tB-PER\nCurry\tI-PER\n#NBAFinals\tO\n\n"
        "IMGID:img002\nZürich\tB-LOC\n🇨🇭\tO\nund\tO\nGenève\tB-LOC\n—\tO\n«\tO\nNestlé\tB-ORG\n»\tO\n")
    tweets = ls_client.pull_annotations(ls_project)
    assert [t.meta["task_id"] for t in tweets] == ids[:3]
    assert format_conll(tweets) == expected
    assert format_conll(parse_conll(expected)) == expected
    for tweet, pred in zip(parse_conll(expected), preds):
        assert tweet.tokens == pred.tweet.tokens

    # the CLI writes the same file
    out = tmp_path / "corrected.txt"
    args = argparse.Namespace(url=ls_client.url, api_key=None, project=ls_project, out=str(out))
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls_server.token)
    assert ls_cli.cmd_pull(args) == 0
    assert out.read_text(encoding="utf-8") == expected


def test_correction_from_the_app_arrives_as_annotation_and_is_pulled(ls_client, ls_project):
    pred = make_predictions(1)[0]
    correction = [Entity(1, 2, "PER"), Entity(3, 5, "PER"), Entity(6, 7, "LOC"), Entity(7, 8, "MISC")]
    task = task_format.task_from_prediction(pred, jpeg_bytes(), "itjner-test", correction=correction)
    (task_id,) = ls_client.push_tasks(ls_project, [task]).created
    (server,) = [task_dict(t) for t in ls_client.list_tasks(ls_project)]
    assert server["id"] == task_id and server["data"]["itjner_origin"] == "user-correction"
    assert len(server["annotations"]) == 1 and len(server["predictions"]) == 1
    assert server["predictions"][0]["model_version"] == "itjner-test"
    (tweet,) = ls_client.pull_annotations(ls_project)
    assert tweet.tags == entities_to_bio(correction, len(pred.tweet.tokens))


def test_outbox_survives_a_server_outage_and_resends_exactly_once(ls_server_factory, tmp_path):
    server = ls_server_factory("outbox")
    client = ls_api.connect(server.url, server.token, timeout=10)
    project = client.create_project("outbox")
    server.stop()

    box = Outbox(tmp_path / "box")
    preds = make_predictions(4)
    corrections = [[Entity(0, 1, "PER")], [Entity(0, 2, "PER")], [], [Entity(0, 1, "ORG")]]
    tasks = [task_format.task_from_prediction(p, None, "itjner-test", correction=c) for p, c in zip(preds, corrections)]
    for task in tasks[:3]:
        box.enqueue(task, project)
    t0 = time.monotonic()
    down = box.flush(ls_api.LabelStudioClient(server.url, server.token, timeout=5))
    assert time.monotonic() - t0 < 10, "a dead server must fail fast"
    assert (down.sent, down.failed, down.pending) == (0, 3, 3)
    assert "unreachable" in down.error and box.status_line().startswith("3 queued: Label Studio at ")
    assert {i["last_reason"] for i in box.items()} == {"server down"}
    assert Outbox(tmp_path / "box").pending_count() == 3  # nothing lost: a restarted app sees the queue

    t0 = time.monotonic()
    server.start()
    restart_s = time.monotonic() - t0
    client = ls_api.connect(server.url, server.token)
    assert client.count_tasks(project) == 0
    up = box.flush(client)
    assert (up.sent, up.already, up.failed, up.pending, up.error) == (3, 0, 0, 0, None)
    assert client.count_tasks(project) == 3
    assert box.status_line() == "" and box.last_error is None

    again = box.flush(client)  # resend: nothing left to send
    assert (again.sent, again.pending) == (0, 0)
    for task in tasks[:3]:  # the user presses "send" again for the same corrections
        box.enqueue(task, project)
    assert box.flush(client).sent == 0 and client.count_tasks(project) == 3

    # a task the server created although its answer was lost (timeout) is found, not duplicated
    box.enqueue(tasks[3], project)
    client.import_tasks(project, [tasks[3]])
    lost = box.flush(client)
    assert (lost.sent, lost.already, lost.pending) == (0, 1, 0)
    assert client.count_tasks(project) == 4
    keys = [task_dict(t)["data"]["itjner_key"] for t in client.list_tasks(project)]
    assert sorted(keys) == sorted(t["data"]["itjner_key"] for t in tasks)
    print(f"\nLabel Studio restart on a migrated data dir: {restart_s:.1f} s")


def test_wrong_key_is_a_clear_error_and_keeps_the_queue(ls_server, tmp_path):
    wrong = "wrong-" + SECRET
    with pytest.raises(ls_api.LabelStudioAuthError) as err:
        ls_api.connect(ls_server.url, wrong)
    assert str(err.value).startswith(f"Label Studio at {ls_server.url} refused the API key")
    assert wrong not in str(err.value) and wrong not in repr(err.value)

    good = ls_api.connect(ls_server.url, ls_server.token)
    project = good.create_project("wrong key")
    box = Outbox(tmp_path / "box")
    box.enqueue(task_format.task_from_prediction(make_predictions(1)[0], None, "m", correction=[]), project)
    refused = box.flush(ls_api.LabelStudioClient(ls_server.url, wrong))
    assert (refused.sent, refused.pending) == (0, 1) and "refused the API key" in refused.error
    assert box.items()[0]["last_reason"] == "refused key"
    assert box.status_line().startswith("1 queued: Label Studio at ") and wrong not in box.status_line()
    assert wrong.encode() not in box.path.read_bytes()
    assert good.count_tasks(project) == 0
    assert box.flush(good).sent == 1 and good.count_tasks(project) == 1


def test_personal_access_token_works_too(ls_client):
    pat = ls_client.sdk.tokens.create().token  # a JWT refresh token; the SDK exchanges it for access tokens
    assert pat.count(".") == 2
    client = ls_api.connect(ls_client.url, pat)
    assert client.check()["email"] == "admin@example.com" and pat not in repr(client)


def test_exported_tasks_json_imports_into_the_server(ls_client, tmp_path):
    preds = make_predictions(6)
    images = tmp_path / "images"
    images.mkdir()
    (images / "img000.jpg").write_bytes(jpeg_bytes())
    (images / "img002.jpg").write_bytes(png_bytes())  # a PNG saved as .jpg is still sent as a PNG
    out = tmp_path / "tasks.json"
    task_format.export_tasks_json(preds, images, "itjner-export", out)
    project = ls_client.create_project("import from file")
    ls_client.sdk.projects.import_tasks(id=project, request=json.loads(out.read_text(encoding="utf-8")))
    server = sorted((task_dict(t) for t in ls_client.list_tasks(project)), key=lambda t: t["id"])
    assert len(server) == 6
    for task, pred in zip(server, preds):
        (sp,) = task["predictions"]
        assert sp["model_version"] == "itjner-export" and sp["score"] == pytest.approx(pred.score)
        assert [r["value"]["labels"][0] for r in sp["result"]] == [e.type for e in pred.entities]
        assert entities_to_bio(task_format.result_to_entities(task["data"]["tokens"], sp["result"]),
                               len(pred.tweet.tokens)) == pred.tags
    assert server[0]["data"]["image"].startswith("data:image/jpeg;base64,")
    assert server[2]["data"]["image"].startswith("data:image/png;base64,")
    assert server[1]["data"]["image"] == ""
    # an imported file can be re-pushed safely: every key is already there
    assert ls_client.push_tasks(project, json.loads(out.read_text(encoding="utf-8"))).created == []


class StubPredictor:
    model_version = "stub-1"

    def __init__(self):
        self.calls = []

    def predict(self, tweets, images_dir=None):
        self.calls.append((len(tweets), images_dir))
        by_text = {p.tweet.text: p for p in make_predictions(6)}
        return [by_text[t.text] for t in tweets]


def _cli(get_predictor):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    ls_cli.add_cli(sub, get_predictor)
    return parser


def test_cli_push_pull_and_export(ls_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls_server.token)
    data = tmp_path / "tweets.txt"
    data.write_text(format_conll([p.tweet for p in make_predictions(6)]), encoding="utf-8")
    stub = StubPredictor()
    parser = _cli(lambda ckpt: stub)

    args = parser.parse_args(["labelstudio", "push", "--url", ls_server.url, "--create", "cli", "--data", str(data),
                              "--order", "uncertainty", "--checkpoint", "ckpt"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "6 task(s) created" in out
    project = int(out.split("project ")[1].split()[0])
    client = ls_api.connect(ls_server.url, ls_server.token)
    server = sorted((task_dict(t) for t in client.list_tasks(project)), key=lambda t: t["id"])
    assert [t["predictions"][0]["score"] for t in server] == sorted(p.score for p in make_predictions(6))
    assert all(t["predictions"][0]["model_version"] == "stub-1" for t in server)

    args = parser.parse_args(["labelstudio", "push", "--url", ls_server.url, "--project", str(project),
                              "--data", str(data)])
    assert args.func(args) == 0 and "0 task(s) created, 6 already" in capsys.readouterr().out

    client.sdk.annotations.create(id=server[0]["id"], result=[])
    args = parser.parse_args(["labelstudio", "pull", "--url", ls_server.url, "--project", str(project),
                              "--out", str(tmp_path / "c.txt")])
    assert args.func(args) == 0
    (tweet,) = parse_conll((tmp_path / "c.txt").read_text(encoding="utf-8"))
    assert tweet.tags == ["O"] * len(tweet.tokens) and tweet.tokens == server[0]["data"]["tokens"]

    args = parser.parse_args(["export", "--format", "labelstudio", "--data", str(data), "--out",
                              str(tmp_path / "t.json")])
    assert args.func(args) == 0 and len(json.loads((tmp_path / "t.json").read_text())) == 6

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", SECRET)
    args = parser.parse_args(["labelstudio", "pull", "--url", ls_server.url, "--project", str(project),
                              "--out", str(tmp_path / "d.txt")])
    with pytest.raises(ls_api.LabelStudioAuthError) as err:
        args.func(args)
    assert SECRET not in str(err.value)


def test_cli_push_end_to_end_with_the_real_predictor(ls_server, tmp_path, monkeypatch, capsys, tiny_config):
    torch = pytest.importorskip("torch")
    from itjner.modeling_itjner import ITJNERModel
    from itjner.predict import Predictor

    torch.manual_seed(0)
    ITJNERModel.from_config(tiny_config).eval().save_pretrained(tmp_path / "ckpt", card={"data": "unit test"})
    data = tmp_path / "tweets.txt"
    tweets = [p.tweet for p in make_predictions(5)]
    data.write_text(format_conll(tweets), encoding="utf-8")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls_server.token)
    parser = _cli(lambda ckpt: Predictor.from_pretrained(ckpt))
    args = parser.parse_args(["labelstudio", "push", "--url", ls_server.url, "--create", "real model",
                              "--data", str(data), "--checkpoint", str(tmp_path / "ckpt"), "--order", "uncertainty"])
    assert args.func(args) == 0
    project = int(capsys.readouterr().out.split("project ")[1].split()[0])
    client = ls_api.connect(ls_server.url, ls_server.token)
    server = sorted((task_dict(t) for t in client.list_tasks(project)), key=lambda t: t["id"])
    assert len(server) == 5
    scores = [t["predictions"][0]["score"] for t in server]
    assert scores == sorted(scores) and all(0.0 <= s <= 1.0 for s in scores)
    from itjner.checkpoints import checkpoint_version

    version = checkpoint_version(tmp_path / "ckpt")  # name + short hash of the weights (issue 15)
    assert version.startswith("ckpt-") and len(version) == len("ckpt-") + 8
    assert {t["predictions"][0]["model_version"] for t in server} == {version}
    assert sorted(t["data"]["tokens"] for t in server) == sorted(t.tokens for t in tweets)
    for task in server:  # every region is a whole-word span with one of our labels
        tokens = task["data"]["tokens"]
        ents = task_format.result_to_entities(tokens, task["predictions"][0]["result"])
        assert len(ents) == len(task["predictions"][0]["result"])
        assert all(e.type in ("PER", "LOC", "ORG", "MISC") for e in ents)


def test_a_partial_repush_keeps_every_task_s_pre_annotation_visible(ls_client, ls_project):
    """Label Studio shows annotators only the predictions of the project's model version: pushing a subset with a
    new version must not switch the project to it while other tasks have none of its predictions."""
    preds = make_predictions(3)
    first = ls_client.push_tasks(ls_project, task_format.build_tasks(preds, None, "model-a"))
    assert len(first.created) == 3 and first.shown_version == "model-a"
    again = ls_client.push_tasks(ls_project, task_format.build_tasks(preds[:1], None, "model-b"))
    assert again.refreshed and again.shown_version == "model-a"
    assert "still shows the predictions of model-a: 2 of its 3 tasks have none of model-b" in str(again)
    assert ls_client.sdk.projects.get(id=ls_project).model_version == "model-a"
    shown = {task_dict(t)["id"]: {p["model_version"] for p in task_dict(t)["predictions"]}
             for t in ls_client.list_tasks(ls_project)}
    assert all("model-a" in versions for versions in shown.values())  # every task keeps a visible pre-annotation
    everything = ls_client.push_tasks(ls_project, task_format.build_tasks(preds, None, "model-b"))
    assert everything.shown_version == "model-b" and not everything.version_note
    assert ls_client.sdk.projects.get(id=ls_project).model_version == "model-b"
