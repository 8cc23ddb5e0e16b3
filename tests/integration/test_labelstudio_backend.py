"""ITJNER as a Label Studio ML backend, driven by a real Label Studio 1.23.2 server: connect, "Retrieve
predictions", "Start training", bad input. The backend runs as `python -m itjner labelstudio serve` on 127.0.0.1."""
from __future__ import annotations

import base64
import os
import subprocess
import sys
import time

import httpx
import pytest

from fixtures.labelstudio_server import free_port
from fixtures.paths import REPO

from test_labelstudio import jpeg_bytes, png_bytes, region, task_dict

pytestmark = [pytest.mark.labelstudio]


class BackendProcess:
    def __init__(self, checkpoint, ls_server, versions, *extra, key=None, threads=1):
        """threads: OMP threads of the backend and of the retraining processes it starts."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(REPO), LABEL_STUDIO_API_KEY=key or ls_server.token,
                   OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE",
                   ITJNER_DATA_DIR=str(versions.parent / "data"))
        self.log_path = versions.parent / f"backend-{self.port}.log"
        self.token = ls_server.token
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "itjner", "labelstudio", "serve", "--checkpoint", str(checkpoint), "--port",
                 str(self.port), "--url", ls_server.url, "--versions", str(versions), "--epochs", "2", *extra],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                if httpx.get(self.url + "/health", timeout=2).json()["status"] == "UP":
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                time.sleep(0.5)
        raise RuntimeError("backend not up:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)


@pytest.fixture()
def checkpoint(tmp_path, tiny_config):
    import torch

    from itjner.modeling_itjner import ITJNERModel

    torch.manual_seed(0)
    ITJNERModel.from_config(tiny_config).eval().save_pretrained(tmp_path / "tiny-ls", card={"data": "unit test"})
    return tmp_path / "tiny-ls"


@pytest.fixture()
def backend(checkpoint, ls_server, tmp_path):
    proc = BackendProcess(checkpoint, ls_server, tmp_path / "versions")
    yield proc
    proc.stop()
    assert ls_server.token not in proc.log_path.read_text(errors="replace")  # the key is never logged


def _upload_image(ls_server, ls_client, blob: bytes) -> str:
    """An image uploaded to Label Studio (through an image-only project's import): its /data/upload/... path."""
    helper = ls_client.create_project("uploads", label_config='<View><Image name="i" value="$image"/></View>')
    resp = httpx.post(f"{ls_server.url}/api/projects/{helper}/import", files={"file": ("photo.jpg", blob)},
                      headers={"Authorization": f"Token {ls_server.token}"}, timeout=30)
    assert resp.status_code == 201, resp.text
    (task,) = [task_dict(t) for t in ls_client.list_tasks(helper)]
    assert task["data"]["image"].startswith("/data/upload/")
    return task["data"]["image"]


def _connect(ls_client, project, backend) -> int:
    ml = ls_client.sdk.ml.create(project=project, url=backend.url, title="ITJNER", is_interactive=True)
    return int(ml.id)


def _retrieve(ls_client, project):
    ls_client.sdk.actions.create(id="retrieve_tasks_predictions", project=project,
                                 selected_items={"all": True, "excluded": []})
    return sorted((task_dict(t) for t in ls_client.list_tasks(project)), key=lambda t: t["id"])


TEXTS = ["Barack Obama visits Paris with Angela Merkel", "RT @nasa : Launch from Texas tonight !",
         "Messi signs with Arsenal in London", "Taylor Swift live from Tokyo"]


def test_connect_predict_and_bad_input(ls_server, ls_client, ls_project, backend):
    ml_id = _connect(ls_client, ls_project, backend)
    ml = ls_client.sdk.ml.get(id=ml_id)
    assert ml.readable_state == "Connected" and ml.model_version == backend.health()["model_version"]
    uploaded = _upload_image(ls_server, ls_client, jpeg_bytes(size=(64, 48)))
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    images = [uploaded, data_url, "", "/data/upload/999/missing.jpg", ""]
    texts = TEXTS + [""]
    tasks = [{"data": {"text": t, "image": im, "image_id": f"x{i}"}} for i, (t, im) in
             enumerate(zip(texts, images + [""]))]
    ls_client.import_tasks(ls_project, tasks)
    server = _retrieve(ls_client, ls_project)
    version = backend.health()["model_version"]
    assert version.startswith("tiny-ls-")
    for task in server[:4]:  # uploaded, data URL, no image, broken URL: all tagged
        (pred,) = task["predictions"]
        assert pred["model_version"] == version and 0.0 <= pred["score"] <= 1.0
        for r in pred["result"]:
            v = r["value"]
            assert task["data"]["text"][v["start"]:v["end"]] == v["text"] and v["labels"][0] in (
                "PER", "LOC", "ORG", "MISC") and 0.0 <= r["score"] <= 1.0
    assert any(task["predictions"][0]["result"] for task in server[:4])  # a random tiny model still tags something
    problems = " ".join(backend.health()["recent_problems"])
    assert "missing.jpg answered HTTP" in problems and "empty" in problems and "tagged without the image" in problems
    # the uploaded image was fetched with the key: no problem reported for it
    assert f"task {server[0]['id']}:" not in problems and f"task {server[1]['id']}:" not in problems

    # unknown labeling config: refused at connect (Label Studio 1.23 shows only "400 ... /setup"; the reason is in
    # the answer's body and the backend log), not a crash later
    choices = '<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>'
    other = ls_client.create_project("no labels", label_config=choices)
    with pytest.raises(Exception) as err:
        _connect(ls_client, other, backend)
    assert "400 Client Error" in str(err.value) and "/setup" in str(err.value)
    setup = httpx.post(backend.url + "/setup", json={"project": "1.1", "schema": choices})
    assert setup.status_code == 400 and "needs a <Labels> tag" in setup.json()["error"]
    bad = httpx.post(backend.url + "/predict", json={"tasks": [{"data": {"text": "x"}}], "label_config": "<View/>"})
    assert bad.status_code == 400 and "Labels" in bad.json()["error"]
    assert httpx.post(backend.url + "/predict", content=b"not json").status_code == 400


def test_labels_are_mapped_by_name_to_the_projects_own_label_values(backend):
    config = ('<View><Labels name="ner" toName="tweet"><Label value="Person"/><Label value="Location"/>'
              '<Label value="Organization"/><Label value="Misc"/></Labels><Text name="tweet" value="$body"/></View>')
    tasks = [{"id": i, "data": {"body": t}} for i, t in enumerate(TEXTS)]
    resp = httpx.post(backend.url + "/predict", json={"tasks": tasks, "label_config": config}, timeout=60)
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert len(results) == len(TEXTS)
    labels = {r["value"]["labels"][0] for res in results for r in res["result"]}
    assert labels and labels <= {"Person", "Location", "Organization", "Misc"}
    assert all(r["from_name"] == "ner" and r["to_name"] == "tweet" for res in results for r in res["result"])


def _annotate(ls_client, project, n):
    # image ids "h0".."h3": at --heldout 0.5 the stable hash holds out the first two of these tweets, trains on two
    ids = ls_client.import_tasks(project, [{"data": {"text": t, "image": "", "image_id": f"h{i}"}}
                                           for i, t in enumerate(TEXTS[:n])])
    for task_id, text in zip(ids, TEXTS):
        tokens = text.split()
        ls_client.sdk.annotations.create(id=task_id, result=[region(tokens, 0, 2, "PER")])
    return ids


def wait_training(backend, timeout=240) -> dict:
    """The backend's training status once the job is over (accepted, rejected, skipped or failed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.health()["training"]
        if status["state"] not in ("training", "idle"):
            return status
        time.sleep(1)
    raise AssertionError("training did not finish:\n" + backend.log())


@pytest.mark.slow
def test_start_training_swaps_in_a_new_version(ls_server, ls_client, ls_project, checkpoint, tmp_path):
    # accept any version (the tiny random model cannot be judged): what is tested is the swap and its naming
    proc = BackendProcess(checkpoint, ls_server, tmp_path / "versions", "--min-gain", "-1000", "--heldout", "0.5",
                          "--min-heldout", "1")
    try:
        ml_id = _connect(ls_client, ls_project, proc)
        _annotate(ls_client, ls_project, 4)
        before = proc.health()["model_version"]
        ls_client.sdk.ml.train(id=ml_id)  # what the "Start training" button calls
        status = wait_training(proc)
        assert status["state"] == "accepted", status
        after = proc.health()["model_version"]
        assert after != before and after.startswith("tiny-ls-v1-")
        import json

        (row,) = json.loads((tmp_path / "versions" / "history.json").read_text())
        assert row["version"] == after and row["annotated"] == 4 and row["heldout"] >= 1 and "new" in row
        assert httpx.get(proc.url + "/versions").json()["versions"] == [before, after]  # named as predictions are
        ls_client.import_tasks(ls_project, [{"data": {"text": TEXTS[0], "image": "", "image_id": "new"}}])
        server = _retrieve(ls_client, ls_project)
        assert {p["model_version"] for p in server[-1]["predictions"]} == {after}
    finally:
        proc.stop()


@pytest.mark.slow
def test_a_failing_training_says_why_in_one_line(ls_server, ls_client, ls_project, checkpoint, tmp_path):
    broken = tmp_path / "broken-data"
    broken.mkdir()
    (broken / "train.txt").write_text("IMGID:1\nword\tB-NOPE\n")  # a tag no model knows
    proc = BackendProcess(checkpoint, ls_server, tmp_path / "v2", "--base-data", str(broken), "--heldout", "0.5",
                          "--min-heldout", "1")
    try:
        ml_id = _connect(ls_client, ls_project, proc)
        _annotate(ls_client, ls_project, 4)
        before = proc.health()["model_version"]
        ls_client.sdk.ml.train(id=ml_id)
        status = wait_training(proc)
        assert status["state"] == "failed" and "serving model stays" in status["reason"]
        assert "B-NOPE" in status["reason"] and "\n" not in status["reason"]  # the cause, in one line
        assert proc.health()["model_version"] == before
        server = _retrieve(ls_client, ls_project)
        assert all(p["model_version"] == before for t in server for p in t["predictions"])
        assert not list((tmp_path / "v2" / "jobs").iterdir())
    finally:
        proc.stop()


@pytest.mark.slow
def test_a_retrained_model_that_is_not_better_is_rejected(ls_server, ls_client, ls_project, checkpoint, tmp_path):
    proc = BackendProcess(checkpoint, ls_server, tmp_path / "v3", "--min-gain", "1000", "--heldout", "0.5",
                          "--min-heldout", "1")  # no model gains 1000 F1
    try:
        ml_id = _connect(ls_client, ls_project, proc)
        _annotate(ls_client, ls_project, 4)
        before = proc.health()["model_version"]
        ls_client.sdk.ml.train(id=ml_id)
        status = wait_training(proc)
        assert status["state"] == "rejected" and "serving model stays" in status["reason"]
        assert "a tie is not a gain" in status["reason"]
        assert proc.health()["model_version"] == before
        import json

        (row,) = json.loads((tmp_path / "v3" / "history.json").read_text())
        assert row["status"] == "rejected" and "heldout" in row["new"] and "heldout" in row["serving"]
        assert not any((tmp_path / "v3").glob("tiny-ls-v*")) and not list((tmp_path / "v3" / "jobs").iterdir())
    finally:
        proc.stop()
