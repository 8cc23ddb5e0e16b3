"""Issue 15's push/pull defects, each against the real Label Studio server (fixtures in tests/fixtures/)."""
from __future__ import annotations

import json

import httpx
import pytest

from itjner.app import handoff
from itjner.data import Entity, entities_to_bio, format_conll, parse_conll, tokenize
from itjner.labelstudio import client as ls_api
from itjner.labelstudio import tasks as task_format
from itjner.labelstudio.outbox import Outbox

from test_labelstudio import StubPredictor, _cli, jpeg_bytes, make_predictions, png_bytes, region, task_dict

pytestmark = [pytest.mark.labelstudio]


def _tasks(client, project):
    return sorted((task_dict(t) for t in client.list_tasks(project)), key=lambda t: t["id"])


def _push(parser, url, *extra):
    args = parser.parse_args(["labelstudio", "push", "--url", url, *extra])
    assert args.func(args) == 0


def test_app_correction_lands_on_the_pushed_task_exactly_once(ls_server, ls_client, ls_project, tmp_path):
    pred = make_predictions(1)[0]  # RT @JohnSmith : Barack Obama visits Paris today !
    ls_client.push_tasks(ls_project, task_format.build_tasks([pred], None, "m-1"))
    box = Outbox(tmp_path / "box")
    first = [Entity(3, 5, "PER"), Entity(6, 7, "LOC")]  # the model also tagged @JohnSmith
    msgs = [handoff.send_to_label_studio(pred, None, first, "m-1", ls_project, ls_server.url, ls_server.token,
                                         outbox=box) for _ in range(2)]  # "Send" pressed twice: one annotation
    assert all(ls_server.token not in msg for msg in msgs)
    assert msgs[0].startswith("Queued your correction. Sent to Label Studio"), msgs[0]
    assert msgs[1] == f"Your correction is already in project {ls_project}: not sent again.", msgs[1]
    (task,) = _tasks(ls_client, ls_project)
    assert len(task["annotations"]) == 1 and len(task["predictions"]) == 1
    # a correction whose answer was lost: the annotation exists, the outbox item is still pending
    second = [Entity(3, 5, "PER"), Entity(6, 7, "LOC"), Entity(7, 8, "MISC")]
    item = task_format.task_from_prediction(pred, None, "m-1", correction=second)
    box.enqueue(item, ls_project)
    ls_client.add_correction(task["id"], task["data"]["tokens"], second, pred.tweet.tokens)
    result = box.flush(ls_api.connect(ls_server.url, ls_server.token))
    assert (result.sent, result.already, result.pending) == (0, 1, 0)
    (task,) = _tasks(ls_client, ls_project)
    assert len(task["annotations"]) == 2
    (tweet,) = ls_client.pull_annotations(ls_project)  # the latest submitted annotation wins
    assert tweet.tags == entities_to_bio(second, len(pred.tweet.tokens))


def test_correction_of_a_tweet_not_yet_pushed_creates_its_task_with_the_annotation(ls_server, ls_client, ls_project,
                                                                                   tmp_path):
    pred = make_predictions(2)[1]
    fix = [Entity(0, 2, "PER")]
    box = Outbox(tmp_path / "box")
    handoff.send_to_label_studio(pred, None, fix, "m-1", ls_project, ls_server.url, ls_server.token, outbox=box)
    ls_client.push_tasks(ls_project, task_format.build_tasks([pred], None, "m-1"))  # then a push: no second task
    (task,) = _tasks(ls_client, ls_project)
    assert len(task["annotations"]) == 1 and task["data"]["itjner_origin"] == "user-correction"


def test_pull_never_writes_a_tweet_twice(ls_server, ls_client, ls_project, tmp_path, capsys, monkeypatch):
    pred = make_predictions(1)[0]
    tokens = pred.tweet.tokens
    old_style = []  # what older versions made: the same tweet as two tasks (the correction was part of the key)
    for n in range(2):
        task = task_format.task_from_prediction(pred, None, "m-1")
        task["data"]["itjner_key"] = f"legacy-{n}"
        old_style.append(task)
    ids = ls_client.import_tasks(ls_project, old_style)
    ls_client.sdk.annotations.create(id=ids[0], result=[region(tokens, 3, 5, "PER")])
    ls_client.sdk.annotations.create(id=ids[1], result=[region(tokens, 3, 5, "ORG")])  # later: wins
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls_server.token)
    parser = _cli(lambda ckpt: StubPredictor())
    args = parser.parse_args(["labelstudio", "pull", "--url", ls_server.url, "--project", str(ls_project),
                              "--out", str(tmp_path / "c.txt")])
    assert args.func(args) == 0
    (tweet,) = parse_conll((tmp_path / "c.txt").read_text(encoding="utf-8"))
    assert tweet.tags == entities_to_bio([Entity(3, 5, "ORG")], len(tokens))
    assert "merged 1 duplicate task(s)" in capsys.readouterr().out


