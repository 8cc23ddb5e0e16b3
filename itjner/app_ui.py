"""What the Gradio app (app.py) does, without the layout: model loading and caching, input checks with messages for
users, turning a `Prediction` into what the widgets show, heatmap selection, plots, the Label Studio hand-off and
the error-analysis / export runs. No model math here (predict.py tags, heatmap.py draws, analysis.py counts).

Tweets are untrusted: their text only ever reaches widgets that render text as text (Textbox, HighlightedText,
Dropdown, JSON, Dataframe) or matplotlib with math parsing off; Markdown messages never include tweet text and
escape everything else they quote.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .data import ENTITY_TYPES, Entity, Prediction, Tweet, char_offsets, tokenize

MAX_CHARS = 2000                  # tweets have at most 280; longer input is refused with a message
MAX_UPLOAD_MB = 25                # the app's upload limit (launch(max_file_size=...))
DISPLAY_SIDE = 512                # longest side of the image the heatmaps are drawn on
DEFAULT_SOURCE = "checkpoint default"
CAPTION_SOURCES = (DEFAULT_SOURCE, "tags", "given")
TYPE_COLOURS = {"PER": "#ff9f9f", "LOC": "#9fd3ff", "ORG": "#a8e6a1", "MISC": "#f7d38a"}
MAP_Q = "Q: text-guided image attention"
MAP_H = "H: image-aware text path"
MEAN_HEADS = "mean of heads"


class UserError(ValueError):
    """Something the user can fix; the message is shown as is."""


def md_escape(text: Any) -> str:
    """Text for a Markdown message, shown literally: every ASCII punctuation character backslash-escaped (CommonMark),
    so no emphasis, link or HTML tag can come out of it. (Gradio's Markdown escapes HTML entities itself, so
    html.escape would show up as "&amp;lt;".)"""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", str(text)).replace("\n", " ")


def md_code(text: Any) -> str:
    """Text as a Markdown code span (rendered literally, HTML included)."""
    return "`" + str(text).replace("`", "'").replace("\n", " ") + "`"


# ------------------------------------------------------------------------------------------------------ inputs
def tokens_from_text(text: str | None) -> list[str]:
    text = (text or "").strip()
    if not text:
        raise UserError("Type the tweet's text first: there is nothing to tag.")
    if len(text) > MAX_CHARS:
        raise UserError(f"The text has {len(text)} characters; this demo tags at most {MAX_CHARS} "
                        "(a tweet has at most 280). Shorten it.")
    tokens = tokenize(text)
    if not tokens:
        raise UserError("The text has no words to tag.")
    return tokens


@dataclass
class ImageInput:
    data: bytes | None = None        # the uploaded file, byte for byte (the feature cache is keyed by its sha256)
    image: Any = None                # decoded RGB PIL image (EXIF orientation applied), scaled for display
    problem: str | None = None       # why the image cannot be used ("no image", "not a readable image (...)")


def read_image_file(path: str | os.PathLike | None, max_mb: float = MAX_UPLOAD_MB) -> ImageInput:
    """The uploaded file -> bytes + a display copy, or the reason it cannot be used."""
    from .heatmap import fit
    from .images import ImageError, decode_image

    if not path:
        return ImageInput(problem="no image")
    path = Path(path)
    if not path.is_file():
        return ImageInput(problem="no image (the upload is gone; upload it again)")
    size = path.stat().st_size
    if size > max_mb * 1_000_000:
        return ImageInput(problem=f"image file too large ({size / 1e6:.1f} MB; at most {max_mb:g} MB)")
    data = path.read_bytes()
    try:
        image = decode_image(data)
    except ImageError as err:
        return ImageInput(data=data, problem=str(err))
    return ImageInput(data=data, image=fit(image, DISPLAY_SIDE, min_side=DISPLAY_SIDE))


def is_checkpoint(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def find_checkpoints(roots: Sequence[str | os.PathLike], limit: int = 30) -> list[str]:
    """Checkpoint folders directly inside `roots` (and the roots themselves), for the chooser."""
    found: list[str] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir())
        for folder in candidates:
            if is_checkpoint(folder) and str(folder) not in found:
                found.append(str(folder))
            if len(found) >= limit:
                return found
    return found


# ------------------------------------------------------------------------------------------------ model service
@dataclass
class PredictResult:
    prediction: Prediction
    image: ImageInput
    checkpoint: str
    caption_source: str | None
    uses_image: bool
    modalities: str
    seconds: float
    cached: bool = False
    notes: list[str] = field(default_factory=list)  # extra Markdown-safe remarks for the status line
    default_caption_source: str = ""                 # the checkpoint's own caption source


class PredictService:
    """Predictors by (checkpoint folder, caption source), loaded once each; one model call at a time; an LRU of
    recent predictions, so asking again for the same tweet, image and settings runs nothing."""

    def __init__(self, default_checkpoint: str | os.PathLike, device: str | None = None,
                 caption_source: str | None = None, cache_dir=None, cache_size: int = 64):
        self.default_checkpoint = str(default_checkpoint)
        self.device = device
        self.default_caption_source = caption_source
        self.cache_dir = cache_dir
        self._predictors: dict[tuple[str, str | None], Any] = {}
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._recent: OrderedDict = OrderedDict()
        self._cache_size = cache_size

    # -- loading
    def resolve(self, checkpoint: str | None) -> str:
        folder = (checkpoint or "").strip() or self.default_checkpoint
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise UserError(f"Checkpoint folder not found: {folder}")
        if not is_checkpoint(path):
            raise UserError(f"{folder} is not an ITJNER checkpoint: it needs config.json and model.safetensors "
                            "(a folder written by `python -m itjner train --out ...` or `save_pretrained`).")
        return str(path.resolve())

    def caption_spec(self, caption_source: str | None) -> str | None:
        spec = (caption_source or "").strip()
        if not spec or spec == DEFAULT_SOURCE:
            return self.default_caption_source
        return spec

    def predictor(self, checkpoint: str | None = None, caption_source: str | None = None):
        from .predict import Predictor

        folder, spec = self.resolve(checkpoint), self.caption_spec(caption_source)
        key = (folder, spec)
        with self._load_lock:
            if key in self._predictors:
                return self._predictors[key]
            base = next((p for (f, _), p in self._predictors.items() if f == folder), None)
            try:
                if base is None:
                    pred = Predictor.from_pretrained(folder, self.device, spec, self.cache_dir)
                else:  # same weights, another caption source: share the model, the CNN and its feature cache
                    pred = base.with_caption_source(spec)
            except UserError:
                raise
            except (FileNotFoundError, ValueError, OSError, RuntimeError) as err:
                raise UserError(f"Cannot load the checkpoint {folder}: {err}") from err
            self._predictors[key] = pred
            return pred

    def warm_up(self) -> float:
        """Load everything the first request would otherwise wait for (image backbone, caption source, kernels) by
        tagging one dummy tweet with a small grey image; returns the seconds it took."""
        import io

        from PIL import Image

        started = time.perf_counter()
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (128, 128, 128)).save(buf, "PNG")
        image = ImageInput(data=buf.getvalue(), image=Image.new("RGB", (64, 48)))
        self.predict_tokens(["warm", "up"], image)
        with self._run_lock:
            self._recent.clear()
        return time.perf_counter() - started

    # -- predicting
    def predict(self, text: str | None, image_path: str | None, caption_override: str | None = None,
                checkpoint: str | None = None, caption_source: str | None = None) -> PredictResult:
        tokens = tokens_from_text(text)
        image = read_image_file(image_path)
        return self.predict_tokens(tokens, image, caption_override, checkpoint, caption_source)

    def predict_tokens(self, tokens: list[str], image: ImageInput, caption_override: str | None = None,
                       checkpoint: str | None = None, caption_source: str | None = None,
                       image_id: str = "app") -> PredictResult:
        predictor = self.predictor(checkpoint, caption_source)
        folder, spec = self.resolve(checkpoint), self.caption_spec(caption_source)
        override = (caption_override or "").strip() or None
        if override and len(override) > MAX_CHARS:
            raise UserError(f"The caption override has {len(override)} characters; at most {MAX_CHARS}.")
        blob = image.data if image.problem is None else None
        from .images import sha256

        key = (folder, spec, sha256(blob) if blob else None, tuple(tokens), override)
        notes = override_notes(predictor.config, spec, override)
        with self._run_lock:
            if key in self._recent:
                self._recent.move_to_end(key)
                pred, seconds = self._recent[key]
                res = self._result(pred, image, folder, spec, predictor, seconds, cached=True)
                res.notes = notes
                return res
            started = time.perf_counter()
            try:
                pred = predictor.predict([Tweet(image_id, tokens)], images=[blob], given_captions=[override],
                                         details=True)[0]
            except ImportError as err:
                raise UserError(f"The caption source {spec or predictor.config.caption_source!r} is not available "
                                f"in this installation ({err}).") from err
            except (ValueError, FileNotFoundError, OSError) as err:
                raise UserError(f"Prediction failed: {err}") from err
            except RuntimeError as err:
                if type(err).__name__ != "CaptionSourceUnavailable":
                    raise
                raise UserError(str(err)) from err
            seconds = time.perf_counter() - started
            self._recent[key] = (pred, seconds)
            while len(self._recent) > self._cache_size:
                self._recent.popitem(last=False)
        res = self._result(pred, image, folder, spec, predictor, seconds)
        res.notes = notes
        return res

    @staticmethod
    def _result(pred, image, folder, spec, predictor, seconds, cached=False) -> PredictResult:
        return PredictResult(pred, image, folder, spec, predictor.config.use_image, predictor.config.modalities(),
                             seconds, cached, default_caption_source=str(predictor.config.caption_source))


def override_notes(config, spec: str | None, override: str | None) -> list[str]:
    """Why a caption override would be ignored (only the `given` source reads it), as Markdown-safe text."""
    if not override:
        return []
    if not config.use_caption:
        return ["ℹ️ This checkpoint does not read captions: the caption override is ignored."]
    effective = spec or config.caption_source
    if not str(effective).startswith("given"):
        return [f"ℹ️ The caption override is used only by the `given` caption source; this run captions with "
                f"{md_code(effective)}."]
    return []


# --------------------------------------------------------------------------------------------------- outputs
def entity_label(ent: Entity) -> str:
    return ent.type if ent.score is None else f"{ent.type} {ent.score:.2f}"


def highlight_value(tokens: Sequence[str], entities: Sequence[Entity], with_scores: bool = True) -> dict:
    """HighlightedText value: the space-joined tokens with one span per entity, labelled "TYPE 0.93"."""
    offsets = char_offsets(tokens)
    spans = []
    for ent in sorted(entities, key=lambda e: e.start):
        label = entity_label(ent) if with_scores else ent.type
        spans.append({"entity": label, "start": offsets[ent.start][0], "end": offsets[ent.end - 1][1]})
    return {"text": " ".join(tokens), "entities": spans}


def colour_map(entities: Sequence[Entity] = ()) -> dict[str, str]:
    colours = dict(TYPE_COLOURS)
    for ent in entities:
        colours[entity_label(ent)] = TYPE_COLOURS.get(ent.type, "#dddddd")
    return colours


def legend_html() -> str:
    """A fixed colour legend of the four types (no user content in it)."""
    chips = "".join(f'<span style="background:{c};color:#000;padding:1px 8px;margin-right:6px;border-radius:4px;'
                    f'font-size:0.85em">{t}</span>' for t, c in TYPE_COLOURS.items())
    return f'<div class="itjner-legend">Entity types: {chips}</div>'


def parse_label(label: Any) -> str:
    """"PER 0.93" / "per" / "B-PER" / "OTHER" -> an entity type; anything else is a UserError."""
    word = str(label).strip().split()[0] if str(label).strip() else ""
    word = word.upper().removeprefix("B-").removeprefix("I-")
    word = "MISC" if word == "OTHER" else word
    if word not in ENTITY_TYPES:
        raise UserError(f"Unknown entity label {str(label)[:40]!r}: use one of {', '.join(ENTITY_TYPES)}.")
    return word


def _segments(value: Any) -> list[tuple[str, Any]]:
    if value is None:
        return []
    if isinstance(value, dict):  # {"text", "entities"} (what the app itself sends)
        text, out, pos = value["text"], [], 0
        for ent in sorted(value.get("entities", []), key=lambda e: e["start"]):
            out += [(text[pos:ent["start"]], None), (text[ent["start"]:ent["end"]], ent.get("entity"))]
            pos = ent["end"]
        return out + [(text[pos:], None)]
    out = []
    for item in value:
        if isinstance(item, dict):
            out.append((item.get("token", ""), item.get("class_or_confidence")))
        else:
            out.append((item[0], item[1]))
    return out


def entities_from_highlight(value: Any, tokens: Sequence[str]) -> list[Entity]:
    """The (possibly user-edited) HighlightedText value -> word-level entities of `tokens`. A labelled span covers
    every word it touches; two spans on the same words count once."""
    segments = _segments(value)
    text = "".join(s for s, _ in segments)
    if text != " ".join(tokens):
        raise UserError("The highlighted text no longer matches the tweet: press Predict again, then correct.")
    offsets = char_offsets(tokens)
    entities, seen, pos = [], set(), 0
    for seg, label in segments:
        start, end = pos, pos + len(seg)
        pos = end
        if label is None or label == "" or not seg.strip():
            continue
        etype = parse_label(label)
        words = [i for i, (c0, c1) in enumerate(offsets) if c0 < end and start < c1]
        if not words:
            continue
        key = (words[0], words[-1] + 1)
        if key in seen:
            continue
        seen.add(key)
        entities.append(Entity(words[0], words[-1] + 1, etype))
    entities.sort(key=lambda e: (e.start, e.end))
    for a, b in zip(entities, entities[1:]):
        if b.start < a.end:
            raise UserError(f"Two corrected spans overlap on the word {tokens[b.start]!r}: keep one.")
    return entities


def prediction_json(pred: Prediction, model: str = "", modalities: str = "") -> dict:
    tokens = pred.tweet.tokens
    return {
        "model": model,
        "modalities": modalities,
        "tokens": list(tokens),
        "tags": list(pred.tags),
        "entities": [{"text": " ".join(tokens[e.start:e.end]), "type": e.type, "start": e.start, "end": e.end,
                      "score": round(float(e.score), 4) if e.score is not None else None} for e in pred.entities],
        "score": round(float(pred.score), 4),
        "caption": pred.caption,
        "image_problem": pred.image_problem,
    }


def status_message(res: PredictResult) -> str:
    """Markdown (no tweet text in it) saying what the prediction used."""
    pred = res.prediction
    name = md_code(Path(res.checkpoint).name)
    parts = [f"**{len(pred.entities)} entit{'y' if len(pred.entities) == 1 else 'ies'}** · model {name} "
             f"({md_escape(res.modalities)}) · {res.seconds * 1000:.0f} ms" + (" (cached)" if res.cached else "")]
    if not res.uses_image:
        parts.append("ℹ️ This checkpoint was trained without the image branch: **the image does not influence its "
                     "predictions**" + (" (only through the caption shown)." if "caption" in res.modalities else "."))
    elif res.image.problem:
        parts.append(f"⚠️ Image not used ({md_escape(res.image.problem)}): the prediction is from the text"
                     f"{' and caption' if pred.caption else ''} only.")
    elif pred.image_problem:
        parts.append(f"⚠️ Image not used ({md_escape(pred.image_problem)}).")
    parts += res.notes
    truncated = (pred.details or {}).get("truncated_words") or 0
    if truncated:
        parts.append(f"⚠️ The last {truncated} word(s) are beyond the model's input length and were tagged O.")
    return "\n\n".join(parts)


def caption_text(res: PredictResult) -> str:
    """What the caption box shows: the caption the model read, or why there is none."""
    if res.prediction.caption:
        return res.prediction.caption
    if "caption" not in res.modalities:
        return "(this checkpoint does not use captions)"
    if str(res.caption_source or "").startswith("given") or (res.caption_source is None and
                                                             res.default_caption_source.startswith("given")):
        return "(no caption: the `given` caption source reads the alt text field, which is empty)"
    if res.image.problem:
        return "(no caption: no usable image)"
    return "(the caption source gave an empty caption for this image)"


# ---------------------------------------------------------------------------------------------- heatmap choice
def token_choices(pred: Prediction) -> list[tuple[str, str]]:
    """Dropdown choices: each entity ("e:start:end"), then each word ("w:i")."""
    tokens = pred.tweet.tokens
    out = [(f"[{e.type}] {' '.join(tokens[e.start:e.end])}", f"e:{e.start}:{e.end}") for e in pred.entities]
    out += [(f"#{i} {tok}", f"w:{i}") for i, tok in enumerate(tokens)]
    return out


def words_of_choice(choice: str | None, n_words: int) -> list[int]:
    if not choice:
        return [0] if n_words else []
    kind, _, rest = str(choice).partition(":")
    try:
        if kind == "e":
            a, b = (int(x) for x in rest.split(":"))
            words = list(range(a, b))
        elif kind == "w":
            words = [int(rest)]
        else:
            raise ValueError(choice)
    except ValueError as err:
        raise UserError(f"Unknown token choice {str(choice)[:40]!r}.") from err
    words = [w for w in words if 0 <= w < n_words]
    if not words:
        raise UserError("That word was not seen by the model (beyond its input length).")
    return words


def map_sources(pred: Prediction) -> list[str]:
    details = pred.details or {}
    return [name for name, key in ((MAP_Q, "Q"), (MAP_H, "H")) if details.get(key) is not None]


def head_choices(pred: Prediction) -> list[str]:
    details = pred.details or {}
    q = details.get("Q")
    if q is None:
        return [MEAN_HEADS]
    return [MEAN_HEADS] + [f"head {i + 1}" for i in range(np.asarray(q).shape[0])]


def head_index(head: str | None) -> int | None:
    if not head or head == MEAN_HEADS:
        return None
    try:
        return int(str(head).split()[-1]) - 1
    except ValueError as err:
        raise UserError(f"Unknown head {str(head)[:20]!r}.") from err


def render_heatmap(pred: Prediction, image, choice: str | None, source: str | None = MAP_Q,
                   head: str | None = MEAN_HEADS):
    """The chosen word's / entity's attention map drawn over the display image; None when there is none."""
    from .heatmap import attention_grid, overlay

    details = pred.details or {}
    key = "H" if source == MAP_H else "Q"
    attn = details.get(key)
    if image is None or attn is None:
        return None
    attn = np.asarray(attn)
    n_words = attn.shape[1]
    words = words_of_choice(choice, n_words)
    h = head_index(head)
    grid = attention_grid(attn, words, h)
    label = " ".join(pred.tweet.tokens[w] for w in words)
    heads = f"mean of {attn.shape[0]} heads" if h is None else f"head {h + 1}"
    title = f"{key} · \u201c{label}\u201d · {heads}"
    return overlay(image, grid, title=title)


def caption_gallery(pred: Prediction, image, max_words: int = 16) -> list:
    """(thumbnail, caption word) per caption word that has an attention map."""
    from .heatmap import grid_side, thumbnails

    attn = (pred.details or {}).get("caption_attention")
    if image is None or not attn or not pred.caption:
        return []
    words = pred.caption.split()
    grids, labels = [], []
    for i, weights in enumerate(attn[:max_words]):
        if weights is None:
            continue
        w = np.asarray(weights, dtype=np.float32)
        side = grid_side(w.size)
        grids.append(w.reshape(side, side))
        labels.append(words[i] if i < len(words) else f"word {i + 1}")
    return thumbnails(image, grids, labels)


# ------------------------------------------------------------------------------------------------------ plots
def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def gate_frame(pred: Prediction):
    """The mean visual gate per word as a table for gr.BarPlot (drawn in the browser, nothing rendered here):
    columns word ("#i token", unique and in tweet order), gate, type (predicted entity type or "O"); None when the
    model has no gate."""
    import pandas as pd

    gate = (pred.details or {}).get("gate")
    if gate is None:
        return None
    gate = np.asarray(gate, dtype=np.float32)
    tokens = pred.tweet.tokens[: len(gate)]
    types = [t.partition("-")[2] or "O" for t in pred.tags[: len(gate)]]
    return pd.DataFrame({"word": [f"#{i} {_short(t)}" for i, t in enumerate(tokens)],
                         "gate": [round(float(g), 4) for g in gate], "type": types})


GATE_COLOURS = {**TYPE_COLOURS, "O": "#b0b0b0"}


def to_jpeg_file(image, quality: int = 92) -> str | None:
    """Write a rendered image as a JPEG (a few ms; PNG takes ~60 ms for a heatmap) and return its path. Gradio
    copies returned files into its own cache, so only the latest files are kept here."""
    if image is None:
        return None
    global _JPEG_DIR
    if _JPEG_DIR is None:
        _JPEG_DIR = Path(tempfile.mkdtemp(prefix="itjner-app-"))
    fd, name = tempfile.mkstemp(suffix=".jpg", dir=_JPEG_DIR)
    with os.fdopen(fd, "wb") as fh:
        image.save(fh, "JPEG", quality=quality)
    with _JPEG_LOCK:
        _JPEG_FILES.append(name)
        while len(_JPEG_FILES) > 256:
            Path(_JPEG_FILES.pop(0)).unlink(missing_ok=True)
    return name


_JPEG_DIR: Path | None = None
_JPEG_FILES: list[str] = []
_JPEG_LOCK = threading.Lock()


def _short(token: str, n: int = 14) -> str:
    return token if len(token) <= n else token[: n - 1] + "…"


def confusion_figure(rows: Sequence[str], cols: Sequence[str], matrix: Sequence[Sequence[int]], title: str = ""):
    fig = _figure(5.2, 4.4)
    ax = fig.add_subplot()
    m = np.asarray(matrix, dtype=np.float64)
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(cols)), [("none\n(missed)" if c == "none" else c) for c in cols])
    ax.set_yticks(range(len(rows)), [("none\n(spurious)" if r == "none" else r) for r in rows])
    ax.set_xlabel("predicted type")
    ax.set_ylabel("gold type")
    top = m.max() if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if i == m.shape[0] - 1 and j == m.shape[1] - 1:
                continue
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=9,
                    color="white" if top and m[i, j] > top / 2 else "black")
    ax.set_title(title or "Gold vs predicted chunk types", fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------- Label Studio
def _scrub(text: str, *secrets: str | None) -> str:
    from .labelstudio import scrub

    for secret in secrets:
        text = scrub(text, secret)
    return text


def send_to_label_studio(pred: Prediction, image_bytes: bytes | None, highlighted: Any, model_version: str,
                         project: Any, url: str | None = None, api_key: str | None = None, outbox=None,
                         timeout: float = 10.0) -> str:
    """Queue the tweet (with the user's corrections as an annotation when they differ from the prediction) in the
    outbox, then try to deliver everything pending. Returns a message for the UI: delivered, or "N queued: <why>".
    The API key never appears in it."""
    from .labelstudio import task_from_prediction
    from .outbox import Outbox

    try:
        project_id = int(project)
    except (TypeError, ValueError):
        raise UserError("Enter the Label Studio project id (a number, from the project's URL).") from None
    if project_id <= 0:
        raise UserError("Enter the Label Studio project id (a number, from the project's URL).")
    corrected = entities_from_highlight(highlighted, pred.tweet.tokens)
    same = sorted(e.key() for e in corrected) == sorted(e.key() for e in pred.entities)
    task = task_from_prediction(pred, image_bytes, model_version, correction=None if same else corrected)
    box = outbox if outbox is not None else Outbox()
    box.enqueue(task, project_id)
    what = "the prediction" if same else "your correction"
    return _scrub(f"Queued {what}. " + flush_outbox(box, url, api_key, timeout), api_key,
                  os.environ.get("LABEL_STUDIO_API_KEY"))


def flush_outbox(box=None, url: str | None = None, api_key: str | None = None, timeout: float = 10.0) -> str:
    from .labelstudio import LabelStudioClient, LabelStudioError
    from .outbox import Outbox

    box = box if box is not None else Outbox()
    if box.pending_count() == 0:
        return "Nothing queued."
    try:
        client = LabelStudioClient((url or "").strip() or None, (api_key or "").strip() or None, timeout=timeout)
        result = box.flush(client)
    except LabelStudioError as err:
        msg = f"{box.pending_count()} queued: {err}"
    else:
        if result.pending:
            msg = f"{result.pending} queued: {result.error or box.last_error or 'not sent yet'}"
        else:
            msg = f"Sent to Label Studio at {client.url} ({result.sent} created, {result.already} already there)."
    return _scrub(msg, api_key, os.environ.get("LABEL_STUDIO_API_KEY"))


def outbox_status() -> str:
    from .outbox import Outbox

    try:
        return _scrub(Outbox().status_line(), os.environ.get("LABEL_STUDIO_API_KEY"))
    except Exception as err:  # an unwritable data folder must not break the page
        return f"outbox unavailable: {err.__class__.__name__}"


# ---------------------------------------------------------------------------------------- analysis and export
def _split_file(path: str | None) -> Path:
    from .train import split_path

    if not (path or "").strip():
        raise UserError("Give the path of a CoNLL split file (e.g. ../shared/data/twitter2017/test.txt).")
    try:
        return split_path(Path(path.strip()).expanduser(), "test")
    except FileNotFoundError as err:
        raise UserError(f"No CoNLL file at {path}: {err}") from err


def _images_dir(path: str | None) -> Path | None:
    if not (path or "").strip():
        return None
    folder = Path(path.strip()).expanduser()
    if not folder.is_dir():
        raise UserError(f"Images folder not found: {path}")
    return folder


@dataclass
class AnalysisRun:
    tweets: list[Tweet]
    predictions: list[Prediction]
    result: Any                      # analysis.AnalysisResult
    images_dir: str | None
    checkpoint: str
    caption_source: str | None
    jsonl: str
    image_summary: str = ""
    extra: dict = field(default_factory=dict)


def run_analysis(service: PredictService, split: str | None, images: str | None, checkpoint: str | None,
                 caption_source: str | None, mode: str = "exact",
                 progress: Callable[[float, str], None] | None = None, chunk: int = 64) -> AnalysisRun:
    from .analysis import analyse, write_jsonl
    from .data import read_conll
    from .images import ImageReport

    path = _split_file(split)
    images_dir = _images_dir(images)
    try:
        tweets = read_conll(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not a Twitter CoNLL file: {err}") from err
    tweets = [t for t in tweets if t.tokens]
    if not tweets:
        raise UserError(f"{path} has no tweets.")
    if any(t.tags is None for t in tweets):
        raise UserError(f"{path} has no gold tags.")
    predictor = service.predictor(checkpoint, caption_source)
    report = ImageReport()
    preds: list[Prediction] = []
    for start in range(0, len(tweets), chunk):
        if progress:
            progress(start / len(tweets), f"tagged {start} of {len(tweets)} tweets")
        with service._run_lock:
            preds += predictor.predict(tweets[start:start + chunk], images_dir=images_dir, report=report)
    if progress:
        progress(1.0, f"tagged {len(tweets)} tweets")
    try:
        result = analyse(tweets, preds, mode)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from err
    out = Path(tempfile.mkdtemp(prefix="itjner-analysis-")) / f"errors-{path.stem}.jsonl"
    write_jsonl(result.rows, out)
    summary = report.summary() if predictor.config.use_image else "the checkpoint does not use images"
    return AnalysisRun(tweets, preds, result, str(images_dir) if images_dir else None, service.resolve(checkpoint),
                       caption_source, str(out), summary)


def error_table(rows: Sequence[dict], max_text: int = 90) -> list[list]:
    out = []
    for row in rows:
        text = row["text"] if len(row["text"]) <= max_text else row["text"][: max_text - 1] + "…"
        out.append([row["index"], row["image_id"], ", ".join(row["error_kinds"]), len(row["errors"]), text])
    return out


ERROR_HEADERS = ["#", "image id", "errors", "n", "tweet"]


def gold_pred_highlights(row: dict) -> tuple[dict, dict]:
    tokens = row["tokens"]

    def ents(chunks):
        return [Entity(c["start"], c["end"], c["type"], c.get("score")) for c in chunks]

    return (highlight_value(tokens, ents(row["gold"]), with_scores=False),
            highlight_value(tokens, ents(row["pred"])))


def run_export(service: PredictService, data: str | None, images: str | None, checkpoint: str | None,
               caption_source: str | None, order: str = "file") -> tuple[str, int]:
    from .data import read_tweets
    from .labelstudio import export_tasks_json

    if not (data or "").strip():
        raise UserError("Give the path of the tweets to pre-annotate (CoNLL, JSONL or CSV).")
    path = Path(data.strip()).expanduser()
    if not path.is_file():
        raise UserError(f"No file at {data}")
    images_dir = _images_dir(images)
    try:
        tweets = [t for t in read_tweets(path) if t.tokens]
    except (ValueError, KeyError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"Cannot read tweets from {path}: {err}") from err
    if not tweets:
        raise UserError(f"{path} has no tweets.")
    predictor = service.predictor(checkpoint, caption_source)
    with service._run_lock:
        preds = predictor.predict(tweets, images_dir=images_dir, progress=True)
    out = Path(tempfile.mkdtemp(prefix="itjner-export-")) / f"{path.stem}-tasks.json"
    n = export_tasks_json(preds, images_dir, predictor.model_version, out, order=order)
    return str(out), n
