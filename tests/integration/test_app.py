"""The demo app's logic (itjner/app/, itjner/heatmap.py) and its Gradio API, in process, on a tiny checkpoint
trained here in seconds (random backbones, so the numbers mean nothing; the plumbing is what is tested)."""
import io
import json
import os
import socket
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures.app_checkpoints import synthetic_tweets, text_only_checkpoint_dir, tiny_checkpoint_dir  # noqa: F401
from fixtures.paths import EXAMPLES
XSS = "<img src=x onerror=alert(1)>"

@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    return tiny_checkpoint_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def service(tiny_ckpt, tmp_path_factory):
    import torch

    from itjner.app.service import PredictService

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as app.py --threads 1: the tiny model is far faster on one thread of a busy machine
    yield PredictService(tiny_ckpt, "cpu", cache_dir=tmp_path_factory.mktemp("features"))
    torch.set_num_threads(threads)


def png_bytes(size=(320, 200), colour="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- input checks
def test_text_checks():
    from itjner.app.service import MAX_CHARS, tokens_from_text
    from itjner.app.messages import UserError

    with pytest.raises(UserError, match="Type the tweet"):
        tokens_from_text("   ")
    with pytest.raises(UserError, match=f"at most {MAX_CHARS}"):
        tokens_from_text("word " * 500)
    assert tokens_from_text(f"Hi {XSS}!") == ["Hi", "<img", "src=x", "onerror=alert(1)>", "!"]


def test_image_checks(tmp_path):
    from itjner.app.service import read_image_file

    assert read_image_file(None).problem == "no image"
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    res = read_image_file(bad)
    assert res.problem.startswith("not a readable image") and res.image is None
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 5000)).save(bomb)  # 45 Mpx: over the 40 Mpx guard, a few kB on disk
    assert "too large" in read_image_file(bomb).problem
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * 2_000_001)
    assert "too large" in read_image_file(big, max_mb=2).problem
    ok = tmp_path / "ok.png"
    ok.write_bytes(png_bytes((1200, 300)))
    res = read_image_file(ok)
    assert res.problem is None and res.image.size == (512, 128) and res.data == ok.read_bytes()
    small = tmp_path / "small.png"
    small.write_bytes(png_bytes((224, 112)))
    assert read_image_file(small).image.size == (512, 256)  # thumbnails are shown larger


