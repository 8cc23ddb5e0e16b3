"""Task images for the ML backend: fetched concurrently, refused by size before the download, named by their path in
messages (never a URL's query string), and not fetched at all for a model that reads no images."""
from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from fixtures.photos import png_bytes
from itjner.labelstudio.media import ImageFetchError, fetch_from_server, image_name, task_images

BIG = 30_000_000


class Server(http.server.ThreadingHTTPServer):
    def __init__(self):
        self.requests, self.in_flight, self.most_in_flight, self.sent = [], 0, 0, 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.requests.append(self.path)
            srv.in_flight += 1
            srv.most_in_flight = max(srv.most_in_flight, srv.in_flight)
        try:
            if self.path.startswith("/data/upload/big"):
                self.send_response(200)
                self.send_header("Content-Length", str(BIG))
                self.end_headers()
                for _ in range(BIG // 65536):  # slowly: a client reading it all would take ~20 s
                    self.wfile.write(b"\0" * 65536)
                    srv.sent += 65536
                    time.sleep(0.05)
            elif self.path.startswith("/data/upload/endless"):  # no Content-Length: the stream decides
                self.send_response(200)
                self.end_headers()
                for _ in range(BIG // 65536):
                    self.wfile.write(b"\0" * 65536)
            else:
                time.sleep(0.2)
                body = png_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with srv.lock:
                srv.in_flight -= 1


@pytest.fixture()
def server():
    srv = Server()
    yield srv
    srv.shutdown()


def test_an_oversized_image_is_refused_before_it_is_downloaded(server):
    with pytest.raises(ImageFetchError, match="30.0 MB, over the 20 MB limit: not downloaded"):
        fetch_from_server("/data/upload/big.jpg", server.url, "key")
    assert server.sent < 2_000_000  # at most what the socket buffered before the client hung up
    with pytest.raises(ImageFetchError, match="over the 20 MB limit: download stopped"):
        fetch_from_server("/data/upload/endless.jpg", server.url, "key")


def test_images_are_fetched_concurrently_in_order(server):
    datas = [{"image": f"/data/upload/p{i}.png"} for i in range(6)] + [{"image": "/data/upload/big.jpg"}]
    out = task_images(datas, server.url, "key")
    assert [blob == png_bytes() for blob, _ in out[:6]] == [True] * 6 and out[6][0] is None
    assert "not downloaded" in out[6][1] and server.most_in_flight >= 2


def test_messages_name_an_image_by_its_path_never_its_query():
    assert image_name("http://ls:8080/data/upload/3/photo.jpg?token=secret123") == "/data/upload/3/photo.jpg"
    assert image_name("/data/local-files/?d=imgs/a%20b.jpg") == "local file imgs/a b.jpg"
    assert image_name("data:image/png;base64,AAAA") == "data URL image/png"


@pytest.mark.parametrize("text_only", [True, False])
def test_the_backend_downloads_images_only_for_a_model_that_reads_them(server, tmp_path, tiny_config, text_only):
    import torch
    from fastapi.testclient import TestClient

    from itjner.labelstudio.backend import Backend, create_app
    from itjner.labelstudio.tasks import LABEL_CONFIG
    from itjner.modeling_itjner import ITJNERModel

    cfg = tiny_config.with_ablation(text_only=text_only)
    torch.manual_seed(0)
    ITJNERModel.from_config(cfg).save_pretrained(tmp_path / "ck")
    backend = Backend(tmp_path / "ck", versions_dir=tmp_path / "v", url=server.url, api_key="key")
    tasks = [{"id": i, "data": {"text": "Obama visits Paris", "image": f"/data/upload/p{i}.png"}} for i in range(4)]
    resp = TestClient(create_app(backend)).post("/predict", json={"tasks": tasks, "label_config": LABEL_CONFIG})
    assert resp.status_code == 200 and len(resp.json()["results"]) == 4
    assert len(server.requests) == (0 if text_only else 4)


def test_image_urls_with_their_query_strings_never_reach_the_log(server, tmp_path, tiny_config, caplog):
    import logging

    import torch
    from fastapi.testclient import TestClient

    from itjner.labelstudio.backend import Backend, create_app
    from itjner.labelstudio.tasks import LABEL_CONFIG
    from itjner.modeling_itjner import ITJNERModel

    torch.manual_seed(0)
    ITJNERModel.from_config(tiny_config).save_pretrained(tmp_path / "ck")
    backend = Backend(tmp_path / "ck", versions_dir=tmp_path / "v", url=server.url, api_key="key")
    tasks = [{"id": 1, "data": {"text": "Obama visits Paris", "image": f"{server.url}/data/upload/p.png?token=s3cret"}},
             {"id": 2, "data": {"text": "Obama visits Paris", "image": "/data/upload/missing?token=s3cret"}}]
    with caplog.at_level(logging.DEBUG):
        resp = TestClient(create_app(backend)).post("/predict", json={"tasks": tasks, "label_config": LABEL_CONFIG})
    assert resp.status_code == 200 and len(server.requests) == 2  # both fetched (the model reads images)
    assert "s3cret" not in caplog.text and "s3cret" not in json.dumps(backend.health())


def test_a_5000_character_task_is_tagged_to_its_end(tmp_path):
    """Texts longer than the encoder's input are tagged whole (windows), not cut at ~600 characters."""
    from fastapi.testclient import TestClient

    from itjner.checkpoints import LITE_CHECKPOINT
    from itjner.labelstudio.backend import Backend, create_app
    from itjner.labelstudio.tasks import LABEL_CONFIG

    text = " ".join(["Barack Obama visited Paris and London with Angela Merkel today ."] * 80)
    assert len(text) > 5000
    backend = Backend(LITE_CHECKPOINT, versions_dir=tmp_path / "v")
    resp = TestClient(create_app(backend)).post("/predict", json={"tasks": [{"id": 1, "data": {"text": text}}],
                                                                   "label_config": LABEL_CONFIG})
    spans = resp.json()["results"][0]["result"]
    assert max(r["value"]["end"] for r in spans) > len(text) - 70  # the last sentence's names too
    assert sum("Obama" in r["value"]["text"] for r in spans) >= 75  # nearly every one of the 80 repeats
