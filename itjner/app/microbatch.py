"""Requests that arrive together are tagged in one model call.

The app's users send one tweet each; tagging them one by one leaves the model's batch dimension unused. A
`MicroBatcher` owns one worker thread: each request is queued with its predictor and inputs, and the worker takes
everything queued at that moment (no waiting window: a lone user pays nothing extra), groups it by predictor, and
runs one `Predictor.predict` per group. Under load, requests queue while a batch runs and the next batch takes them
all. Each caller gets its own result (or its own exception) back through a future.

A batch that fails is retried one request at a time, so one bad input cannot fail the others. `after(predictor,
jobs, predictions)`, when given, runs right after each batch inside the same lock: work that batches too (the app
captions the batch's photos there); its failure is logged and does not fail the predictions.
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..data import Prediction, Tweet

log = logging.getLogger("itjner.app")


@dataclass
class Job:
    predictor: object
    tweet: Tweet
    image: bytes | None
    caption: str | None
    digest: str | None = None
    extra: object = None  # what the `after` hook needs of this request (the app: its ImageInput)
    future: Future = field(default_factory=Future)


class MicroBatcher:
    def __init__(self, lock: threading.Lock | None = None, max_batch: int = 32, after=None):
        self.lock = lock or threading.Lock()  # held around every model call (shared with whole-file runs)
        self.max_batch, self.after = max_batch, after
        self._queue: queue.Queue[Job] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def predict(self, predictor, tweet: Tweet, image: bytes | None, caption: str | None,
                digest: str | None = None, extra=None) -> Prediction:
        """Tag one tweet (with details: attention maps, gate) together with whatever else is queued. digest: the
        image's sha256 when the caller has it; extra: handed to the `after` hook with the job."""
        job = Job(predictor, tweet, image, caption, digest, extra)
        self._ensure_worker()
        self._queue.put(job)
        return job.future.result()

    def _ensure_worker(self) -> None:
        with self._start_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="itjner-microbatch", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            groups: dict[int, list[Job]] = {}
            for job in jobs:
                groups.setdefault(id(job.predictor), []).append(job)
            for group in groups.values():
                self._tag(group)

    def _tag(self, jobs: list[Job]) -> None:
        try:
            with self.lock:
                preds = jobs[0].predictor.predict([j.tweet for j in jobs], images=[j.image for j in jobs],
                                                  given_captions=[j.caption for j in jobs], details=True,
                                                  digests=[j.digest for j in jobs])
                if self.after is not None:
                    try:
                        self.after(jobs[0].predictor, jobs, preds)
                    except Exception:  # noqa: BLE001 - the predictions stand; the caller can redo the extra work
                        log.exception("the work after a batch of %d failed", len(jobs))
        except BaseException as err:  # noqa: BLE001 - handed to the caller(s)
            if len(jobs) == 1:
                jobs[0].future.set_exception(err)
                return
            for job in jobs:  # isolate the failing request
                self._tag([job])
            return
        for job, pred in zip(jobs, preds):
            job.future.set_result(pred)
