"""Retraining for the ML backend, with a policy a team can defend: a new version is trained from the shipped base
checkpoint (never from the last fine-tuned one, so versions do not compound), on all of the project's annotations
plus a replay of the base checkpoint's own training tweets (so it does not forget them), and it replaces the serving
model only if it is better on a fixed held-out set and no worse than allowed on the original dev set.

    held-out   the annotated tweets whose stable hash (of the tweet's image id and text: `compute_task_key`) falls
               under `heldout`: a tweet never moves between the training and the held-out side from one run to
               the next. Fewer than `min_heldout` of them: the job says so and keeps the current model.
    accept     F1 on the held-out annotations > the serving model's + `min_gain` (a tie is not a gain), and F1 on
               the base checkpoint's dev split >= the serving model's - `max_dev_drop`.

`LabelStudioTrainer.start(project, url, key)` pulls the annotations in a thread of the backend (the key never leaves
its memory), writes them into a job folder, and starts the training as a detached process
(`python -m itjner.labelstudio.retraining JOBDIR`) that writes `result.json` with its figures and the decision.
Jobs survive a backend restart: at start the trainer finishes every job folder it finds (a result is picked up, a
process still running is watched again, one that died without a result is recorded as failed). Each job leaves one
row in `history.json`; rejected and failed jobs leave nothing else on disk, and only the serving version and the
last `keep` accepted ones are kept.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

log = logging.getLogger("itjner.backend")

RESULT, SPEC, PID, LOG = "result.json", "job.json", "pid", "train.log"


@dataclass
class RetrainOptions:
    epochs: int = 2
    batch_size: int = 16
    lr_scale: float = 0.3       # the preset's learning rates times this: the base is trained already
    heldout: float = 0.3        # share of the annotated tweets held out, by a stable hash of each tweet
    min_heldout: int = 2        # fewer held-out annotated tweets: too few to judge a new model
    min_gain: float = 0.0       # held-out-annotation F1 must beat the serving model's by more than this
    max_dev_drop: float = 0.5   # and the base's dev F1 may fall by at most this (points of F1)
    replay: int = 600           # tweets of the base checkpoint's own training split trained on with the annotations
    base_data: str | None = None  # dataset folder (train.txt, valid.txt) of the base; default: its card's `data`
    keep: int = 3               # accepted versions kept besides the serving one (the base is never touched)
    seed: int = 1

    def __post_init__(self):
        if not 0.0 < self.heldout < 1.0:
            raise ValueError(f"--heldout must be between 0 and 1 (a share of the annotations), not {self.heldout}")
        if self.epochs < 1 or self.batch_size < 1 or self.replay < 0 or self.keep < 0 or self.min_heldout < 1:
            raise ValueError("--epochs, --batch-size and --min-heldout must be >= 1; --replay and --keep >= 0")
        if self.lr_scale <= 0:
            raise ValueError(f"--lr-scale must be positive, not {self.lr_scale}")

    @classmethod
    def from_dict(cls, data: dict) -> "RetrainOptions":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def heldout_side(tweet, share: float) -> bool:
    """Whether an annotated tweet is held out: a stable hash of its image id and text, the same in every run."""
    from .tasks import compute_task_key

    digest = hashlib.sha256(compute_task_key(tweet.image_id, tweet.tokens).encode()).hexdigest()
    return int(digest[:8], 16) / 2 ** 32 < share


def decide(new: dict, current: dict, options: RetrainOptions) -> tuple[bool, str]:
    """(accepted, why) from the F1 figures {"heldout": .., "dev": .. or None} of the new and the serving model."""
    gain = new["heldout"] - current["heldout"]
    if gain <= options.min_gain:
        return False, (f"held-out annotations F1 {new['heldout']:.2f} vs {current['heldout']:.2f} for the serving "
                       f"model: not better by more than {options.min_gain:g} (a tie is not a gain)")
    why = f"held-out annotations F1 {new['heldout']:.2f} vs {current['heldout']:.2f}"
    if new.get("dev") is None:
        return True, why + " (no dev split of the base to check against)"
    drop = current["dev"] - new["dev"]
    why += f"; dev F1 {new['dev']:.2f} vs {current['dev']:.2f}"
    if drop > options.max_dev_drop:
        return False, why + f": dev fell by {drop:.2f} (> {options.max_dev_drop:g} allowed)"
    return True, why


# ------------------------------------------------------------------------------------------- the job process
def base_data_folder(base: Path, options: RetrainOptions) -> Path | None:
    """The base checkpoint's dataset folder: --base-data, else its card's `data` (relative to the repository)."""
    from ..checkpoints import REPO, load_card

    given = options.base_data or load_card(base).get("data")
    if not given:
        return None
    folder = Path(given)
    if not folder.is_absolute() and not folder.exists():
        folder = REPO / folder
    return folder if (folder / "train.txt").is_file() else None


def _key(tweet) -> tuple:
    return tweet.image_id, " ".join(tweet.tokens)


# The annotations' share of each epoch. Measured on the lite model, 9 annotated tweets teaching a made-up name a new
# label (tests/integration/test_retraining.py) with 600 replayed tweets: as 25% of the epoch, dev F1 fell by 1.75;
# 11%: by 0.54 and 0.83 (two runs); 5.7%: by 0.04. The label was learnt every time.
ANNOTATION_SHARE = 0.05


def training_tweets(fit: list, replay_pool: list, options: RetrainOptions) -> tuple[list, int]:
    """The replay sample plus the annotations, repeated so they are about ANNOTATION_SHARE of each epoch;
    (tweets, repeat)."""
    rng = random.Random(options.seed)
    taken = {_key(t) for t in fit}
    pool = [t for t in replay_pool if _key(t) not in taken]
    replay = rng.sample(pool, min(options.replay, len(pool)))
    repeat = max(1, math.ceil(ANNOTATION_SHARE * len(replay) / ((1 - ANNOTATION_SHARE) * max(1, len(fit)))))
    tweets = replay + fit * repeat
    rng.shuffle(tweets)
    return tweets, repeat


def _scores(checkpoint: Path, tweets: list, images) -> float | None:
    from ..predict import Predictor
    from ..train import evaluate_tweets

    if not tweets:
        return None
    predictor = Predictor.from_pretrained(checkpoint)
    return evaluate_tweets(predictor, tweets, images, progress=False)["overall"]["f1"]


def run_job(workdir: Path) -> dict:
    """Train the new version from the base, score it and the serving model, decide; writes result.json."""
    from dataclasses import replace

    from ..configuration_itjner import PRESETS, ITJNERConfig, preset
    from ..data import read_conll, write_conll
    from ..train import train

    spec = json.loads((workdir / SPEC).read_text())
    options = RetrainOptions.from_dict(spec["options"])
    base, serving = Path(spec["base"]), Path(spec["serving"])
    images = workdir / "images" if (workdir / "images").is_dir() else None
    fit, held = read_conll(workdir / "annotated.txt"), read_conll(workdir / "heldout.txt")
    folder = base_data_folder(base, options)
    replay_pool = read_conll(folder / "train.txt") if folder else []
    dev = read_conll(folder / "valid.txt") if folder and (folder / "valid.txt").is_file() else []
    tweets, repeat = training_tweets(fit, replay_pool, options)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    write_conll(tweets, data / "train.txt")
    write_conll(held, data / "valid.txt")  # the epoch kept is the best on the held-out annotations
    model_cfg = ITJNERConfig.load(base)
    _, train_cfg = preset(model_cfg.preset if model_cfg.preset in PRESETS else "lite")
    rates = {name: getattr(train_cfg, name) * options.lr_scale for name in ("lr", "adapter_lr", "head_lr", "crf_lr")}
    train_cfg = replace(train_cfg, epochs=options.epochs, batch_size=options.batch_size, seed=options.seed, **rates)
    started = time.time()
    train(model_cfg, train_cfg, data, workdir / "model", images_dir=images, init_from=base, test=False,
          log=lambda line: log.info("training: %s", line))
    new = {"heldout": _scores(workdir / "model", held, images), "dev": _scores(workdir / "model", dev, None)}
    current = {"heldout": _scores(serving, held, images), "dev": _scores(serving, dev, None)}
    accepted, why = decide(new, current, options)
    result = {"annotated": len(fit) + len(held), "trained_on": len(fit), "heldout": len(held), "repeat": repeat,
              "replay": len(tweets) - len(fit) * repeat, "dev": len(dev), "new": new, "serving": current,
              "accepted": accepted, "why": why, "train_seconds": round(time.time() - started, 1)}
    tmp = workdir / (RESULT + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(workdir / RESULT)
    return result


def main(argv=None) -> int:
    """`python -m itjner.labelstudio.retraining JOBDIR`: the detached training process."""
    from .. import runtime

    runtime.prepare()
    os.environ.setdefault("TQDM_DISABLE", "1")  # a log file, not a terminal: no progress bars
    runtime.quiet_transformers()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s itjner-retrain %(message)s")
    workdir = Path((argv or sys.argv[1:])[0])
    try:
        run_job(workdir)
    except Exception as err:  # one line for the history row; the traceback stays in the job's log
        log.exception("retraining failed")
        (workdir / "error.txt").write_text(f"{err.__class__.__name__}: {err}"[:500])
        return 1
    return 0


# ------------------------------------------------------------------------------------------- the backend side
def _alive(pid: int) -> bool:
    """Whether `pid` is a running retraining process (not a zombie, not a recycled pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.split(") ")[-1][:1] != "Z" and b"itjner.labelstudio.retraining" in cmdline


class LabelStudioTrainer:
    """One retraining job at a time per backend; `status` is what `/health` shows; `history.json` says what every
    job did."""

    def __init__(self, versions_dir: Path, base: Path, options: RetrainOptions, on_accept: Callable[[Path], str]):
        self.dir = Path(versions_dir)
        (self.dir / "jobs").mkdir(parents=True, exist_ok=True)
        self.base, self.options, self.on_accept = Path(base), options, on_accept
        self.status: dict = {"state": "idle"}
        self._lock = threading.Lock()
        self._job: str | None = None

    # -- history and versions
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

    def accepted(self) -> list[dict]:
        """Accepted versions still on disk, oldest first."""
        return [r for r in self.history() if r.get("status") == "accepted" and Path(r["path"]).is_dir()]

    def serving(self) -> Path:
        """The version to serve: the last accepted one, else the base."""
        rows = self.accepted()
        return Path(rows[-1]["path"]) if rows else self.base

    def _prune(self) -> None:
        """Keep the serving version and the last `keep` accepted ones (the base is never touched)."""
        rows = self.accepted()
        for row in rows[:max(0, len(rows) - max(1, self.options.keep))]:
            shutil.rmtree(row["path"], ignore_errors=True)
            log.info("removed old version %s (keeping the last %d)", Path(row["path"]).name, self.options.keep)

    # -- jobs
    def running(self) -> bool:
        return self._job is not None

    def start(self, project: int, url: str | None, key: str | None, serving: Path) -> dict:
        with self._lock:
            if self._job is not None:
                return {"job": self._job, "status": f"already training (project {self.status.get('project')})"}
            if not url or not key:
                reason = ("no Label Studio URL or API key to pull the annotations with: connect the backend from a "
                          "project (Settings > Model) or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
                self.status = {"state": "failed", "project": int(project), "reason": reason}
                return {"status": "failed", "reason": reason}
            job = f"job-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid() % 1000:03d}"
            self._job = job
            self.status = {"state": "training", "job": job, "project": int(project), "phase": "pulling annotations",
                           "started": time.time()}
        thread = threading.Thread(target=self._run, args=(job, int(project), url, key, Path(serving)), daemon=True)
        thread.start()
        return {"job": job, "status": "started"}

    def _run(self, job: str, project: int, url: str, key: str, serving: Path) -> None:
        work = self.dir / "jobs" / job
        try:
            proc = self._prepare(work, job, project, url, key, serving)
        except NotEnough as err:
            self._finish(work, job, project, ("skipped", str(err)))
        except Exception as err:  # Label Studio down or refusing the key, a broken base folder, ...
            from .client import LabelStudioError

            message = str(err) if isinstance(err, LabelStudioError) else f"{err.__class__.__name__}: {err}"
            self._finish(work, job, project, ("failed", message))
        else:
            self._watch(work, job, project, proc.pid, proc)

    def _prepare(self, work: Path, job: str, project: int, url: str, key: str, serving: Path):
        from ..configuration_itjner import ITJNERConfig
        from ..data import write_conll
        from .client import LabelStudioClient
        from .media import save_images
        from .tasks import tweets_from_tasks

        client = LabelStudioClient(url, key)
        tasks = client.list_tasks(project)
        tweets, _ = tweets_from_tasks(tasks)
        held = [t for t in tweets if heldout_side(t, self.options.heldout)]
        fit = [t for t in tweets if not heldout_side(t, self.options.heldout)]
        if len(held) < self.options.min_heldout or not fit:
            raise NotEnough(f"{len(tweets)} annotated tweet(s), {len(held)} of them held out (by a stable hash, "
                            f"{self.options.heldout:.0%} of the tweets): at least {self.options.min_heldout} held-out "
                            "and one to train on are needed to judge a new model. Annotate more tweets")
        work.mkdir(parents=True)
        write_conll(fit, work / "annotated.txt")
        write_conll(held, work / "heldout.txt")
        if ITJNERConfig.load(self.base).multimodal:  # a model that reads no images needs none downloaded
            ids = {t.meta.get("task_id") for t in tweets}
            _, problems = save_images([t for t in tasks if _task_id(t) in ids], work / "images", url, key)
            for problem in problems:
                log.warning("retraining %s: %s", job, problem)
        spec = {"project": project, "base": str(self.base), "serving": str(serving),
                "options": asdict(self.options)}
        (work / SPEC).write_text(json.dumps(spec, indent=2))
        self.status = {**self.status, "phase": f"training on {len(fit)} annotated tweets ({len(held)} held out)"}
        with open(work / LOG, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "itjner.labelstudio.retraining", str(work)],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "TQDM_DISABLE": "1"})
        (work / PID).write_text(str(proc.pid))
        log.info("retraining %s started for project %s from %s (pid %d)", job, project, self.base.name, proc.pid)
        return proc

    def _watch(self, work: Path, job: str, project: int, pid: int, proc: subprocess.Popen | None = None) -> None:
        """Wait for the job's process to end, then finish the job. Our own child is waited for (and reaped); a
        process left by a backend before a restart is watched through /proc (right after the fork its command line
        is still this backend's, so /proc cannot tell a just-started child from a dead one)."""
        if proc is not None:
            proc.wait()
        else:
            while _alive(pid):
                time.sleep(1.0)
        self._finish(work, job, project)

    def _finish(self, work: Path, job: str, project: int | None, outcome: tuple[str, str] | None = None) -> None:
        """Record what the job did (once), swap in an accepted version, remove the job folder. `outcome`: (status,
        reason) of a job that ended before its training process could give a result."""
        row = {"job": job, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "project": project,
               "from": self.base.name}
        result = _read_json(work / RESULT)
        if outcome is not None:
            row.update(status=outcome[0], reason=outcome[1])
        elif result is None:
            row.update(status="failed", reason=_failure(work))
        else:
            row.update({k: result[k] for k in ("annotated", "trained_on", "heldout", "replay", "dev", "new",
                                               "serving", "train_seconds")})
            row["status"], row["reason"] = ("accepted" if result["accepted"] else "rejected"), result["why"]
            if result["accepted"]:
                self._accept(work, row)
        if row["status"] != "accepted":
            row["reason"] += "; the serving model stays"
        self._record(row)
        self._prune()
        shutil.rmtree(work, ignore_errors=True)  # rejected and failed jobs leave nothing behind
        with self._lock:
            self._job = None
            self.status = {"state": row["status"], "job": job, "project": project, "reason": row["reason"],
                           **({"version": row["version"]} if "version" in row else {})}
        log.info("retraining %s %s: %s", job, row["status"], row["reason"])

    def _accept(self, work: Path, row: dict) -> None:
        number = 1 + sum(1 for r in self.history() if r.get("status") == "accepted")
        target = self.dir / f"{self.base.name}-v{number}"
        shutil.rmtree(target, ignore_errors=True)
        os.replace(work / "model", target)  # same filesystem: atomic
        try:
            row.update(path=str(target), version=self.on_accept(target))
        except Exception as err:  # a version that does not load must not replace the serving one
            shutil.rmtree(target, ignore_errors=True)
            row.update(status="failed", reason=f"the new version did not load ({err.__class__.__name__}: {err})")

    def recover(self) -> list[str]:
        """Finish the jobs a previous backend process left: returns what was done, one line each."""
        done, seen = [], {r.get("job") for r in self.history()}
        for work in sorted((self.dir / "jobs").iterdir()):
            job = work.name
            if job in seen:  # recorded already; only its folder was left
                shutil.rmtree(work, ignore_errors=True)
                continue
            pid = int((work / PID).read_text()) if (work / PID).is_file() else None
            project = (_read_json(work / SPEC) or {}).get("project")
            if pid is not None and _alive(pid):
                with self._lock:
                    self._job = job
                    self.status = {"state": "training", "job": job, "project": project,
                                   "phase": "training (resumed watching after a backend restart)"}
                threading.Thread(target=self._watch, args=(work, job, project, pid), daemon=True).start()
                done.append(f"{job}: still training, watched again")
                continue
            started = (work / RESULT).is_file() or pid is not None
            self._finish(work, job, project, None if started else
                         ("failed", "the backend stopped before the training process started"))
            done.append(f"{job}: {self.history()[-1]['status']} while the backend was down")
        return done

    def job_status(self, job: str) -> dict:
        if self.status.get("job") == job:
            state = self.status["state"]
            return {"job_status": {"training": "started", "accepted": "finished"}.get(state, state),
                    "reason": self.status.get("reason")}
        row = next((r for r in reversed(self.history()) if r.get("job") == job), None)
        return {"job_status": row["status"], "reason": row.get("reason")} if row else {"job_status": "unknown"}


class NotEnough(ValueError):
    """Too few annotations to train and judge a new version."""


def _failure(work: Path) -> str:
    """Why a job's process gave no result, in one line: its error, else the last line of its log."""
    if (work / "error.txt").is_file():
        return (work / "error.txt").read_text()
    try:
        lines = [line.strip() for line in (work / LOG).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    last = f" (its log ends: {lines[-1][:300]})" if lines else ""
    return f"the training process ended without a result{last}"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _task_id(task) -> int | None:
    from .tasks import as_dict

    return as_dict(task).get("id")


if __name__ == "__main__":
    raise SystemExit(main())
