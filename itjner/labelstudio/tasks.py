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
import html
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..data import ENTITY_TYPES, Entity, Prediction, Tweet, char_offsets, entities_to_bio

FROM_NAME, TO_NAME = "label", "text"
ORIGIN_MODEL, ORIGIN_CORRECTION = "model", "user-correction"

IMAGE_MAX_HEIGHT = "300px"  # the tweet comes first; the image below it is capped so Submit stays in view

LABEL_CONFIG = (
    "<View>\n"
    f'  <Labels name="{FROM_NAME}" toName="{TO_NAME}">\n'
    + "".join(f'    <Label value="{t}"/>\n' for t in ENTITY_TYPES)
    + "  </Labels>\n"
    f'  <Text name="{TO_NAME}" value="$text" granularity="word"/>\n'
    f'  <Image name="image" value="$image" maxHeight="{IMAGE_MAX_HEIGHT}" maxWidth="100%"/>\n'
    "</View>\n"
)

MAX_IMAGE_BYTES = 1_000_000  # larger images (or unknown formats) are re-encoded as JPEG, longest side MAX_IMAGE_SIDE
MAX_IMAGE_SIDE = 1024


def tweet_fingerprint(tokens: Sequence[str]) -> str:
    """The tweet's characters without whitespace and with HTML entities decoded: the same for any tokenisation of
    the same text ("sauce.." / "sauce . .", "3," / "3 ,", "&amp;" / "&amp ;" / "&")."""
    return "".join(html.unescape("".join(str(t) for t in tokens)).split())


