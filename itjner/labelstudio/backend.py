"""ITJNER as a Label Studio ML backend (the protocol Label Studio 1.23 speaks, read from its `ml/api_connector.py`).

Label Studio calls, on the URL given in Settings > Model (or `ml.create` in the SDK):
  GET  /health             -> {"status": "UP", "model_version": ...}      (every connect, predict and train)
  POST /setup              {project, schema, hostname, access_token, extra_params} -> {"model_version": ...}
  POST /predict            {tasks, project, label_config, params} -> {"results": [{result, score, model_version}]}
                           (one result per task, in order: "Retrieve predictions", interactive pre-annotation)
  POST /webhook            {"action": "START_TRAINING", "project": {...}} ("Start training"), and the project's
                           events (ANNOTATION_CREATED, ...: count toward `--train-every`)
  POST /train              the pre-webhook training call {annotations, project: "<id>.<time>", label_config}
  GET  /versions, POST /job_status    model versions and training job state
A FastAPI app (installed with Gradio): `label-studio-ml` 1.0.9, the newest on the package index, pins Flask 1.1.2,
Jinja2 3.0.3 and Werkzeug 2.0.2, which would downgrade the Jinja2 Gradio uses.

One model load per process; each request's tasks are tagged in one `Predictor.predict` batch (a text longer than
the encoder's input is tagged whole, in overlapping windows). A task with an empty text gets an empty prediction;
images are fetched (concurrently, size-capped before download) only when the serving model reads them, and one that
cannot be read is tagged without it (image branch masked); the problem is logged and shown in `/health`, and the
rest of the batch is answered. The Label Studio key (LABEL_STUDIO_API_KEY, else the token Label Studio sends at
`/setup`) is used only to fetch images and annotations from that server; `/setup` and `/health` check that it is
accepted (a refused key answers 401, an unreachable server 502: Label Studio's "Connect model" shows the failure).
It is never logged or returned. Retraining: retraining.py.
"""

import base64
import hmac
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path

from ..data import Tweet, tokenize
from .client import LabelStudioAuthError, LabelStudioUnavailable, Secret
from .labelconfig import LabelConfigError, ProjectConfig, parse_label_config
from .media import image_name, task_images
from .retraining import LabelStudioTrainer, RetrainOptions
from .tasks import entity_results

log = logging.getLogger("itjner.backend")


def token_spans(text: str, tokens: list[str]) -> list[tuple[int, int]] | None:
    """Character span of each token in `text`, in order; None if a token is not found where expected."""
    spans, pos = [], 0
    for tok in tokens:
        i = text.find(tok, pos)
        if i < 0 or text[pos:i].strip():
            return None
        spans.append((i, i + len(tok)))
        pos = i + len(tok)
    return spans


def task_tweet(data: dict, cfg: ProjectConfig) -> tuple[Tweet, list[tuple[int, int]], str]:
    """(tweet, character spans of its tokens in the task's text, the text); ValueError for an unusable text."""
    text = data.get(cfg.text_key)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"task field {cfg.text_key!r} is empty or missing: nothing to tag")
    tokens = data.get("tokens")
    if not (isinstance(tokens, list) and " ".join(map(str, tokens)) == text):
        tokens = tokenize(text)
    spans = token_spans(text, [str(t) for t in tokens])
    if spans is None:  # cannot happen for tokenize(); guards odd `tokens` fields
        tokens = text.split()
        spans = token_spans(text, tokens)
    return Tweet(str(data.get("image_id") or ""), [str(t) for t in tokens]), spans, text


CONNECTION_CHECK_SECONDS = 60  # Label Studio calls /setup and /health often: its answer is re-checked this often