def test_checkpoint_folder_checks(service, tmp_path):
    from itjner.app.messages import UserError

    with pytest.raises(UserError, match="not found"):
        service.resolve(str(tmp_path / "nope"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="not an ITJNER checkpoint.*model.safetensors"):
        service.resolve(str(tmp_path))


# ------------------------------------------------------------------------------------------------ highlights
def test_highlight_values_and_corrections_offer_only_the_four_types():
    from itjner.app.messages import UserError
    from itjner.app.views import (CORRECTION_TYPES, NOT_AN_ENTITY, apply_correction, highlight_value, token_choices,
                                  words_of_span)
    from itjner.data import Entity, Prediction, Tweet

    tokens = ["Obama", "visits", "New", "York", XSS]
    ents = [Entity(0, 1, "PER", 0.91), Entity(2, 4, "LOC", 0.55)]
    value = highlight_value(tokens, ents)
    assert value["text"] == " ".join(tokens)
    assert [e["entity"] for e in value["entities"]] == ["PER 0.91", "LOC 0.55"]
    assert CORRECTION_TYPES == ["PER", "LOC", "ORG", "MISC", NOT_AN_ENTITY]
    # "New York" relabelled ORG: the new span has no model score and says so
    fixed = apply_correction(ents, [2, 3], "ORG", len(tokens))
    assert fixed == [Entity(0, 1, "PER", 0.91), Entity(2, 4, "ORG")]
    assert [e["entity"] for e in highlight_value(tokens, fixed)["entities"]] == ["PER 0.91", "ORG edited"]
    # the heatmap's word list follows the correction
    pred = Prediction(Tweet("x", tokens), ["B-PER", "O", "B-LOC", "I-LOC", "O"], ents, 0.5)
    assert token_choices(pred, fixed)[1] == ("[ORG] New York", "e:2:4")
    # a span over part of an entity replaces it; "not an entity" removes
    assert apply_correction(fixed, [3], "MISC", len(tokens)) == [Entity(0, 1, "PER", 0.91), Entity(3, 4, "MISC")]
    assert apply_correction(fixed, [0], NOT_AN_ENTITY, len(tokens)) == [Entity(2, 4, "ORG")]
    for words, etype, match in (([1, 3], "PER", "consecutive"), ([], "PER", "Pick the word"),
                                ([1], "LABEL", "Choose a type"), ([1], "location", "Choose a type"),
                                ([9], "PER", "not in this tweet")):
        with pytest.raises(UserError, match=match):
            apply_correction(ents, words, etype, len(tokens))
    # a click on the second span (segment 3: text, PER, text, LOC, ...) picks its words
    assert words_of_span(tokens, ents, 3, ["New York", "LOC 0.55"]) == [2, 3]
    assert words_of_span(tokens, ents, 2, [" visits ", None]) == []


# ---------------------------------------------------------------------------------------------------- heatmap
def test_grid_maps_onto_the_real_aspect_ratio():
    from itjner.heatmap import CMAP, attention_grid, colour_scale, overlay, upsample

    attn = np.zeros((2, 3, 49), np.float32)
    attn[0, 1, 12] = 1.0  # head 0, word 1 looks at region 12 = row 1, column 5
    attn[1, 1, 40] = 1.0  # head 1 at region 40 = row 5, column 5
    grid = attention_grid(attn, [1], head=0)
    assert grid.shape == (7, 7) and grid[1, 5] == 1.0
    assert attention_grid(attn, [1])[5, 5] == 0.5  # mean of heads
    values = upsample(grid, (350, 140), smooth=False)
    ys, xs = np.nonzero(values)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (250, 300, 20, 40)
    base = Image.new("RGB", (350, 140), "black")
    pic = overlay(base, grid, alpha=1.0, smooth=False, grid_lines=False)
    assert pic.size == (350, 140)
    hot, cold = np.asarray(pic)[30, 275], np.asarray(pic)[100, 50]
    scale = colour_scale(CMAP)  # the legend's colours: the map's largest weight is the scale's top
    assert tuple(hot) == tuple(scale[255]) and tuple(cold) == tuple(scale[0])
    grey = overlay(Image.new("RGB", (350, 140), (200, 200, 200)), grid, alpha=0.5, smooth=False, grid_lines=False)
    mixed = np.asarray(grey, dtype=int)[30, 275]  # half the picture, half the colour
    assert np.abs(mixed - (200 + scale[255].astype(int)) / 2).max() <= 1
    assert overlay(Image.new("RGB", (1000, 400)), grid).size == (512, 205)  # real aspect ratio, no baked-in margins
    with pytest.raises(ValueError):
        attention_grid(attn, [1], head=2)


# ---------------------------------------------------------------------------------------------------- service
def count_backbone_runs(predictor):
    backbone = predictor.inputs.image_backbone
    calls = {"n": 0}
    for name in ("features",):  # every CNN pass goes through features()
        original = getattr(backbone, name)

        def wrapped(*a, _orig=original, **k):
            calls["n"] += 1
            return _orig(*a, **k)

        setattr(backbone, name, wrapped)
    return calls


def test_predict_heatmap_and_no_backbone_rerun(service, tmp_path):
    from itjner.app import views

    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes((400, 240), "navy"))
    calls = count_backbone_runs(service.predictor())
    first = service.predict("Obama visits Paris today", str(image))
    assert calls["n"] >= 1
    after_first = calls["n"]
    pred = first.prediction
    assert pred.image_problem is None and first.image.problem is None
    q = pred.details["Q"]
    assert q.shape[1:] == (len(pred.tweet.tokens), 49)
    choices = views.token_choices(pred)
    assert ("#2 Paris", "w:2") in choices
    a = views.render_heatmap(pred, first.image.image, "w:0")
    b = views.render_heatmap(pred, first.image.image, "w:2")
    c = views.render_heatmap(pred, first.image.image, "w:2", views.MAP_Q, "head 1")
    a, b, c = a.picture, b.picture, c.picture
    assert a.size == b.size and a.tobytes() != b.tobytes() and b.tobytes() != c.tobytes()
    legend = views.heatmap_html(views.render_heatmap(pred, first.image.image, "w:2"))
    assert "Q · \u201cParis\u201d" in legend and "linear-gradient" in legend
    gate = views.gate_rows(pred)
    assert [row[0] for row in gate][:3] == ["#0 Obama", "#1 visits", "#2 Paris"] and 0 <= gate[2][1] <= 1
    assert views.gate_html(gate).count('class="itjner-gate-bar"') == len(pred.tweet.tokens)
    # edited text, same image: the CNN does not run again
    second = service.predict("Obama visits London today", str(image))
    assert calls["n"] == after_first and not second.cached
    again = service.predict("Obama visits London today", str(image))
    assert again.cached and again.prediction is second.prediction
    assert "ms" in views.status_message(second)


