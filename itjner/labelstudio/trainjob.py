"""Retraining for the ML backend: a background process pulls the project's annotations, fine-tunes the serving
checkpoint, evaluates old and new on a held-out share, and the backend swaps the new one in only if it is no worse.

`Trainer.start(project)` spawns the job (a fresh process: training never blocks `/predict`, and a crash in it
cannot take the server down); a watcher thread waits for it, then moves the accepted checkpoint into the versions
folder (a rename: atomic) and tells the backend to load it. Every job leaves a line in `history.json` (version, data
size, held-out F1 of the new and the old model, time, status and why).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

log = logging.getLogger("itjner.backend")


@dataclass
class TrainOptions:
    epochs: int = 3
    batch_size: int = 8
    heldout: float = 0.2  # share of the pulled annotations kept out of training for the acceptance check
    min_gain: float = 0.0  # accept when new held-out F1 >= old + min_gain
    min_annotations: int = 2
    base_data: str | None = None  # a dataset folder whose train.txt is added to the pulled tweets
    seed: int = 1


@dataclass
class JobSpec:
    project: int
    url: str
    key: str = field(repr=False)
    checkpoint: str
    workdir: str
    options: TrainOptions


def run_job(spec: JobSpec) -> None:
    """The child process: writes `<workdir>/result.json`; an exception leaves no result (the parent says so)."""
    from ..runtime import prepare

    prepare()
    from ..data import read_conll, write_conll
    from ..predict import Predictor
    from ..train import evaluate_tweets, train
    from .client import LabelStudioClient
    from .media import save_images
    from .tasks import tweets_from_tasks

    work, opt = Path(spec.workdir), spec.options
    client = LabelStudioClient(spec.url, spec.key)
    tasks = client.list_tasks(spec.project)
    tweets, merged = tweets_from_tasks(tasks)
    if len(tweets) < max(2, opt.min_annotations):
        raise RuntimeError(f"project {spec.project} has {len(tweets)} annotated tweet(s); training needs "
                           f"{max(2, opt.min_annotations)}")
    images = work / "images"
    save_images(tasks, images, spec.url, spec.key)
    rng = random.Random(opt.seed)
    order = tweets[:]
    rng.shuffle(order)
    n_held = max(1, round(opt.heldout * len(order)))
    held, fit = order[:n_held], order[n_held:]
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    base = read_conll(Path(opt.base_data) / "train.txt") if opt.base_data else []
    write_conll(base + fit, data / "train.txt")
    write_conll(held, data / "valid.txt")
    from ..configuration_itjner import PRESETS, ITJNERConfig, preset

    model_cfg = ITJNERConfig.load(spec.checkpoint)
    _, train_cfg = preset(model_cfg.preset if model_cfg.preset in PRESETS else "lite")
    train_cfg = replace(train_cfg, epochs=opt.epochs, batch_size=opt.batch_size, seed=opt.seed)
    train(model_cfg, train_cfg, data, work / "model", images_dir=images, init_from=spec.checkpoint, test=False,
          log=lambda line: log.info("training: %s", line))
    old = evaluate_tweets(Predictor.from_pretrained(spec.checkpoint), held, images, progress=False)["overall"]["f1"]
    new = evaluate_tweets(Predictor.from_pretrained(work / "model"), held, images, progress=False)["overall"]["f1"]
    result = {"train_tweets": len(base) + len(fit), "annotated": len(tweets), "merged": merged, "heldout": len(held),
              "heldout_f1": new, "previous_f1": old, "accepted": new >= old + opt.min_gain}
    (work / "result.json").write_text(json.dumps(result, indent=2))


def _child(spec: JobSpec) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s itjner-train %(message)s")
    run_job(spec)


class Trainer:
    """One training job at a time per backend; `status` is what `/health` shows."""

    def __init__(self, versions_dir: Path, options: TrainOptions, on_accept: Callable[[Path], str]):
        self.dir = Path(versions_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.options = options
        self.on_accept = on_accept  # loads the new checkpoint, returns its model version
        self.status: dict = {"state": "idle"}
        self._lock = threading.Lock()
        self._proc = None

    @property
    def history_path(self) -> Path:
        return self.dir / "history.json"

    def history(self) -> list[dict]:
        try:
            return json.loads(self.history_path.read_text())
        except (OSError, ValueError):
            return []

    def _record(self, row: dict) -> None:
        rows = self.history() + [row]
        tmp = self.history_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=2))
        tmp.replace(self.history_path)

    def latest_accepted(self) -> Path | None:
        for row in reversed(self.history()):
            if row.get("status") == "accepted" and Path(row["path"]).is_dir():
                return Path(row["path"])
        return None

    def running(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def start(self, project: int, url: str | None, key: str | None, checkpoint: Path) -> dict:
        with self._lock:
            if self.running():
                return {"job": self.status.get("job"), "status": "already training"}
            if not url or not key:
                self.status = {"state": "failed", "reason": "no Label Studio URL/key to pull annotations with: "
                               "connect the backend from a project (setup) or set LABEL_STUDIO_URL and "
                               "LABEL_STUDIO_API_KEY"}
                return {"status": "failed"}
            job = f"job-{int(time.time() * 1000)}"
            work = self.dir / "jobs" / job
            work.mkdir(parents=True)
            spec = JobSpec(int(project), url, key, str(checkpoint), str(work), self.options)
            proc = multiprocessing.get_context("spawn").Process(target=_child, args=(spec,), daemon=True)
            proc.start()
            self._proc = proc
            self.status = {"state": "training", "job": job, "project": int(project), "started": time.time(),
                           "from_version": checkpoint.name}
            threading.Thread(target=self._watch, args=(proc, work, job, checkpoint), daemon=True).start()
            log.info("training %s started for project %s from %s", job, project, checkpoint.name)
            return {"job": job, "status": "started"}

    def _watch(self, proc, work: Path, job: str, checkpoint: Path) -> None:
        proc.join()
        row = {"job": job, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "from": checkpoint.name}
        try:
            result = json.loads((work / "result.json").read_text())
        except (OSError, ValueError):
            result = None
        if result is None:
            row.update(status="failed", reason=f"the training process exited with code {proc.exitcode} "
                                               "(see the backend log); the previous model keeps serving")
        elif not result["accepted"]:
            row.update(result, status="rejected",
                       reason=f"held-out F1 {result['heldout_f1']:.2f} < previous {result['previous_f1']:.2f}"
                              f" + {self.options.min_gain:g}; the previous model keeps serving")
        else:
            target = self.dir / f"{checkpoint.name.split('-ft')[0]}-ft{len(self.history()) + 1}"
            os.replace(work / "model", target)  # same filesystem: atomic
            try:
                version = self.on_accept(target)
                row.update(result, status="accepted", path=str(target), version=version)
            except Exception as err:  # a checkpoint that does not load must not replace the serving one
                row.update(result, status="failed", reason=f"the new checkpoint did not load: {err}")
        row["data_size"] = (result or {}).get("train_tweets")
        self._record(row)
        self.status = {"state": row["status"], "job": job, **{k: row[k] for k in ("reason", "version") if k in row}}
        log.info("training %s %s%s", job, row["status"], f": {row['reason']}" if "reason" in row else "")

    def job_status(self, job: str) -> dict:
        if self.status.get("job") == job:
            state = self.status["state"]
            return {"job_status": {"training": "started", "accepted": "finished"}.get(state, state)}
        return {"job_status": "removed"}

    def options_dict(self) -> dict:
        return asdict(self.options)