class Backend:
    """The model Label Studio connects to: `predict` for tasks, `train` (a `LabelStudioTrainer` job) on "Start
    training", `setup`/`health` that say whether the backend can reach Label Studio with its key."""

    def __init__(self, checkpoint, images_dir=None, versions_dir=None, url: str | None = None,
                 api_key: str | None = None, options: RetrainOptions | None = None, train_every: int = 0):
        from .outbox import default_data_dir

        # httpx logs every request at INFO with its whole URL, a query string carrying a token included
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
        self.base_checkpoint = Path(checkpoint)
        self.images_dir = images_dir
        self.url = url or os.environ.get("LABEL_STUDIO_URL")
        key = api_key or os.environ.get("LABEL_STUDIO_API_KEY")
        self._key = Secret(key) if key else None
        self._key_source = "LABEL_STUDIO_API_KEY / --api-key" if key else None
        self.train_every = int(train_every)
        self._new_annotations: dict[int, int] = {}
        self.problems: deque[str] = deque(maxlen=20)
        self.connection: dict = {"state": "not checked"}
        self._checked_at = 0.0
        self._lock = threading.Lock()
        self._tagging = threading.Lock()  # one model call at a time (the feature cache is not thread-safe)
        versions = Path(versions_dir) if versions_dir else default_data_dir() / "backend" / self.base_checkpoint.name
        self.trainer = LabelStudioTrainer(versions, self.base_checkpoint, options or RetrainOptions(), self.load)
        self.predictor = None
        self.checkpoint: Path | None = None
        self.load(self.trainer.serving())
        for line in self.trainer.recover():
            log.info("retraining job of a previous run: %s", line)

    def load(self, folder: Path) -> str:
        """Load a checkpoint fully, then swap it in (requests in flight finish on the old one)."""
        from ..predict import Predictor

        predictor = Predictor.from_pretrained(folder)
        with self._lock:
            self.predictor, self.checkpoint = predictor, Path(folder)
        log.info("serving %s", predictor.model_version)
        return predictor.model_version

    @property
    def model_version(self) -> str:
        return self.predictor.model_version

    # ------------------------------------------------------------------------------------------------ protocol
    def health(self) -> dict:
        return {"status": "UP", "model_class": "ITJNER", "model_version": self.model_version,
                "reads_images": self.predictor.reads_images, "label_studio": self.check_connection(),
                "training": self.trainer.status, "recent_problems": list(self.problems)}

    def setup(self, payload: dict) -> dict:
        """Label Studio's "Connect model": check the labeling config, and that Label Studio answers with the key
        (LabelStudioAuthError / LabelStudioUnavailable: the connection shows as failed in Label Studio)."""
        parse_label_config(payload.get("schema") or "")  # LabelConfigError -> a clear 400 for Label Studio
        if not self.url and payload.get("hostname"):
            self.url = str(payload["hostname"])
        if self._key is None and payload.get("access_token"):
            self._key = Secret(str(payload["access_token"]))
            self._key_source = "the project owner's token that Label Studio sent at setup"
            self._checked_at = 0.0
        self.check_connection(raise_error=True)
        return {"model_version": self.model_version}

    def check_connection(self, raise_error: bool = False) -> dict:
        """Whether Label Studio answers with the key ({"state": "connected" | "error" | "no key", "error": ...}),
        asked at most once a minute."""
        from .client import LabelStudioClient, LabelStudioError

        if self._key is None or not self.url:
            self.connection = {"state": "no key", "error": "no Label Studio URL or API key yet: predictions work, "
                                                           "but uploaded images and training need them"}
        elif time.monotonic() - self._checked_at > CONNECTION_CHECK_SECONDS or self.connection["state"] != "connected":
            try:
                LabelStudioClient(self.url, self._key.value, timeout=10).check()
                self.connection = {"state": "connected", "url": self.url}
            except LabelStudioError as err:
                message = f"{err} (key from {self._key_source})" if err.reason == "refused key" else str(err)
                self.connection = {"state": "error", "error": message, "cause": err}
            self._checked_at = time.monotonic()
        if raise_error and self.connection["state"] == "error":
            raise self.connection["cause"]
        return {k: v for k, v in self.connection.items() if k != "cause"}

    def _note(self, problem: str) -> None:
        log.warning("%s", problem)
        self.problems.append(problem)

    def predict(self, tasks: list[dict], label_config: str) -> list[dict]:
        cfg = parse_label_config(label_config)
        predictor = self.predictor  # one model for the whole batch, even if a training swaps it meanwhile
        version = predictor.model_version
        answers: list[dict] = [{"result": [], "score": 0.0, "model_version": version} for _ in tasks]
        rows = []
        for i, task in enumerate(tasks):
            try:
                tweet, spans, text = task_tweet(task.get("data") or {}, cfg)
            except ValueError as err:
                self._note(f"task {task.get('id')}: {err}")
                continue
            rows.append((i, tweet, spans, text))
        if not rows:
            return answers
        images = self._images([tasks[i] for i, *_ in rows], cfg, predictor.reads_images)
        preds = self._tag([r[1] for r in rows], [blob for blob, _ in images], predictor)
        for (i, tweet, spans, text), (blob, ref), pred in zip(rows, images, preds):
            if pred is None:
                continue
            if blob is not None and pred.image_problem:
                self._note(f"task {tasks[i].get('id')} ({ref}): image not used ({pred.image_problem})")
            answers[i] = self._answer(pred, spans, text, cfg, version, tasks[i].get("id"))
        return answers

    def _images(self, tasks: list[dict], cfg: ProjectConfig, reads_images: bool) -> list[tuple[bytes | None, str]]:
        """(bytes or None, how to name it in a message) per task; nothing is downloaded for a model that reads no
        images, the rest concurrently."""
        if not cfg.image_key or not reads_images:
            return [(None, "")] * len(tasks)
        datas = [{"image": (t.get("data") or {}).get(cfg.image_key), "image_id": (t.get("data") or {}).get("image_id")}
                 for t in tasks]
        key = self._key.value if self._key else None
        out = []
        for task, data, (blob, problem) in zip(tasks, datas, task_images(datas, self.url, key, self.images_dir)):
            ref = image_name(str(data["image"] or data["image_id"] or ""))
            if problem:
                self._note(f"task {task.get('id')}: {problem}; tagged without the image")
            out.append((blob, ref))
        return out

    def _tag(self, tweets, blobs, predictor):
        with self._tagging:
            return self._tag_unlocked(tweets, blobs, predictor)

    def _tag_unlocked(self, tweets, blobs, predictor):
        try:
            return predictor.predict(tweets, images=blobs)
        except Exception as err:  # one bad input must not cost the batch: retry one by one
            log.warning("batch of %d failed (%s); tagging one by one", len(tweets), err.__class__.__name__)
        out = []
        for tweet, blob in zip(tweets, blobs):
            try:
                out.append(predictor.predict([tweet], images=[blob])[0])
            except Exception as err:
                self._note(f"tweet {tweet.image_id or '?'}: {err.__class__.__name__}: {err}")
                out.append(None)
        return out

    def _answer(self, pred, spans, text: str, cfg: ProjectConfig, version: str, task_id) -> dict:
        result = entity_results(pred.tweet.tokens, pred.entities, f"t{task_id}e", text=text, spans=spans,
                                from_name=cfg.from_name, to_name=cfg.to_name, label_of=cfg.label_for)
        return {"result": result, "score": float(pred.score), "model_version": version}

    def webhook(self, payload: dict) -> dict:
        action = payload.get("action")
        project = (payload.get("project") or {}).get("id")
        if action == "START_TRAINING" and project is not None:
            return self.train(int(project))
        if action in ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED") and project is not None:
            n = self._new_annotations.get(project, 0) + 1
            self._new_annotations[project] = n
            if self.train_every and n >= self.train_every:
                self._new_annotations[project] = 0
                return self.train(int(project))
        return {"status": "ok", "action": action}

    def train(self, project: int) -> dict:
        return self.trainer.start(project, self.url, self._key.value if self._key else None, self.checkpoint)

    def versions(self) -> dict:
        """The model versions this backend can serve, named as its predictions name them (folder + weights hash)."""
        from ..checkpoints import checkpoint_version

        folders = [self.base_checkpoint] + [Path(r["path"]) for r in self.trainer.accepted()]
        return {"versions": [checkpoint_version(f) for f in folders], "model_version": self.model_version}