def test_missing_and_broken_images_fall_back_to_text(service, tmp_path):
    from itjner.app import messages, views

    res = service.predict("Obama visits Paris", None)
    assert res.image.problem == "no image"
    assert "Image not used (no image)" in views.status_message(res)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"GIF89a garbage")
    res = service.predict("Obama visits Paris", str(broken))
    assert "not a readable image" in views.status_message(res)
    with pytest.raises(messages.UserError):
        service.predict("", None)


def test_text_only_checkpoint_says_image_is_ignored(service, tmp_path_factory):
    from itjner.app import views

    folder = text_only_checkpoint_dir(tmp_path_factory)
    res = service.predict("Obama visits Paris", str(EXAMPLES / "map.jpg"), checkpoint=str(folder))
    assert not res.uses_image
    assert "the image does not influence its predictions" in views.status_message(res)
    assert views.map_sources(res.prediction) == [] and views.gate_rows(res.prediction) is None


def test_label_studio_queue_when_server_is_down(service, tmp_path, monkeypatch):
    from itjner.app import handoff, messages, views
    from itjner.labelstudio.outbox import Outbox

    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    pred = service.predict("Obama visits Paris", None).prediction
    box = Outbox(tmp_path / "outbox")
    msg = handoff.send_to_label_studio(pred, None, pred.entities, "tiny", 3, url="http://127.0.0.1:9", api_key="",
                                       outbox=box)
    assert msg.startswith("Queued the prediction. 1 queued:") and "API key" in msg
    with sock_closed_port() as port:
        secret = "sekret-token-4242"
        edited = views.apply_correction(pred.entities, [0], "ORG", len(pred.tweet.tokens))
        msg = handoff.send_to_label_studio(pred, png_bytes(), edited, "tiny", 3, url=f"http://127.0.0.1:{port}",
                                      api_key=secret, outbox=box)
    assert "2 queued:" in msg and "unreachable" in msg and secret not in msg, msg
    with sqlite3.connect(box.path) as con:
        tasks = [json.loads(row[0]) for row in con.execute("SELECT task FROM outbox ORDER BY id")]
    assert "annotations" not in tasks[0] and tasks[0]["data"]["itjner_origin"] == "model"
    assert tasks[1]["annotations"][0]["result"][0]["value"]["labels"] == ["ORG"]
    assert secret not in json.dumps(tasks)
    with pytest.raises(messages.UserError, match="project id"):
        handoff.send_to_label_studio(pred, None, pred.entities, "tiny", None, outbox=box)


class sock_closed_port:
    """A local port nothing listens on."""

    def __enter__(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *exc):
        return False


