"""The Label Studio loop: predictions go out as pre-annotated tasks, human annotations come back as Twitter CoNLL.

No model math here. A task is built from a `Prediction` (and the tweet's image bytes):

    data:        {"text": " ".join(tokens), "tokens": [...], "image_id": ..., "image": "data:image/...;base64,..."
                  or "" (no image), "itjner_key": ..., "itjner_origin": "model" | "user-correction"}
    predictions: [{"model_version", "score": pred.score,
                   "result": [one "labels" region per Entity over the character span of its words]}]

Character offsets are those of `data.char_offsets` over the space-joined tokens (what annotators see), and a region
never spans two entities: a B- tag always starts a new region, so adjacent same-type entities stay apart.

User corrections (a tweet the user fixed in the app before sending) travel as an *annotation*, with the raw model
output kept as the task's prediction and `data.itjner_origin = "user-correction"` (a Data Manager column to filter
on). Why not a second prediction ("<model>+user-correction")? Label Studio shows annotators, in the labeling
stream, only the predictions whose model_version equals the project's `model_version`, which import sets once to
the last version it saw: one of the two versions would silently disappear from the editor for every task. A
correction is a human judgement, so it is stored as one: annotators see it (and the model's output next to it in the
predictions tab), can update it, and `pull_annotations` returns it unless someone annotates the task later.

Pulling takes, per task, the latest (by update time) non-cancelled annotation and maps each labelled character span
back onto the task's own `tokens` (every token it overlaps), so the CoNLL written is exactly the tokens sent.

Idempotency: `itjner_key` = sha256 of (image_id, tokens, correction). `push_tasks` lists the keys already in the
project and creates only the missing tasks, so a resend (after a timeout, from the outbox) never duplicates a task.

The API key (a legacy token or a personal access token; the SDK tells them apart and refreshes the latter) comes
from an argument or LABEL_STUDIO_API_KEY, the URL from an argument or LABEL_STUDIO_URL. The key never appears in a
message, log line or repr.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .data import ENTITY_TYPES, Entity, Prediction, Tweet, char_offsets, entities_to_bio, format_conll, read_tweets

DEFAULT_URL = "http://localhost:8080"
FROM_NAME, TO_NAME = "label", "text"
ORIGIN_MODEL, ORIGIN_CORRECTION = "model", "user-correction"

LABEL_CONFIG = (
    "<View>\n"
    '  <Image name="image" value="$image"/>\n'
    f'  <Labels name="{FROM_NAME}" toName="{TO_NAME}">\n'
    + "".join(f'    <Label value="{t}"/>\n' for t in ENTITY_TYPES)
    + "  </Labels>\n"
    f'  <Text name="{TO_NAME}" value="$text" granularity="word"/>\n'
    "</View>\n"
)

MAX_IMAGE_BYTES = 1_000_000  # larger images (or unknown formats) are re-encoded as JPEG, longest side MAX_IMAGE_SIDE
MAX_IMAGE_SIDE = 1024


# ---------------------------------------------------------------------------------------------------------- errors
class LabelStudioError(RuntimeError):
    """A Label Studio call failed; `reason` is a short category for queues ("server down", "refused key", ...)."""

    reason = "error"


class LabelStudioAuthError(LabelStudioError):
    reason = "refused key"


class LabelStudioUnavailable(LabelStudioError):
    reason = "server down"


class LabelStudioTimeout(LabelStudioUnavailable):
    reason = "timeout"


class _Secret:
    """Holds the API key; its repr never shows it (so `vars(client)`, debuggers and loggers do not either)."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("an API key is not picklable")

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def scrub(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` replaced by ***."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


# ---------------------------------------------------------------------------------------------------------- tasks
def compute_task_key(image_id: str, tokens: Sequence[str], correction: Sequence[Entity] | None = None) -> str:
    """The idempotency id of a task: same tweet and same correction -> same key."""
    corr = None if correction is None else sorted([e.start, e.end, e.type] for e in correction)
    blob = json.dumps([str(image_id), list(tokens), corr], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def _sniff_mime(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_data_url(data: bytes | None) -> tuple[str, str | None]:
    """(data URL or "", problem or None). Small JPEG/PNG/GIF/WebP pass through; the rest is decoded safely and
    re-encoded as a JPEG of at most MAX_IMAGE_SIDE pixels; undecodable bytes give "" and the reason."""
    if not data:
        return "", None if data is None else "empty image file"
    mime = _sniff_mime(data)
    if mime is None or len(data) > MAX_IMAGE_BYTES:
        from .images import ImageError, decode_image

        try:
            image = decode_image(data)
        except ImageError as err:
            return "", str(err)
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=85)
        data, mime = buf.getvalue(), "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", None


def entity_results(tokens: Sequence[str], entities: Iterable[Entity], id_prefix: str = "e") -> list[dict]:
    """One Label Studio `labels` region per entity, over the characters of its words in " ".join(tokens)."""
    offsets = char_offsets(tokens)
    text = " ".join(tokens)
    results = []
    for i, ent in enumerate(sorted(entities, key=lambda e: (e.start, e.end))):
        if not (0 <= ent.start < ent.end <= len(tokens)):
            raise ValueError(f"entity {ent} outside the tweet's {len(tokens)} tokens")
        c0, c1 = offsets[ent.start][0], offsets[ent.end - 1][1]
        item = {"id": f"{id_prefix}{i}", "from_name": FROM_NAME, "to_name": TO_NAME, "type": "labels",
                "value": {"start": c0, "end": c1, "text": text[c0:c1], "labels": [ent.type]}}
        if ent.score is not None:
            item["score"] = float(ent.score)
        results.append(item)
    return results


def task_from_prediction(pred: Prediction, image_bytes: bytes | None, model_version: str,
                         correction: list[Entity] | None = None, task_key: str | None = None) -> dict:
    """A Label Studio task (import format) for one predicted tweet; see the module docstring for the layout."""
    tweet = pred.tweet
    tokens = list(tweet.tokens)
    key = task_key or compute_task_key(tweet.image_id, tokens, correction)
    url, problem = image_data_url(image_bytes)
    data = {"text": " ".join(tokens), "tokens": tokens, "image_id": str(tweet.image_id), "image": url,
            "itjner_key": key, "itjner_origin": ORIGIN_MODEL if correction is None else ORIGIN_CORRECTION}
    if problem:
        data["image_problem"] = problem
    prediction = {"model_version": model_version, "score": float(pred.score),
                  "result": entity_results(tokens, pred.entities, id_prefix=f"{key[:6]}p")}
    task = {"data": data, "predictions": [prediction]}
    if correction is not None:
        task["annotations"] = [{"result": entity_results(tokens, correction, id_prefix=f"{key[:6]}c"),
                                "ground_truth": False}]
    return task


def order_predictions(predictions: Sequence[Prediction], order: str | None = None) -> list[Prediction]:
    """`order="uncertainty"`: least confident (lowest `score`) first, ties in input order; otherwise input order."""
    if order in (None, "", "file", "input"):
        return list(predictions)
    if order == "uncertainty":
        return sorted(predictions, key=lambda p: float(p.score))
    raise ValueError(f"unknown order {order!r}: use 'file' or 'uncertainty'")


def build_tasks(predictions: Sequence[Prediction], images_dir, model_version: str, order: str | None = None,
                corrections: dict[int, list[Entity]] | None = None) -> list[dict]:
    """Tasks for many predictions, images read from `images_dir/<image_id>.jpg` (missing ones give "")."""
    from .images import read_image_bytes

    tasks = []
    corrections = corrections or {}
    index = {id(p): i for i, p in enumerate(predictions)}
    for pred in order_predictions(predictions, order):
        blob = read_image_bytes(images_dir, pred.tweet.image_id)
        tasks.append(task_from_prediction(pred, blob, model_version, corrections.get(index[id(pred)])))
    return tasks


def export_tasks_json(predictions: Sequence[Prediction], images_dir, model_version: str, path: str | Path,
                      order: str | None = None) -> int:
    """Write a tasks.json for Label Studio's import dialog (no server needed); returns the number of tasks.
    Create the project with `LABEL_CONFIG` (Settings > Labeling Interface > Code) before importing."""
    tasks = build_tasks(predictions, images_dir, model_version, order)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)
    return len(tasks)


# -------------------------------------------------------------------------------------------------- annotations
def _get(obj: Any, name: str, default=None):
    if isinstance(obj, dict):
        return obj.get(name, default)
    value = getattr(obj, name, default)
    return default if value is None else value


def _as_dict(obj: Any) -> dict:
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return dict(obj)


def task_tokens(data: dict) -> list[str]:
    """The tokens a task was sent with (`data.tokens`); tasks made elsewhere fall back to splitting `text` on " "."""
    tokens = data.get("tokens")
    text = data.get("text")
    if tokens is None:
        if text is None:
            raise ValueError("task has neither 'tokens' nor 'text' in its data")
        return text.split(" ")
    tokens = [str(t) for t in tokens]
    if text is not None and " ".join(tokens) != text:
        raise ValueError("task data 'text' is not its 'tokens' joined by spaces: offsets would not map back")
    return tokens


def result_to_entities(tokens: Sequence[str], result: Iterable[dict], problems: list[str] | None = None
                       ) -> list[Entity]:
    """Labelled character spans -> word entities: each region covers every token it overlaps. Regions of other
    controls are ignored; a region overlapping an earlier one keeps only its tokens not already taken."""
    offsets = char_offsets(tokens)
    spans = []
    for item in result:
        item = _as_dict(item)
        value = item.get("value") or {}
        labels = value.get("labels") or []
        if item.get("type") != "labels" or item.get("from_name", FROM_NAME) != FROM_NAME or not labels:
            continue
        start, end = int(value["start"]), int(value["end"])
        words = [i for i, (a, b) in enumerate(offsets)
                 if (a < end and b > start) or (a == b and start <= a < end)]
        if not words:
            if problems is not None:
                problems.append(f"region {start}-{end} covers no token")
            continue
        spans.append((words[0], words[-1] + 1, str(labels[0])))
    taken = [False] * len(tokens)
    entities = []
    for start, end, etype in sorted(spans):
        free = [i for i in range(start, end) if not taken[i]]
        if len(free) != end - start and problems is not None:
            problems.append(f"region over words {start}-{end} overlaps another region")
        # keep the first contiguous run of free words
        run = []
        for i in free:
            if run and i != run[-1] + 1:
                break
            run.append(i)
        if run:
            for i in run:
                taken[i] = True
            entities.append(Entity(run[0], run[-1] + 1, etype))
    return entities


def _timestamp(value) -> float:
    if value is None:
        return 0.0
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def latest_annotation(annotations: Iterable[Any]) -> dict | None:
    """The most recently updated annotation that was not skipped (cancelled); None if there is none."""
    live = [_as_dict(a) for a in annotations or []]
    live = [a for a in live if not a.get("was_cancelled")]
    if not live:
        return None
    return max(live, key=lambda a: (_timestamp(a.get("updated_at") or a.get("created_at")), a.get("id") or 0))


def tweet_from_task(task: Any) -> Tweet | None:
    """The tweet of one exported/listed task with BIO tags from its latest annotation (None if not annotated)."""
    task = _as_dict(task)
    ann = latest_annotation(task.get("annotations"))
    if ann is None:
        return None
    data = task.get("data") or {}
    tokens = task_tokens(data)
    problems: list[str] = []
    entities = result_to_entities(tokens, ann.get("result") or [], problems)
    meta = {"task_id": task.get("id"), "annotation_id": ann.get("id"), "itjner_key": data.get("itjner_key"),
            "completed_by": ann.get("completed_by"), "updated_at": str(ann.get("updated_at") or "")}
    if problems:
        meta["problems"] = problems
    image_id = data.get("image_id")
    if image_id is None:
        image_id = str(task.get("id"))
    return Tweet(image_id=str(image_id), tokens=tokens, tags=entities_to_bio(entities, len(tokens)), meta=meta)


# ---------------------------------------------------------------------------------------------------------- client
def _env_url(url: str | None) -> str:
    return (url or os.environ.get("LABEL_STUDIO_URL") or DEFAULT_URL).rstrip("/")


@dataclass
class PushResult:
    created: list[int] = field(default_factory=list)  # new task ids
    skipped: list[str] = field(default_factory=list)  # itjner_keys already in the project

    def __str__(self) -> str:
        return f"{len(self.created)} task(s) created, {len(self.skipped)} already in the project"


class LabelStudioClient:
    """A thin wrapper over `label_studio_sdk.LabelStudio` (SDK 2.x) that turns failures into LabelStudioError
    subclasses with messages safe to show (the key is never included). Construction does not contact the server;
    `check()` (or `connect()`) does."""

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 20.0):
        self.url = _env_url(url)
        key = api_key if api_key is not None else os.environ.get("LABEL_STUDIO_API_KEY")
        if not key:
            raise LabelStudioAuthError(
                f"no API key for Label Studio at {self.url}: set LABEL_STUDIO_API_KEY (Account & Settings > "
                "Personal Access Token, or the legacy token)")
        self._key = _Secret(key)
        self.timeout = timeout
        self._sdk = None

    def __repr__(self) -> str:
        return f"LabelStudioClient(url={self.url!r})"

    __str__ = __repr__

    def __getstate__(self):  # never pickle the key into an outbox, a cache or a log
        raise TypeError("LabelStudioClient holds an API key and is not picklable")

    def __copy__(self):  # copies (e.g. of UI state) share the one client
        return self

    def __deepcopy__(self, memo):
        return self

    # -- plumbing
    @property
    def sdk(self):
        if self._sdk is None:
            from label_studio_sdk import LabelStudio

            try:
                self._sdk = LabelStudio(base_url=self.url, api_key=self._key.value, timeout=self.timeout, max_retries=0)
            except Exception as err:  # an expired/invalid personal access token is rejected here
                raise self._translate(err) from None
        return self._sdk

    def _translate(self, err: Exception) -> LabelStudioError:
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        if isinstance(err, LabelStudioError):
            return err
        if isinstance(err, ApiError):
            status = err.status_code
            body = err.body
            detail = body.get("detail") if isinstance(body, dict) else body
            if status in (401, 403):
                extra = f" ({scrub(str(detail), self._key.value)})" if detail else ""
                return LabelStudioAuthError(f"Label Studio at {self.url} refused the API key{extra}")
            if status in (502, 503, 504):
                return LabelStudioUnavailable(f"Label Studio at {self.url} is unavailable (HTTP {status})")
            text = scrub(json.dumps(body, default=str)[:500] if not isinstance(body, str) else body[:500], self._key.value)
            return LabelStudioError(f"Label Studio at {self.url} answered HTTP {status}: {text}")
        if isinstance(err, httpx.TimeoutException):
            return LabelStudioTimeout(f"Label Studio at {self.url} did not answer within {self.timeout:g} s")
        if isinstance(err, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.NetworkError)):
            return LabelStudioUnavailable(f"Label Studio at {self.url} is unreachable "
                                          f"({scrub(str(err), self._key.value) or err.__class__.__name__})")
        if isinstance(err, (httpx.InvalidURL, httpx.UnsupportedProtocol)):
            return LabelStudioError(f"invalid Label Studio URL {self.url!r}: {err}")
        return LabelStudioError(f"Label Studio at {self.url}: {err.__class__.__name__}: {scrub(str(err), self._key.value)}")

    def _call(self, fn: Callable, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise self._translate(err) from None

    # -- API
    def check(self) -> dict:
        """Who the key belongs to ({"id", "email"}); raises LabelStudioAuthError / LabelStudioUnavailable."""
        me = self._call(lambda: self.sdk.users.whoami())
        return {"id": _get(me, "id"), "email": _get(me, "email")}

    def create_project(self, title: str, label_config: str = LABEL_CONFIG) -> int:
        """A new project with the ITJNER labeling config; Label Studio wants a 3-50 character title."""
        if not 3 <= len(title.strip()) <= 50:
            raise ValueError(f"Label Studio project titles have 3 to 50 characters; got {len(title.strip())}")
        project = self._call(lambda: self.sdk.projects.create(title=title, label_config=label_config))
        return int(project.id)

    def project_title(self, project_id: int) -> str:
        return self._call(lambda: self.sdk.projects.get(id=int(project_id))).title

    def list_tasks(self, project_id: int, full: bool = True, page_size: int = 500) -> list[Any]:
        """All tasks of a project, every page (with annotations and predictions when `full`)."""
        def run():
            kwargs = {"project": int(project_id), "page_size": int(page_size)}
            if not full:
                kwargs.update(fields="task_only", include="id,data")
            return list(self.sdk.tasks.list(**kwargs))
        return self._call(run)

    def count_tasks(self, project_id: int) -> int:
        return len(self.list_tasks(project_id, full=False))

    def existing_keys(self, project_id: int) -> dict[str, int]:
        """itjner_key -> task id for the tasks already in the project."""
        keys = {}
        for task in self.list_tasks(project_id, full=False):
            data = _get(task, "data") or {}
            if data.get("itjner_key"):
                keys[data["itjner_key"]] = int(_get(task, "id"))
        return keys

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        if not tasks:
            return []
        resp = self._call(lambda: self.sdk.projects.import_tasks(id=int(project_id), request=tasks,
                                                                 return_task_ids=True))
        ids = list(_get(resp, "task_ids") or [])
        if len(ids) != len(tasks):
            raise LabelStudioError(f"Label Studio at {self.url} created {len(ids)} of {len(tasks)} tasks")
        return [int(i) for i in ids]

    def push_tasks(self, project_id: int, tasks: Sequence[dict]) -> PushResult:
        """Create the tasks whose itjner_key is not in the project yet (in the given order); skip the others."""
        existing = self.existing_keys(project_id)
        result = PushResult()
        todo, seen = [], set()
        for task in tasks:
            key = task["data"].get("itjner_key")
            if key in existing or key in seen:
                result.skipped.append(key)
                continue
            if key:
                seen.add(key)
            todo.append(task)
        result.created = self.import_tasks(project_id, todo)
        return result

    def pull_annotations(self, project_id: int) -> list[Tweet]:
        """Annotated tasks (task order) as tweets with BIO tags from each task's latest annotation."""
        tweets = []
        for task in sorted(self.list_tasks(project_id), key=lambda t: int(_get(t, "id"))):
            tweet = tweet_from_task(task)
            if tweet is not None:
                tweets.append(tweet)
        return tweets


def connect(url: str | None = None, api_key: str | None = None, timeout: float = 20.0) -> LabelStudioClient:
    """A client whose key the server accepted (URL/key default to LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY)."""
    client = LabelStudioClient(url, api_key, timeout)
    client.check()
    return client


# ------------------------------------------------------------------------------------------------------------ CLI
def _predict(args, get_predictor):
    tweets = read_tweets(args.data)
    if not tweets:
        raise ValueError(f"{args.data}: no tweets")
    predictor = get_predictor(args.checkpoint)
    predictions = predictor.predict(tweets, images_dir=args.images)
    return predictions, predictor.model_version


def cmd_export(args, get_predictor) -> int:
    if args.format != "labelstudio":
        raise ValueError(f"unknown export format {args.format!r}")
    predictions, version = _predict(args, get_predictor)
    n = export_tasks_json(predictions, args.images, version, args.out, order=args.order)
    print(f"wrote {n} task(s) to {args.out}; create a project with this labeling config, then import the file:\n"
          f"{LABEL_CONFIG}")
    return 0


def cmd_push(args, get_predictor) -> int:
    client = connect(args.url, getattr(args, "api_key", None))
    project = client.create_project(args.create) if args.create else int(args.project)
    predictions, version = _predict(args, get_predictor)
    tasks = build_tasks(predictions, args.images, version, order=args.order)
    result = client.push_tasks(project, tasks)
    print(f"project {project} at {client.url}: {result}")
    return 0


def cmd_pull(args) -> int:
    client = connect(args.url, getattr(args, "api_key", None))
    tweets = client.pull_annotations(int(args.project))
    for tw in tweets:
        for problem in tw.meta.get("problems", []):
            print(f"warning: task {tw.meta.get('task_id')}: {problem}", file=sys.stderr)
    out = Path(args.out)
    out.write_text(format_conll(tweets), encoding="utf-8")
    print(f"wrote {len(tweets)} annotated tweet(s) from project {args.project} to {out}")
    return 0


def cmd_flush(args) -> int:
    from .outbox import Outbox

    box = Outbox(args.outbox_dir) if getattr(args, "outbox_dir", None) else Outbox()
    client = LabelStudioClient(args.url, getattr(args, "api_key", None))
    result = box.flush(client)
    print(result)
    return 0 if result.pending == 0 else 1


def add_cli(subparsers, get_predictor: Callable[[str | None], Any]) -> None:
    """Register `export` and `labelstudio {push,pull,flush}`; each sets `func(args) -> exit code`.
    Errors are LabelStudioError (a RuntimeError) or ValueError, with messages ready to print."""
    def common(p, url=True):
        if url:
            p.add_argument("--url", help=f"Label Studio URL (default $LABEL_STUDIO_URL or {DEFAULT_URL})")
            p.add_argument("--api-key", help="API key (prefer $LABEL_STUDIO_API_KEY: arguments show up in `ps`)")

    def predicting(p):
        p.add_argument("--data", required=True, help="tweets to tag: CoNLL, JSONL or CSV")
        p.add_argument("--images", help="folder with <IMGID>.jpg (missing images are sent without one)")
        p.add_argument("--checkpoint", help="trained model folder")
        p.add_argument("--order", choices=["file", "uncertainty"], default="file",
                       help="task order: as in the file, or least confident first")

    ex = subparsers.add_parser("export", help="write predictions as a Label Studio tasks.json (no server needed)")
    ex.add_argument("--format", choices=["labelstudio"], default="labelstudio")
    ex.add_argument("--out", required=True, help="tasks.json to write")
    predicting(ex)
    ex.set_defaults(func=lambda a: cmd_export(a, get_predictor))

    ls = subparsers.add_parser("labelstudio", help="send predictions to / fetch annotations from Label Studio")
    lsub = ls.add_subparsers(dest="ls_command", required=True)
    push = lsub.add_parser("push", help="create pre-annotated tasks (existing ones are skipped)")
    common(push)
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--project", type=int, help="existing project id")
    target.add_argument("--create", metavar="TITLE", help="create a project with the ITJNER labeling config")
    predicting(push)
    push.set_defaults(func=lambda a: cmd_push(a, get_predictor))

    pull = lsub.add_parser("pull", help="write the latest annotation of each annotated task as Twitter CoNLL")
    common(pull)
    pull.add_argument("--project", type=int, required=True)
    pull.add_argument("--out", required=True, help="CoNLL file to write (IMGID: format)")
    pull.set_defaults(func=cmd_pull)

    flush = lsub.add_parser("flush", help="send the corrections queued in the local outbox")
    common(flush)
    flush.add_argument("--outbox-dir", help="folder of outbox.sqlite (default $ITJNER_DATA_DIR or ~/.local/share/itjner)")
    flush.set_defaults(func=cmd_flush)
