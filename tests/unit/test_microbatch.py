"""The app's micro-batching: concurrent requests share one model call, each caller gets its own answer."""
import threading
import time

import pytest

from itjner.app.microbatch import MicroBatcher
from itjner.data import Prediction, Tweet


class SpyPredictor:
    """Tags each tweet with its own first word; records batch sizes; slow, so requests pile up meanwhile."""

    def __init__(self, delay=0.05):
        self.batches, self.delay = [], delay

    def predict(self, tweets, images, given_captions, details, digests=None):
        self.batches.append(len(tweets))
        time.sleep(self.delay)
        if any(t.tokens[0] == "boom" for t in tweets):
            raise ValueError("bad input")
        return [Prediction(t, [t.tokens[0]], [], 1.0, caption=c or "") for t, c in zip(tweets, given_captions)]


def run_concurrently(batcher, predictor, words):
    results = [None] * len(words)

    def one(i):
        try:
            results[i] = batcher.predict(predictor, Tweet(str(i), [words[i]]), None, f"cap{i}")
        except Exception as err:  # noqa: BLE001
            results[i] = err

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(words))]
    for t in threads:
        t.start()
        time.sleep(0.002)
    for t in threads:
        t.join()
    return results


def test_concurrent_requests_share_model_calls_and_get_their_own_answers():
    predictor = SpyPredictor()
    words = [f"w{i}" for i in range(12)]
    results = run_concurrently(MicroBatcher(), predictor, words)
    assert [r.tags[0] for r in results] == words and [r.caption for r in results] == [f"cap{i}" for i in range(12)]
    assert sum(predictor.batches) == 12 and max(predictor.batches) > 1 and len(predictor.batches) < 12


def test_a_bad_request_fails_alone():
    predictor = SpyPredictor(delay=0.02)
    words = ["a", "b", "boom", "c", "d", "e"]
    results = run_concurrently(MicroBatcher(), predictor, words)
    assert isinstance(results[2], ValueError)
    assert [r.tags[0] for i, r in enumerate(results) if i != 2] == ["a", "b", "c", "d", "e"]


def test_a_lone_request_runs_at_once():
    predictor = SpyPredictor(delay=0.0)
    started = time.perf_counter()
    pred = MicroBatcher().predict(predictor, Tweet("x", ["solo"]), None, None)
    assert pred.tags == ["solo"] and predictor.batches == [1] and time.perf_counter() - started < 0.5


@pytest.mark.parametrize("n", [1, 3])
def test_the_lock_is_held_around_model_calls(n):
    lock = threading.Lock()
    seen = []

    class LockSpy(SpyPredictor):
        def predict(self, *a, **k):
            seen.append(lock.locked())
            return super().predict(*a, **k)

    run_concurrently(MicroBatcher(lock), LockSpy(delay=0.01), [f"w{i}" for i in range(n)])
    assert seen and all(seen)


def test_the_after_hook_sees_each_whole_batch_under_the_lock_and_cannot_fail_it():
    lock = threading.Lock()
    seen = []

    def after(predictor, jobs, preds):
        seen.append((lock.locked(), [j.extra for j in jobs], [p.tags[0] for p in preds]))
        raise RuntimeError("a failing hook must not fail the predictions")

    batcher = MicroBatcher(lock, after=after)
    predictor = SpyPredictor()
    results = [None] * 8

    def one(i):
        results[i] = batcher.predict(predictor, Tweet(str(i), [f"w{i}"]), None, None, extra=f"x{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
        time.sleep(0.002)
    for t in threads:
        t.join()
    assert [r.tags[0] for r in results] == [f"w{i}" for i in range(8)]
    assert all(locked for locked, _, _ in seen) and max(len(extras) for _, extras, _ in seen) > 1
    assert sorted(x for _, extras, _ in seen for x in extras) == sorted(f"x{i}" for i in range(8))
    assert all([f"w{x[1:]}" for x in extras] == tags for _, extras, tags in seen)  # each job with its answer


def test_photos_of_a_batch_are_captioned_in_one_call_once_each(monkeypatch):
    """The app's photo captions: one captioner call for a batch's photos, a photo sent twice captioned once."""
    from PIL import Image

    from itjner.app.photo_caption import PhotoCaptioner
    from itjner.app.service import ImageInput
    from itjner.captioning.sources import CaptionResult
    from itjner.data import Prediction

    calls = []

    class Source:
        feature_backbone = "other"

        def caption(self, images=None, features=None):
            calls.append(len(images))
            return [CaptionResult(f"caption {i}", [[1 / 49] * 49], {"likely_poor": i == 0})
                    for i in range(len(images))]

    captioner = PhotoCaptioner(threading.Lock())
    monkeypatch.setattr(captioner, "source", lambda: Source())
    monkeypatch.setattr(type(captioner), "available", property(lambda self: True))
    photos = [ImageInput(data=bytes([i]), image=Image.new("RGB", (8, 8)), digest=f"d{i}") for i in range(3)]
    pred = Prediction(Tweet("x", ["w"]), ["O"], [], 1.0)
    predictor = type("P", (), {"config": type("C", (), {"image_backbone": "tiny-cnn"})()})()
    assert all(captioner.wanted(pred, p) for p in photos)
    captioner.caption_batch(predictor, photos + [photos[1]])
    assert calls == [3]
    assert not any(captioner.wanted(pred, p) for p in photos)
    shown = [captioner.for_prediction(pred, predictor, p) for p in photos]
    assert calls == [3] and [s.text for s in shown] == ["caption 0", "caption 1", "caption 2"]
    assert [s.likely_poor for s in shown] == [True, False, False] and not shown[0].read_by_model
