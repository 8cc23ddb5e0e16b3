"""A `Prediction` as the widgets show it: highlighted spans (and the user's corrections back), status and caption
lines, heatmap choices and pictures, the gate table, the confusion figure.

Tweets are untrusted: their text only ever reaches widgets that render text as text (Textbox, HighlightedText,
Dropdown, JSON, Dataframe) or matplotlib with math parsing off; Markdown messages never include tweet text and
escape everything else they quote.
"""
from __future__ import annotations

import html
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data import ENTITY_TYPES, Entity, Prediction, char_offsets
from .messages import UserError, md_code, md_escape
from .service import PredictResult

TYPE_COLOURS = {"PER": "#ff9f9f", "LOC": "#9fd3ff", "ORG": "#a8e6a1", "MISC": "#f7d38a"}
MAP_Q = "Q: text-guided image attention"
MAP_H = "H: image-aware text path"
MEAN_HEADS = "mean of heads"


# --------------------------------------------------------------------------------------------------- outputs
NOT_AN_ENTITY = "not an entity"
CORRECTION_TYPES = list(ENTITY_TYPES) + [NOT_AN_ENTITY]
EDITED = "edited"


def entity_label(ent: Entity) -> str:
    """"PER 0.93" for the model's spans (its confidence), "PER edited" for spans a user set (no model score)."""
    return f"{ent.type} {EDITED}" if ent.score is None else f"{ent.type} {ent.score:.2f}"


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
    return (f'<div class="itjner-legend">Entity types: {chips} <span style="opacity:0.75;font-size:0.85em">'
            f'· the number is the model\'s confidence; spans you correct say "{EDITED}" (no model score)</span></div>')


def word_choices(tokens: Sequence[str]) -> list[tuple[str, int]]:
    """Choices of the correction panel's word picker: ("#i word", i)."""
    return [(f"#{i} {_short(tok, 24)}", i) for i, tok in enumerate(tokens)]


def apply_correction(entities: Sequence[Entity], words: Sequence[Any], etype: str | None, n_words: int
                     ) -> list[Entity]:
    """The entities after a user labels the contiguous `words` as `etype` (one of the four types, or "not an
    entity" to remove what is there): spans overlapping those words give way; the new span has no model score."""
    try:
        picked = sorted({int(w) for w in words or []})
    except (TypeError, ValueError):
        raise UserError("Pick the words to label from the list.") from None
    if not picked:
        raise UserError("Pick the word(s) to label first (click a span, or choose words from the list).")
    if picked[0] < 0 or picked[-1] >= n_words:
        raise UserError("Those words are not in this tweet: press Predict again.")
    if picked != list(range(picked[0], picked[-1] + 1)):
        raise UserError("An entity is one run of consecutive words: pick words next to each other.")
    if etype not in CORRECTION_TYPES:
        raise UserError(f"Choose a type: {', '.join(CORRECTION_TYPES)}.")
    start, end = picked[0], picked[-1] + 1
    kept = [e for e in entities if e.end <= start or e.start >= end]
    if etype != NOT_AN_ENTITY:
        kept.append(Entity(start, end, etype))
    return sorted(kept, key=lambda e: (e.start, e.end))