def test_analysis_and_export(service, tiny_ckpt, tmp_path):
    from itjner.app import messages, runs
    from itjner.data import write_conll

    split = tmp_path / "test.txt"
    write_conll(synthetic_tweets(6, 5), split)
    seen = []
    run = runs.run_analysis(service, str(split), str(EXAMPLES), None, None, progress=lambda f, d: seen.append(f),
                          chunk=4)
    assert seen[0] == 0 and seen[-1] == 1.0 and len(seen) == 3
    assert len(run.result.rows) == 6 and Path(run.jsonl).is_file()
    assert len(Path(run.jsonl).read_text().splitlines()) == 6
    table = runs.error_table(run.result.error_rows)
    assert all(len(r) == len(runs.ERROR_HEADERS) for r in table)
    with pytest.raises(messages.UserError, match="No CoNLL file"):
        runs.run_analysis(service, str(tmp_path / "missing.txt"), None, None, None)
    tweets = tmp_path / "tweets.jsonl"
    tweets.write_text(json.dumps({"id": "map", "text": "Flooding in London tonight"}) + "\n")
    path, n = runs.run_export(service, str(tweets), str(EXAMPLES), None, None)
    tasks = json.loads(Path(path).read_text())
    assert n == 1 and tasks[0]["data"]["image"].startswith("data:image/jpeg;base64,")


# ------------------------------------------------------------------------------------------------ gradio API
@pytest.fixture(scope="module")
def live_app(service):
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import itjner.app as app_module

    demo = app_module.build_demo(service)
    demo.queue(default_concurrency_limit=4)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
                            max_file_size="25mb")
    yield url
    demo.close()


def test_gradio_api_predict(live_app):
    from gradio_client import Client, handle_file

    from itjner.app.tab_predict import PREDICT_API_OUTPUTS

    def predict(*args):
        return dict(zip(PREDICT_API_OUTPUTS, client.predict(*args, api_name="/predict"), strict=True))

    client = Client(live_app, verbose=False)
    out = predict(handle_file(str(EXAMPLES / "stage.jpg")), f"Obama visits Paris {XSS}", "", None, "default")
    status, highlighted, raw = out["status"], out["entities"], out["json"]
    token, heat, legend = out["token"], out["heatmap"], out["legend"]
    assert "linear-gradient" in legend and "&lt;img" not in legend  # the legend names the first entity
    assert "entit" in status and "Image not used" not in status
    assert raw["tokens"][3:] == ["<img", "src=x", "onerror=alert(1)>"]
    text = "".join(seg["token"] for seg in highlighted["value"])
    assert text == " ".join(raw["tokens"])
    assert Path(heat).is_file() and Image.open(heat).size[0] > 300
    assert [c[1] for c in token["choices"]][-1] == f"w:{len(raw['tokens']) - 1}"
    out = predict(None, "  ", "", None, "default")
    assert "Type the tweet" in out["status"] and "Type the tweet" in out["json"]["error"]
    out = predict(None, "Obama", "", str(EXAMPLES), "default")
    assert "not an ITJNER checkpoint" in out["json"]["error"]
    out = predict(None, "a " * 1200, "", None, "default")
    assert "at most 2000" in out["json"]["error"]


def test_gradio_api_analyse_and_export(live_app, tmp_path):
    from gradio_client import Client

    from itjner.data import write_conll

    split = tmp_path / "test.txt"
    write_conll(synthetic_tweets(5, 3), split)
    client = Client(live_app, verbose=False)
    from itjner.app.tab_analysis import ANALYSE_API_OUTPUTS

    def analyse(*args):
        return dict(zip(ANALYSE_API_OUTPUTS, client.predict(*args, api_name="/analyse"), strict=True))

    out = analyse(str(split), str(EXAMPLES), None, "overlap")
    assert "5 tweets" in out["summary"] and out["scores"]["headers"][:4] == ["type", "P", "R", "F1"]
    assert len(Path(out["jsonl"]).read_text().splitlines()) == 5
    # a failed run says why in the tab's status line (not a vanishing toast) and leaves no stale results behind
    out = analyse(str(tmp_path / "missing.txt"), "", None, "exact")
    assert "No CoNLL file" in out["summary"] and out["jsonl"] is None and out["confusion"] is None
    assert not out["table"]["data"]
    tweets = tmp_path / "tweets.csv"
    tweets.write_text("id,text\nmap,Flooding in London tonight\nstage,Drake live tonight\n")
    path, message = client.predict(str(tweets), "", None, "uncertainty", api_name="/export")
    assert len(json.loads(Path(path).read_text())) == 2 and "2 task(s)" in message
    path, message = client.predict(str(tmp_path / "nope.csv"), "", None, "file", api_name="/export")
    assert path is None and "No file at" in message and "task(s)" not in message