def test_push_create_reuses_the_project_of_that_title_or_refuses(ls_server, ls_client, tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls_server.token)
    data = tmp_path / "tweets.txt"
    data.write_text(format_conll([p.tweet for p in make_predictions(6)]), encoding="utf-8")
    parser = _cli(lambda ckpt: StubPredictor())
    for _ in range(2):
        _push(parser, ls_server.url, "--create", "rerun me", "--data", str(data))
    out = capsys.readouterr().out
    assert "created project" in out and "reusing project" in out and "0 task(s) created, 6 already" in out
    assert len(ls_client.projects_titled("rerun me")) == 1
    (project,) = ls_client.projects_titled("rerun me")
    assert ls_client.count_tasks(project) == 6
    twins = sorted(ls_client.create_project("twins") for _ in range(2))
    with pytest.raises(ls_api.LabelStudioError) as err:
        _push(parser, ls_server.url, "--create", "twins", "--data", str(data))
    assert f"{twins[0]}, {twins[1]}" in str(err.value) and "--project" in str(err.value)


class StubV2(StubPredictor):
    model_version = "stub-2"


def test_a_new_model_version_adds_its_predictions_to_existing_tasks(ls_server, ls_client, ls_project, tmp_path,
                                                                    monkeypatch, capsys):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls_server.token)
    data = tmp_path / "tweets.txt"
    data.write_text(format_conll([p.tweet for p in make_predictions(6)]), encoding="utf-8")
    _push(_cli(lambda ckpt: StubPredictor()), ls_server.url, "--project", str(ls_project), "--data", str(data))
    _push(_cli(lambda ckpt: StubV2()), ls_server.url, "--project", str(ls_project), "--data", str(data))
    assert "6 already in the project, 6 got predictions of the new model version" in capsys.readouterr().out
    _push(_cli(lambda ckpt: StubV2()), ls_server.url, "--project", str(ls_project), "--data", str(data))
    assert "0 got predictions" in capsys.readouterr().out  # a rerun adds nothing
    for task in _tasks(ls_client, ls_project):
        versions = sorted(p["model_version"] for p in task["predictions"])
        assert versions == ["stub-1", "stub-2"]
        a, b = sorted(task["predictions"], key=lambda p: p["model_version"])
        assert [r["value"] for r in a["result"]] == [r["value"] for r in b["result"]]
        assert [r.get("score") for r in a["result"]] == [r.get("score") for r in b["result"]]
    assert ls_client.sdk.projects.get(id=ls_project).model_version == "stub-2"


def test_checkpoint_versions_differ_by_content_not_just_by_name(tmp_path, tiny_config):
    import torch

    from itjner.checkpoints import checkpoint_version
    from itjner.modeling_itjner import ITJNERModel

    for seed, where in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        ITJNERModel.from_config(tiny_config).save_pretrained(tmp_path / where / "ckpt")
    va, vb = checkpoint_version(tmp_path / "a" / "ckpt"), checkpoint_version(tmp_path / "b" / "ckpt")
    assert va != vb and va.startswith("ckpt-") and vb.startswith("ckpt-")


def test_jsonl_text_and_another_tokenisation_keep_one_task(ls_server, ls_client, ls_project, tmp_path, monkeypatch,
                                                           capsys):
    text = "Dinner sauce.. &amp; 3, fries at @Nandos Leeds !"
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls_server.token)
    (tmp_path / "t.jsonl").write_text(json.dumps({"id": "42", "text": text}) + "\n", encoding="utf-8")

    class Echo(StubPredictor):
        def predict(self, tweets, images_dir=None):
            from itjner.data import Prediction

            return [Prediction(tweet=t, tags=["O"] * len(t.tokens), entities=[], score=0.5) for t in tweets]

    parser = _cli(lambda ckpt: Echo())
    _push(parser, ls_server.url, "--project", str(ls_project), "--data", str(tmp_path / "t.jsonl"))
    _push(parser, ls_server.url, "--project", str(ls_project), "--data", str(tmp_path / "t.jsonl"))
    # the same tweet tokenised otherwise (as in the Twitter releases, or by an older tokeniser)
    from itjner.data import Tweet

    for n, other in enumerate([text.split(), text.replace("&amp;", "&").replace("..", " . .").split()]):
        assert other != tokenize(text)
        (tmp_path / f"t{n}.txt").write_text(format_conll([Tweet("42", other)]), encoding="utf-8")
        _push(parser, ls_server.url, "--project", str(ls_project), "--data", str(tmp_path / f"t{n}.txt"))
    assert ls_client.count_tasks(ls_project) == 1
    assert capsys.readouterr().out.count("0 task(s) created, 1 already") == 3