def _authorised(header: str | None, user: str, password: str) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header[6:]).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(given, f"{user}:{password}")


def create_app(backend: Backend, basic_auth: tuple[str, str] | None = None):
    """The ML-backend HTTP API over `backend`. A bad request (LabelConfigError) answers 400 with its message."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="ITJNER ML backend", docs_url=None, redoc_url=None, openapi_url=None)
    app.middleware("http")(_guard(basic_auth))
    app.exception_handler(LabelConfigError)(lambda request, err: JSONResponse({"error": str(err)}, status_code=400))
    # Label Studio 1.23 shows the HTTP status of a failed /setup ("401 ... Unauthorized", "502 ... Bad Gateway")
    # in "Connect model"; the body says why in full
    app.exception_handler(LabelStudioAuthError)(lambda request, err: JSONResponse({"error": str(err)},
                                                                                  status_code=401))
    app.exception_handler(LabelStudioUnavailable)(lambda request, err: JSONResponse({"error": str(err)},
                                                                                    status_code=502))

    @app.get("/health")
    @app.get("/")
    def health():
        return backend.health()

    @app.post("/setup")
    async def setup(request: Request):
        return backend.setup(await _body(request))

    @app.post("/predict")
    async def predict(request: Request):
        from starlette.concurrency import run_in_threadpool

        data = await _body(request)
        tasks = data.get("tasks") or []
        if not isinstance(tasks, list):
            raise LabelConfigError("'tasks' must be a list")
        results = await run_in_threadpool(backend.predict, tasks, data.get("label_config") or "")
        return {"results": results, "model_version": backend.model_version}

    @app.post("/webhook")
    async def webhook(request: Request):
        return backend.webhook(await _body(request))

    @app.post("/train")
    async def train(request: Request):
        project = str((await _body(request)).get("project") or "").split(".")[0]
        if not project.isdigit():
            raise LabelConfigError("'project' must be '<id>.<timestamp>'")
        return backend.train(int(project))

    @app.get("/versions")
    def versions():
        return backend.versions()

    @app.post("/job_status")
    async def job_status(request: Request):
        return backend.trainer.job_status(str((await _body(request)).get("job")))

    return app


def _guard(basic_auth: tuple[str, str] | None):
    """HTTP middleware: basic auth when configured, and a JSON error (never a bare 500 page) when a request fails."""
    from fastapi.responses import JSONResponse

    async def guard(request, call_next):
        if basic_auth and not _authorised(request.headers.get("authorization"), *basic_auth):
            return JSONResponse({"error": "authentication required"}, status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="itjner"'})
        try:
            return await call_next(request)
        except Exception as err:  # say what failed (no key is ever in these messages)
            log.exception("request %s failed", request.url.path)
            return JSONResponse({"error": f"{err.__class__.__name__}: {err}"}, status_code=500)
    return guard


async def _body(request) -> dict:
    try:
        data = await request.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise LabelConfigError("the request body must be a JSON object")
    return data
