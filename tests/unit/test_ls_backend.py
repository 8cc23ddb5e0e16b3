"""The ML backend in process (FastAPI TestClient): label config mapping, spans over the task's own text, basic auth,
the Label Studio key never in an answer. The real-server tests are in tests/integration/test_labelstudio_backend.py."""
from __future__ import annotations

import base64

import pytest

from itjner.labelstudio.backend import Backend, create_app, token_spans
from itjner.labelstudio.labelconfig import LabelConfigError, parse_label_config
from itjner.labelstudio.tasks import LABEL_CONFIG

KEY = "ls-key-0123456789-never-shown"


def test_label_config_maps_names_and_refuses_configs_without_entity_labels():
    cfg = parse_label_config(LABEL_CONFIG)
    assert (cfg.from_name, cfg.to_name, cfg.text_key, cfg.image_key) == ("label", "text", "text", "image")
    assert cfg.labels == {"PER": "PER", "LOC": "LOC", "ORG": "ORG", "MISC": "MISC"}
    other = parse_label_config('<View><Text name="t" value="$body"/><Labels name="l" toName="t">'
                               '<Label value="Person"/><Label value="GPE"/><Label value="Sentiment"/></Labels></View>')
    assert other.labels == {"Person": "PER", "GPE": "LOC"} and other.label_for("ORG") is None
    for bad in ("", "<View", '<View><Text name="t" value="$x"/></View>',
                '<View><Text name="t" value="$x"/><Labels name="l" toName="t"><Label value="Happy"/></Labels></View>'):
        with pytest.raises(LabelConfigError):
            parse_label_config(bad)


def test_token_spans_cut_the_tasks_own_text():
    text = "RT  @nasa: Launch from Texas tonight!!"
    from itjner.data import tokenize

    spans = token_spans(text, tokenize(text))
    assert [text[a:b] for a, b in spans] == tokenize(text)


@pytest.fixture()
def client(tmp_path, tiny_config):
    import torch
    from fastapi.testclient import TestClient

    from itjner.modeling_itjner import ITJNERModel

    torch.manual_seed(0)
    ITJNERModel.from_config(tiny_config).save_pretrained(tmp_path / "ck")
    backend = Backend(tmp_path / "ck", versions_dir=tmp_path / "v")
    return TestClient(create_app(backend, ("annotator", "pw")))


def _auth(user="annotator", pw="pw"):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


def test_basic_auth_and_the_key_never_comes_back(client):
    assert client.get("/health").status_code == 401
    assert client.get("/health", headers=_auth(pw="wrong")).status_code == 401
    setup = client.post("/setup", headers=_auth(), json={"project": "1.1", "schema": LABEL_CONFIG,
                                                         "hostname": "http://127.0.0.1:9", "access_token": KEY})
    # nothing answers on port 9: "Connect model" must fail (502), saying why, not show "Connected"
    assert setup.status_code == 502 and "unreachable" in setup.json()["error"]
    tasks = [{"id": 1, "data": {"text": "Obama visits Paris", "image": "data:image/png;base64,!!!notbase64"}},
             {"id": 2, "data": {"text": "  "}}, {"id": 3, "data": {"text": "x", "image": "http://evil.example/a.jpg"}}]
    resp = client.post("/predict", headers=_auth(), json={"tasks": tasks, "label_config": LABEL_CONFIG})
    assert resp.status_code == 200 and len(resp.json()["results"]) == 3
    health = client.get("/health", headers=_auth()).text
    assert "another host" in health and KEY not in health and KEY not in resp.text and KEY not in setup.text


def test_bad_requests_get_400_with_the_reason_and_failures_a_json_500(client, monkeypatch):
    post = lambda path, **kw: client.post(path, headers=_auth(), **kw)
    assert post("/predict", content=b"not json").json() == {"error": "the request body must be a JSON object"}
    assert post("/predict", content=b"not json").status_code == 400
    resp = post("/predict", json={"tasks": "nope"})
    assert resp.status_code == 400 and resp.json()["error"] == "'tasks' must be a list"
    resp = post("/train", json={"project": "x"})
    assert resp.status_code == 400 and "'project' must be" in resp.json()["error"]
    resp = post("/setup", json={"project": "1.1", "schema": "<View><Text name='t' value='$text'/></View>"})
    assert resp.status_code == 400 and "Labels" in resp.json()["error"]
    from itjner.labelstudio import backend as module

    monkeypatch.setattr(module.Backend, "versions", lambda self: 1 / 0)
    resp = client.get("/versions", headers=_auth())
    assert resp.status_code == 500 and resp.json() == {"error": "ZeroDivisionError: division by zero"}


def test_annotation_events_start_a_training_above_the_threshold(tmp_path, tiny_config, monkeypatch):
    import torch
    from fastapi.testclient import TestClient

    from itjner.modeling_itjner import ITJNERModel

    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    torch.manual_seed(0)
    ITJNERModel.from_config(tiny_config).save_pretrained(tmp_path / "ck")
    backend = Backend(tmp_path / "ck", versions_dir=tmp_path / "v", train_every=2)
    client = TestClient(create_app(backend))
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 7}, "annotation": {"id": 1}}
    assert client.post("/webhook", json=event).json()["status"] == "ok"
    assert backend.trainer.status["state"] == "idle"
    client.post("/webhook", json=event)  # the second one reaches the threshold: a training is asked for
    status = client.get("/health").json()["training"]
    assert status["state"] == "failed" and "no Label Studio URL or API key" in status["reason"]