def test_labeling_view_shows_the_text_first_and_a_height_capped_image(ls_client, ls_project):
    config = ls_client.sdk.projects.get(id=ls_project).label_config
    assert config.index("<Text ") < config.index("<Image ")
    image = config[config.index("<Image "):].split("/>")[0]
    assert 'maxHeight="' in image


def test_pull_writes_the_tasks_images_next_to_the_conll(ls_server, ls_client, ls_project, tmp_path, monkeypatch):
    preds = make_predictions(3)
    blobs = {"img000": jpeg_bytes(), "img001": png_bytes()}
    images = tmp_path / "in"
    images.mkdir()
    for name, blob in blobs.items():
        (images / f"{name}.jpg").write_bytes(blob)
    tasks = task_format.build_tasks(preds, images, "m-1")
    ids = ls_client.push_tasks(ls_project, tasks).created
    for task_id in ids:
        ls_client.sdk.annotations.create(id=task_id, result=[])
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls_server.token)
    args = _cli(None).parse_args(["labelstudio", "pull", "--url", ls_server.url, "--project", str(ls_project),
                                  "--out", str(tmp_path / "out" / "c.txt"), "--images", str(tmp_path / "out" / "img")])
    (tmp_path / "out").mkdir()
    assert args.func(args) == 0
    written = {p.stem: p.read_bytes() for p in (tmp_path / "out" / "img").iterdir()}
    assert written == blobs  # the tweet without an image has none; bytes as sent


def test_local_files_images_instead_of_base64(ls_server, ls_client, ls_project, tmp_path, monkeypatch):
    preds = make_predictions(2)
    images = ls_server.data_dir / "media" / "tweets"  # under Label Studio's local-files document root
    images.mkdir(parents=True, exist_ok=True)
    big = jpeg_bytes(size=(900, 700))
    (images / "img000.jpg").write_bytes(big)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls_server.token)
    data = tmp_path / "tweets.txt"
    data.write_text(format_conll([p.tweet for p in preds]), encoding="utf-8")

    class Two(StubPredictor):
        def predict(self, tweets, images_dir=None):
            return preds

    _push(_cli(lambda ckpt: Two()), ls_server.url, "--project", str(ls_project), "--data", str(data), "--images",
          str(images), "--images-as", "local-files", "--document-root", str(ls_server.data_dir))
    first, second = _tasks(ls_client, ls_project)
    assert first["data"]["image"].startswith("/data/local-files/?d=") and second["data"]["image"] == ""
    assert len(json.dumps(first["data"])) < 1000
    resp = httpx.get(ls_server.url + first["data"]["image"], headers={"Authorization": f"Token {ls_server.token}"})
    assert resp.status_code == 200 and resp.content == big


def test_app_tweets_with_one_text_and_two_photos_keep_their_own_tasks_and_images(ls_server, ls_client, ls_project,
                                                                                  tmp_path_factory, tmp_path,
                                                                                  monkeypatch):
    """The app names a tweet's image by its content: two photos sent with the same text are two tasks, and
    `pull --images` writes both photos (they all used to be IMGID "app", one task and one app.jpg)."""
    from fixtures.app_checkpoints import tiny_checkpoint_dir
    from itjner.app.service import PredictService

    service = PredictService(tiny_checkpoint_dir(tmp_path_factory), "cpu", cache_dir=tmp_path / "features")
    box, sent = Outbox(tmp_path / "box"), {}
    for name, blob in (("red", jpeg_bytes((200, 30, 30))), ("blue", jpeg_bytes((30, 30, 200)))):
        (tmp_path / f"{name}.jpg").write_bytes(blob)
        res = service.predict("Obama visits Paris", str(tmp_path / f"{name}.jpg"))
        sent[res.prediction.tweet.image_id] = res.image.data
        handoff.send_to_label_studio(res.prediction, res.image.data, [Entity(0, 1, "PER")], "m-1", ls_project,
                                     ls_server.url, ls_server.token, outbox=box)
    assert len(sent) == 2 and all(key.startswith("app-") for key in sent)
    assert service.predict("Obama visits Paris", str(tmp_path / "red.jpg")).prediction.tweet.image_id in sent
    assert len(_tasks(ls_client, ls_project)) == 2
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls_server.token)
    out = tmp_path / "out"
    out.mkdir()
    args = _cli(None).parse_args(["labelstudio", "pull", "--url", ls_server.url, "--project", str(ls_project),
                                  "--out", str(out / "c.txt"), "--images", str(out / "img")])
    assert args.func(args) == 0
    assert {p.stem: p.read_bytes() for p in (out / "img").iterdir()} == sent
