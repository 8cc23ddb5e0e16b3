"""The benchmark scripts run to the end (on tiny settings, so they cannot rot again): the inference bench, the app's
load test and the no-op Gradio floor it is compared with. Their numbers are not checked here; docs/benchmarks.md
gives the commands and the figures measured on a quiet machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fixtures.app_checkpoints import tiny_checkpoint_dir
from fixtures.paths import REPO

BENCH = REPO / "bench"

pytestmark = [pytest.mark.slow]


def run(script: str, *args: str, tmp_path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", ITJNER_CACHE=str(tmp_path / "cache"),
               ITJNER_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(REPO / "bench"))
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_the_inference_bench_reports_every_row(tmp_path):
    out = tmp_path / "bench.json"
    run("bench_inference.py", "--preset", "tiny", "--repeats", "2", "--batch", "16", "--precision", "fp32,bf16",
        "--json", str(out), tmp_path=tmp_path)
    res = json.loads(out.read_text())
    for precision in ("fp32", "bf16"):
        row = res[precision]
        assert row["one_tweet_ms"]["p50"] > 0 and row["batch_tweets_per_s"] > 0 and row["text_encoder_ms_p50"] > 0
        assert row["image_backbone_ms_p50"] > 0  # the tiny preset reads images
    assert res["train_step_ms_p50"] > 0 and res["peak_rss_mib"] > 0 and res["load_s"] > 0


def test_the_inference_bench_times_a_checkpoint_through_the_app_path(tmp_path_factory, tmp_path):
    out = tmp_path / "bench.json"
    ckpt = tiny_checkpoint_dir(tmp_path_factory)
    run("bench_inference.py", "--checkpoint", str(ckpt), "--app-path", "--repeats", "2", "--batch", "16",
        "--precision", "fp32", "--json", str(out), tmp_path=tmp_path)
    res = json.loads(out.read_text())
    assert res["fp32"]["app_path_ms"]["p50"] > 0 and "train_step_ms_p50" not in res


def test_the_load_test_and_its_floor_run_and_check_every_answer(tmp_path_factory, tmp_path):
    ckpt = tiny_checkpoint_dir(tmp_path_factory)
    load = run("load_test_app.py", "--checkpoint", str(ckpt), "--clients", "3", "--single", "2", "--threads", "1",
               "--json", str(tmp_path / "load.json"), tmp_path=tmp_path)
    stats = json.loads((tmp_path / "load.json").read_text())
    assert stats["ok"] == 3 and stats["requests_per_s"] > 0 and stats["photos"] == "new", load.stdout
    run("gradio_floor.py", "--clients", "3", "--single", "2", "--image-outputs", "1", "--json",
        str(tmp_path / "floor.json"), tmp_path=tmp_path)
    floor = json.loads((tmp_path / "floor.json").read_text())
    assert floor["failed"] == 0 and floor["requests_per_s"] > 0 and floor["image_outputs"] == 1


def test_the_load_tests_new_photos_are_new_to_the_app():
    """The burst's photos must be ones no earlier request sent (else the app answers their captions from its cache
    and the load test measures less work than 20 users' own photos cost), and look like the example images."""
    import hashlib
    import importlib.util

    import numpy as np
    from PIL import Image

    spec = importlib.util.spec_from_file_location("load_test_app", BENCH / "load_test_app.py")
    load_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load_test)
    images = load_test.images
    digest = lambda path: hashlib.sha256(path.read_bytes()).hexdigest()
    burst = images(6, "burst")
    earlier = images(6) + images(6, "sessions") + images(1, "first") + images(6, "alone")
    assert len({digest(p) for p in burst}) == 6 and not {digest(p) for p in burst} & {digest(p) for p in earlier}
    assert images(6, "burst") == burst  # the same run asks for the same files
    for new, seen in zip(burst, images(6)):
        a, b = np.asarray(Image.open(new), dtype=int), np.asarray(Image.open(seen).convert("RGB"), dtype=int)
        assert a.shape == b.shape and np.abs(a - b).mean() < 3


def test_the_cpu_budget_times_every_stage_of_a_burst(tmp_path_factory, tmp_path):
    ckpt = tiny_checkpoint_dir(tmp_path_factory)
    out = tmp_path / "budget.json"
    proc = run("app_cpu_budget.py", "--checkpoint", str(ckpt), "--photos", "3", "--rounds", "1", "--threads", "1",
               "--json", str(out), tmp_path=tmp_path)
    res = json.loads(out.read_text())
    assert list(res["stages"]) == ["read the uploads", "NER model (one micro-batch)",
                                   "caption the photos (features + beam search)", "caption heatmaps + JPEG"]
    assert res["captioned"] == 3  # every photo is new to the app: each one is captioned
    assert res["total_cpu_s"] > 0 and res["threads"] == 1 and "all of the app" in proc.stdout