def test_path_tabs_off_on_public_interface(service):

    import itjner.app as app_module

    demo = app_module.build_demo(service, server_paths=False)
    fn = next(d.fn for d in demo.fns.values() if d.api_name == "analyse")
    out = {block.elem_id: value for block, value in fn("/etc/passwd", "", None, "exact").items()}
    # the message (Markdown-escaped) in the tab's status line, and no results file
    assert "allow\\-server\\-paths" in out["analysis-summary"] and out["analysis-jsonl"] is None


def test_cli_refuses_missing_checkpoint(tmp_path, capsys):
    import itjner.app as app_module

    assert app_module.main(["--checkpoint", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "No ITJNER checkpoint" in err and "itjner train" in err


def test_caption_sources_and_override(service):
    from types import SimpleNamespace

    from itjner.app import messages, service as app_service

    if not service.predictor().config.use_caption:
        pytest.skip("itjner.captioning.sources is absent: the tiny checkpoint was trained without captions")
    image = str(EXAMPLES / "emblem.jpg")
    given = service.predict("Arsenal unveil new crest", image, "a red and blue crest")
    assert given.prediction.caption == "a red and blue crest" and not given.notes
    none = service.predict("Arsenal unveil new crest", image, "")
    assert none.prediction.caption == ""
    with pytest.raises(messages.UserError, match="caption source"):
        service.predict("Arsenal unveil new crest", image, caption_source="nonsense:source")
    cfg = SimpleNamespace(use_caption=True, caption_source="tags")
    assert "only by the `given` caption source" in app_service.override_notes(cfg, None, "alt text")[0]
    assert app_service.override_notes(cfg, "given", "alt text") == [] and app_service.override_notes(cfg, None, "") == []
    assert "does not read captions" in app_service.override_notes(SimpleNamespace(use_caption=False), None, "x")[0]


def test_caption_words_each_have_their_heatmap():
    from itjner.app import views
    from itjner.app.messages import UserError
    from itjner.app.photo_caption import PhotoCaption

    photo = PhotoCaption("a red crest", [list(np.eye(49)[3]), None, list(np.eye(49)[45])], read_by_model=False)
    assert views.caption_word_choices(photo) == [("1. a", "0"), ("3. crest", "2")]  # "red" has no map
    picture = Image.new("RGB", (300, 200))
    first = views.render_caption_heatmap(photo, picture, None)
    other = views.render_caption_heatmap(photo, picture, "2")
    assert first.picture.size == (300, 200) and first.picture.tobytes() != other.picture.tobytes()
    assert "\u201ccrest\u201d" in other.title
    with pytest.raises(UserError):
        views.render_caption_heatmap(photo, picture, "1")
    assert views.render_caption_heatmap(photo, None, "0") is None and views.caption_word_choices(None) == []


def test_a_caption_source_that_cannot_load_is_refused(service, tmp_path_factory):
    from itjner.app.messages import UserError

    with pytest.raises(UserError, match="Cannot use the caption source 'lstm:/nonexistent'"):
        service.predict("Obama visits Paris", None, caption_source="lstm:/nonexistent")
    with pytest.raises(UserError, match="unknown caption source"):
        service.predict("Obama visits Paris", None, caption_source="telepathy")
    assert service.predict("Obama visits Paris", None).prediction.tags  # the service still answers
    text_only = str(text_only_checkpoint_dir(tmp_path_factory))
    assert "reads no captions" in service.caption_source_note(text_only, None)
    assert service.caption_source_note(None, None) == ""  # the tiny model reads captions