def compute_task_key(image_id: str, tokens: Sequence[str]) -> str:
    """The task's identity in a project: the image id and the tweet's text (not its tokenisation, not any
    correction), so a tweet has one task per project whoever sends it and however it was tokenised."""
    blob = json.dumps([str(image_id), tweet_fingerprint(tokens)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def correction_key(task_key: str, correction: Iterable[Entity]) -> str:
    """The identity of one correction of a task (outbox items): same tweet and same entities -> same key."""
    corr = sorted([e.start, e.end, e.type] for e in correction)
    return task_key + ":" + hashlib.sha256(json.dumps(corr).encode()).hexdigest()[:12]


def _char_owner(tokens: Sequence[str]) -> tuple[str, list[int]]:
    chars, owner = [], []
    for i, tok in enumerate(tokens):
        for ch in str(tok):
            if not ch.isspace():
                chars.append(ch)
                owner.append(i)
    return "".join(chars), owner


def map_entities(src_tokens: Sequence[str], entities: Iterable[Entity], dst_tokens: Sequence[str]) -> list[Entity]:
    """Entities over `src_tokens` moved onto another tokenisation of the same text (matching non-space characters;
    an entity covers every destination token one of its characters falls in). Same tokens: unchanged."""
    entities = list(entities)
    if list(src_tokens) == list(dst_tokens):
        return entities
    import difflib

    src, src_owner = _char_owner(src_tokens)
    dst, dst_owner = _char_owner(dst_tokens)
    to_dst: dict[int, int] = {}
    for a, b, n in difflib.SequenceMatcher(None, src, dst, autojunk=False).get_matching_blocks():
        for k in range(n):
            to_dst[a + k] = dst_owner[b + k]
    out, taken = [], set()
    for ent in sorted(entities, key=lambda e: (e.start, e.end)):
        words = sorted({to_dst[c] for c, o in enumerate(src_owner) if ent.start <= o < ent.end and c in to_dst})
        words = [w for w in range(words[0], words[-1] + 1) if w not in taken] if words else []
        if words:
            taken.update(words)
            out.append(Entity(words[0], words[-1] + 1, ent.type, ent.score))
    return out


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


def entity_results(tokens: Sequence[str], entities: Iterable[Entity], id_prefix: str = "e", *, text: str | None = None,
                   spans: Sequence[tuple[int, int]] | None = None, from_name: str = FROM_NAME, to_name: str = TO_NAME,
                   label_of: Callable[[str], str | None] = str) -> list[dict]:
    """One Label Studio `labels` region per entity, over the characters of its words: in " ".join(tokens) by default,
    or in `text` where `spans` gives each token's character span (a task's own text, as the ML backend answers).
    `label_of` maps an entity type to the project's label (None: the project has no label for it; left out)."""
    if spans is None:
        spans, text = char_offsets(tokens), " ".join(tokens)
    results = []
    for i, ent in enumerate(sorted(entities, key=lambda e: (e.start, e.end))):
        if not (0 <= ent.start < ent.end <= len(tokens)):
            raise ValueError(f"entity {ent} outside the tweet's {len(tokens)} tokens")
        label = label_of(ent.type)
        if label is None:
            continue
        c0, c1 = spans[ent.start][0], spans[ent.end - 1][1]
        item = {"id": f"{id_prefix}{i}", "from_name": from_name, "to_name": to_name, "type": "labels",
                "value": {"start": c0, "end": c1, "text": text[c0:c1], "labels": [label]}}
        if ent.score is not None:
            item["score"] = float(ent.score)
        results.append(item)
    return results


def task_from_prediction(pred: Prediction, image_bytes: bytes | None, model_version: str,
                         correction: list[Entity] | None = None, task_key: str | None = None,
                         image_url: str | None = None) -> dict:
    """A Label Studio task (import format) for one predicted tweet; see the module docstring for the layout.
    `image_url` (an uploaded file's or a local-files URL) replaces the data URL made from `image_bytes`."""
    tweet = pred.tweet
    tokens = list(tweet.tokens)
    key = task_key or compute_task_key(tweet.image_id, tokens)
    url, problem = (image_url, None) if image_url else image_data_url(image_bytes)
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
                corrections: dict[int, list[Entity]] | None = None, image_urls: dict[str, str] | None = None
                ) -> list[dict]:
    """Tasks for many predictions, images read from `images_dir/<image_id>.jpg` (missing ones give "") unless
    `image_urls` maps the image id to a URL (uploaded or local files: no base64 in the task)."""
    from ..images import read_image_bytes

    tasks = []
    corrections = corrections or {}
    index = {id(p): i for i, p in enumerate(predictions)}
    for pred in order_predictions(predictions, order):
        url = (image_urls or {}).get(str(pred.tweet.image_id))
        blob = None if url else read_image_bytes(images_dir, pred.tweet.image_id)
        tasks.append(task_from_prediction(pred, blob, model_version, corrections.get(index[id(pred)]),
                                          image_url=url))
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
def field_of(obj: Any, name: str, default=None):
    """A field of an SDK object or of its JSON dict (the SDK returns models, exports and tests give dicts)."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    value = getattr(obj, name, default)
    return default if value is None else value


def as_dict(obj: Any) -> dict:
    """An SDK object (pydantic model) or a dict, as a dict."""
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


def scored_entities(tokens: Sequence[str], result: Iterable[dict]) -> list[Entity]:
    """Entities of a prediction's regions, each with its region's score."""
    out = []
    for item in result:
        ents = result_to_entities(tokens, [item])
        if ents:
            out.append(Entity(ents[0].start, ents[0].end, ents[0].type, as_dict(item).get("score")))
    return out


def result_to_entities(tokens: Sequence[str], result: Iterable[dict], problems: list[str] | None = None
                       ) -> list[Entity]:
    """Labelled character spans -> word entities: each region covers every token it overlaps. Regions of other
    controls are ignored; a region overlapping an earlier one keeps only its tokens not already taken."""
    offsets = char_offsets(tokens)
    spans = []
    for item in result:
        item = as_dict(item)
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
    live = [as_dict(a) for a in annotations or []]
    live = [a for a in live if not a.get("was_cancelled")]
    if not live:
        return None
    return max(live, key=lambda a: (_timestamp(a.get("updated_at") or a.get("created_at")), a.get("id") or 0))


def tweet_from_task(task: Any) -> Tweet | None:
    """The tweet of one exported/listed task with BIO tags from its latest annotation (None if not annotated)."""
    task = as_dict(task)
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


def task_key_of(task: Any) -> str:
    """A task's tweet identity, computed from what it holds (image id and tokens/text), so tasks made by older
    versions (whose stored `itjner_key` also hashed the correction) or elsewhere are recognised too."""
    data = as_dict(task).get("data") or {}
    try:
        return compute_task_key(str(data.get("image_id", "")), task_tokens(data))
    except ValueError:
        return data.get("itjner_key") or f"task-{as_dict(task).get('id')}"


def tweets_from_tasks(tasks: Iterable[Any]) -> tuple[list[Tweet], int]:
    """(one tweet per tweet key, in first-task order, tagged by the latest submitted annotation over all of that
    tweet's tasks; how many annotated duplicate tasks were merged away). Older projects can hold a tweet twice
    (before keys ignored corrections and tokenisation); `pull` must never write it twice."""
    best: dict[str, tuple[float, Tweet]] = {}
    order: list[str] = []
    merged = 0
    for task in sorted((as_dict(t) for t in tasks), key=lambda t: int(t.get("id") or 0)):
        tweet = tweet_from_task(task)
        if tweet is None:
            continue
        key = task_key_of(task)
        ann = latest_annotation(task.get("annotations")) or {}
        stamp = (_timestamp(ann.get("updated_at") or ann.get("created_at")), ann.get("id") or 0)
        if key in best:
            merged += 1
            if stamp <= best[key][0]:
                continue
        else:
            order.append(key)
        best[key] = (stamp, tweet)
    return [best[k][1] for k in order], merged
