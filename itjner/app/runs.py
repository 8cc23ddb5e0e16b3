"""The app's whole-file jobs on server paths: error analysis of a labelled split, pre-annotation export."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..data import Entity, Prediction, Tweet
from .messages import UserError
from .service import PredictService
from .views import highlight_value


# ---------------------------------------------------------------------------------------- analysis and export
def _split_file(path: str | None) -> Path:
    from ..data import split_path

    if not (path or "").strip():
        raise UserError("Give the path of a CoNLL split file (e.g. data/twitter2017/test.txt).")
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
    reads_images: bool = False       # whether the model's tags depend on the images (else no heatmaps to show)


def run_analysis(service: PredictService, split: str | None, images: str | None, checkpoint: str | None,
                 caption_source: str | None, mode: str = "exact",
                 progress: Callable[[float, str], None] | None = None, chunk: int = 64) -> AnalysisRun:
    from ..analysis import analyse, write_jsonl
    from ..data import read_conll
    from ..images import ImageReport

    path = _split_file(split)
    images_dir = _images_dir(images)
    try:
        tweets = read_conll(path)
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file (it holds bytes that are not UTF-8 text): give a Twitter CoNLL "
                        "split.") from None
    except ValueError as err:
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
        preds += service.tag_many(predictor, tweets[start:start + chunk], images_dir=images_dir, report=report)
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
                       caption_source, str(out), summary, reads_images=predictor.reads_images)


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
    from ..data import read_tweets
    from ..labelstudio import export_tasks_json

    if not (data or "").strip():
        raise UserError("Give the path of the tweets to pre-annotate (CoNLL, JSONL or CSV).")
    path = Path(data.strip()).expanduser()
    if not path.is_file():
        raise UserError(f"No file at {data}")
    images_dir = _images_dir(images)
    try:
        tweets = [t for t in read_tweets(path) if t.tokens]
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file (it holds bytes that are not UTF-8 text): give tweets as "
                        "CoNLL, JSONL or CSV.") from None
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        raise UserError(f"Cannot read tweets from {path}: {err}") from err
    if not tweets:
        raise UserError(f"{path} has no tweets.")
    predictor = service.predictor(checkpoint, caption_source)
    preds = service.tag_many(predictor, tweets, images_dir=images_dir, progress=True)
    out = Path(tempfile.mkdtemp(prefix="itjner-export-")) / f"{path.stem}-tasks.json"
    n = export_tasks_json(preds, images_dir, predictor.model_version, out, order=order)
    return str(out), n
