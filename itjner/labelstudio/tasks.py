"""Label Studio task format: predictions out as pre-annotated tasks, annotations back as tweets. No I/O to a server.

A task is built from a `Prediction` (and the tweet's image bytes):

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
correction is a human judgement, so it is stored as one.

Pulling takes, per task, the latest (by update time) non-cancelled annotation and maps each labelled character span
back onto the task's own `tokens` (every token it overlaps), so the CoNLL written is exactly the tokens sent.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..data import ENTITY_TYPES, Entity, Prediction, Tweet, char_offsets, entities_to_bio

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
        from ..images import ImageError, decode_image

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
    from ..images import read_image_bytes

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