def words_of_span(tokens: Sequence[str], entities: Sequence[Entity], index: Any, value: Any) -> list[int]:
    """The words of the span a user clicked in the highlighted text ([] for plain text). HighlightedText segments
    alternate plain text and spans (empty ones included), so segment `index` 2k+1 is span k; the clicked text
    confirms it."""
    text = value[0] if isinstance(value, (list, tuple)) and value else None
    spans = sorted(entities, key=lambda e: e.start)
    if isinstance(index, int) and index % 2 == 1 and index // 2 < len(spans):
        span = spans[index // 2]
        if text is None or text == " ".join(tokens[span.start:span.end]):
            return list(range(span.start, span.end))
    for span in spans:
        if text is not None and text == " ".join(tokens[span.start:span.end]):
            return list(range(span.start, span.end))
    return []


def prediction_json(pred: Prediction, model: str = "", modalities: str = "",
                    corrected: Sequence[Entity] | None = None) -> dict:
    """The prediction as the JSON panel shows it; after a correction, also the corrected entities (what "Send to
    Label Studio" delivers as the annotation) beside the model's."""
    out = {"model": model, "modalities": modalities, **pred.to_json()}
    if corrected is not None and sorted(e.key() for e in corrected) != sorted(e.key() for e in pred.entities):
        out["corrected_entities"] = [e.to_json(pred.tweet.tokens) for e in sorted(corrected, key=lambda e: e.start)]
    return out


def model_info(folder: str, notice: str | None = None) -> str:
    """What the chosen model reads, in words (Markdown; no user content). `notice`: why another model than the
    default is serving, when it is."""
    from ..checkpoints import describe, is_toy, load_card, reads
    from ..configuration_itjner import ITJNERConfig

    config = ITJNERConfig.load(folder).to_dict()
    what = reads(config)
    if is_toy(load_card(folder)):
        use = "⚠️ trained on drawn toy images only: its tags on real tweets and photos mean nothing."
    elif what == "text only":
        use = "it reads **the text only**: the photo and its caption are shown for reference and do not change the tags."
    else:
        use = f"it reads **{what}**."
    line = f"**Model** {md_code(describe(folder))}: {use}"
    return line + (f"\n\nℹ️ {md_escape(notice)}" if notice else "")


def trust_line(res: PredictResult) -> str:
    """Beside the entities, on every result: how far to trust them (the toy model's warning stays here)."""
    from ..checkpoints import DATASET_NAMES, is_toy

    card = res.card or {}
    if is_toy(card):
        return ("⚠️ **Toy-world model: these tags mean nothing on a real tweet or photo.** It was trained on drawn "
                "shapes to prove the image branch works; pick another model for real tweets.")
    f1 = (card.get("test") or {}).get("overall", {}).get("f1")
    data = card.get("data") if isinstance(card.get("data"), str) else None
    if not isinstance(f1, (int, float)):
        return "The number after each type is the model's confidence (CRF marginal); this model's card gives no test F1."
    on = DATASET_NAMES.get(Path(data).name, Path(data).name) if data else "its test split"
    return (f"How far to trust it: entity F1 {f1:.1f} on {md_escape(on)} test tweets (about "
            f"{100 - f1:.0f}% of entities missed or wrong). The number after each type is the model's confidence.")


def status_message(res: PredictResult) -> str:
    """Markdown (no tweet text in it) saying what the prediction used."""
    pred = res.prediction
    name = md_code(Path(res.checkpoint).name)
    parts = [f"**{len(pred.entities)} entit{'y' if len(pred.entities) == 1 else 'ies'}** · model {name} "
             f"({md_escape(res.modalities)}) · {res.seconds * 1000:.0f} ms" + (" (cached)" if res.cached else "")]
    if not res.uses_image:
        parts.append("ℹ️ This model reads the text only: **the image does not influence its predictions**"
                     + (" (only through the caption shown)." if "caption" in res.modalities else "."))
        if res.image.problem and res.image.problem != "no image":
            parts.append(f"⚠️ The uploaded file cannot be used as an image: {md_escape(res.image.problem)}.")
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


POOR_CAPTION = "likely poor: the captioner is unsure of it; it was trained on 1,000 Flickr8k photos"


def caption_text(res: PredictResult) -> str:
    """What the caption box shows: the caption the model read, else the photo's caption from the default captioner
    (saying the model does not read it), or why there is none; a caption the captioner is unsure of says so."""
    photo = res.photo_caption
    poor = f" ({POOR_CAPTION})" if photo is not None and photo.likely_poor else ""
    if res.prediction.caption:
        return res.prediction.caption + (poor if photo is not None and photo.read_by_model else "")
    if photo is not None and photo.text:
        why = ("this model reads no captions" if "caption" not in res.modalities
               else "not what this model read")
        return f"{photo.text}  ({why}: generated for the photo by the Flickr8k captioner)" + poor
    if res.image.problem and res.image.problem != "no image":
        return f"(no caption: the image cannot be read: {res.image.problem})"
    if "caption" not in res.modalities:
        return "(no caption: this model reads no captions, and there is no photo to caption)"
    if str(res.caption_source or "").startswith("given") or (res.caption_source is None and
                                                             res.default_caption_source.startswith("given")):
        return "(no caption: the `given` caption source reads the alt text field, which is empty)"
    if res.image.problem:
        return "(no caption: no usable image)"
    return "(the caption source gave an empty caption for this image)"

# ---------------------------------------------------------------------------------------------- heatmap choice
def token_choices(pred: Prediction, entities: Sequence[Entity] | None = None) -> list[tuple[str, str]]:
    """Dropdown choices: each entity ("e:start:end"; the user's corrected ones when given), then each word."""
    tokens = pred.tweet.tokens
    entities = pred.entities if entities is None else entities
    out = [(f"[{e.type}] {' '.join(tokens[e.start:e.end])}", f"e:{e.start}:{e.end}") for e in entities]
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


@dataclass
class Heatmap:
    picture: Any      # PIL image: the photo with the map over it (no margins)
    title: str        # e.g. Q · "Obama" · mean of 12 heads (tweet text: escape before showing as HTML)
    low: float        # the smallest and largest weight shown (the colour scale's ends)
    high: float


def render_heatmap(pred: Prediction, image, choice: str | None, source: str | None = MAP_Q,
                   head: str | None = MEAN_HEADS) -> Heatmap | None:
    """The chosen word's / entity's attention map drawn over the display image; None when there is none."""
    from ..heatmap import attention_grid, overlay

    details = pred.details or {}
    key = "H" if source == MAP_H else "Q"
    attn = details.get(key)
    if image is None or attn is None:
        return None
    attn = np.asarray(attn)
    words = words_of_choice(choice, attn.shape[1])
    h = head_index(head)
    grid = attention_grid(attn, words, h)
    label = " ".join(pred.tweet.tokens[w] for w in words)
    heads = f"mean of {attn.shape[0]} heads" if h is None else f"head {h + 1}"
    return Heatmap(overlay(image, grid), f"{key} · \u201c{label}\u201d · {heads}", float(grid.min()),
                   float(grid.max()))


def heatmap_html(heatmap: Heatmap | None) -> str:
    """The heatmap's title and colour scale as HTML (escaped; styled by the page, so light and dark themes work)."""
    from ..heatmap import format_weight, legend_gradient

    if heatmap is None:
        return ""
    ramp = (f'<span style="display:inline-block;width:140px;height:12px;vertical-align:middle;border-radius:3px;'
            f'background:linear-gradient(to right, {legend_gradient()})"></span>')
    return (f'<div class="itjner-heat-legend"><b>{html.escape(heatmap.title)}</b> · weight '
            f'{format_weight(heatmap.low)} {ramp} {format_weight(heatmap.high)}</div>')


def caption_word_choices(photo) -> list[tuple[str, str]]:
    """Choices of the caption-word picker: ("1. a", "0"), ... for the words that have an attention map."""
    if photo is None or not photo.attention:
        return []
    return [(f"{i + 1}. {word}", str(i)) for i, word in enumerate(photo.words)
            if i < len(photo.attention) and photo.attention[i] is not None]


def render_caption_heatmap(photo, image, choice: str | None) -> Heatmap | None:
    """Where the captioner looked when it wrote one caption word (its soft attention over the 7x7 regions)."""
    from ..heatmap import grid_side, overlay

    choices = caption_word_choices(photo)
    if image is None or not choices:
        return None
    index = int(choice) if choice not in (None, "") and str(choice).isdigit() else int(choices[0][1])
    if not 0 <= index < len(photo.attention) or photo.attention[index] is None:
        raise UserError("That caption word has no attention map.")
    weights = np.asarray(photo.attention[index], dtype=np.float32)
    side = grid_side(weights.size)
    grid = weights.reshape(side, side)
    word = photo.words[index] if index < len(photo.words) else f"word {index + 1}"
    return Heatmap(overlay(image, grid), f"captioner · \u201c{word}\u201d · attention over the regions",
                   float(grid.min()), float(grid.max()))


# ------------------------------------------------------------------------------------------------------ plots
def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def gate_rows(pred: Prediction) -> list[tuple[str, float, str]] | None:
    """The mean visual gate per word, in tweet order: ("#i token", gate, predicted type or "O"); None when the model
    has no gate."""
    gate = (pred.details or {}).get("gate")
    if gate is None:
        return None
    gate = np.asarray(gate, dtype=np.float32)
    types = [t.partition("-")[2] or "O" for t in pred.tags[: len(gate)]]
    return [(f"#{i} {_short(tok)}", round(float(g), 4), etype)
            for i, (tok, g, etype) in enumerate(zip(pred.tweet.tokens, gate, types))]


GATE_COLOURS = {**TYPE_COLOURS, "O": "#b0b0b0"}
GATE_BAR = ("display:flex;flex-direction:column;align-items:center;justify-content:flex-end;flex:0 0 26px;"
            "height:100%")


def gate_html(rows: list[tuple[str, float, str]] | None) -> str:
    """The gate as bars drawn by the page (HTML, escaped), in tweet order and coloured by predicted type; the
    page's theme styles the text. Empty when there is no gate."""
    if not rows:
        return ""
    bars = []
    for word, gate, etype in rows:
        label = html.escape(word)
        bars.append(
            f'<div class="itjner-gate-bar" data-word="{label}" data-type="{etype}" title="{label}: g = {gate:.2f}" '
            f'style="{GATE_BAR}"><span style="font-size:10px;opacity:0.8">{gate:.2f}</span>'
            f'<div class="itjner-gate-fill" style="width:18px;height:{max(gate, 0.0) * 140:.0f}px;'
            f'background:{GATE_COLOURS.get(etype, GATE_COLOURS["O"])};border-radius:2px 2px 0 0"></div></div>')
    labels = "".join(f'<div style="flex:0 0 26px;writing-mode:vertical-rl;transform:rotate(180deg);font-size:11px;'
                     f'white-space:nowrap;overflow:hidden;max-height:90px">{html.escape(w)}</div>' for w, _, _ in rows)
    return ('<div class="itjner-gate"><div style="font-size:0.85em;margin-bottom:4px">Visual gate per word: how much '
            'of the image each word lets through (mean of g over dimensions, 0 to 1; bar colour = predicted type)'
            '</div><div style="overflow-x:auto"><div style="display:flex;align-items:flex-end;height:160px;gap:2px;'
            f'border-bottom:1px solid currentColor">{"".join(bars)}</div>'
            f'<div style="display:flex;gap:2px;align-items:flex-start">{labels}</div></div></div>')


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


def map_note(res: PredictResult, sources: list[str]) -> str:
    """Why there is no heatmap ("" when there is one)."""
    if not res.uses_image:
        return "No heatmap: this checkpoint does not use the image."
    if res.image.image is None:
        return "No heatmap: no usable image."
    if not sources:
        return "No heatmap: this checkpoint returns no attention maps."
    return ""
