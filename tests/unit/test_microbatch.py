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
