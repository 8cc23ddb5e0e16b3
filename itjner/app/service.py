"""The prediction service behind the app: input checks with messages for users, predictors loaded once per
(checkpoint, caption source), and a cache of recent answers. No model math (predict.py tags) and no widgets here.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import Prediction, Tweet, tokenize
from ..caching import LRUCache
from ..checkpoints import DEFAULT_CAPTION_SPEC, NotACheckpoint, require_checkpoint
from .messages import UserError, md_code
from .microbatch import MicroBatcher
from .photo_caption import PhotoCaption, PhotoCaptioner

MAX_CHARS = 2000                  # tweets have at most 280; longer input is refused with a message
MAX_UPLOAD_MB = 50                # upload limit (launch(max_file_size=...)); a 100-megapixel phone JPEG is 20-40 MB
DISPLAY_SIDE = 512                # longest side of the image the heatmaps are drawn on
DEFAULT_SOURCE = "default"        # the app's caption source: --caption-source, else the Flickr8k captioner
CAPTION_SOURCES = (DEFAULT_SOURCE, DEFAULT_CAPTION_SPEC, "tags", "given")


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
    digest: str | None = None        # sha256 of `data`, computed once per upload (feature and caption caches' key)

    @property
    def usable(self) -> bytes | None:
        """The bytes when the image can be used, else None."""
        return self.data if self.problem is None else None


def read_image_file(path: str | os.PathLike | None, max_mb: float = MAX_UPLOAD_MB) -> ImageInput:
    """The uploaded file -> bytes + a display copy, or the reason it cannot be used."""
    from ..heatmap import fit
    from ..images import ImageError, decode_image, sha256

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
        image = decode_image(data, min_side=DISPLAY_SIDE)  # large JPEGs: decoded reduced, never under 512 px
    except ImageError as err:
        return ImageInput(data=data, problem=str(err))
    return ImageInput(data=data, image=fit(image, DISPLAY_SIDE, min_side=DISPLAY_SIDE), digest=sha256(data))



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
    photo_caption: PhotoCaption | None = None        # the caption shown with per-word attention (photo_caption.py)
    card: dict = field(default_factory=dict)         # the model's card (data, test F1): how far to trust it


class PredictService:
    """Predictors by (checkpoint folder, caption source), loaded once each; concurrent requests tagged together
    (microbatch.py), one model call at a time; an LRU of recent predictions, so asking again for the same tweet,
    image and settings runs nothing."""

    def __init__(self, default_checkpoint: str | os.PathLike, device: str | None = None,
                 caption_source: str | None = None, cache_dir=None, cache_size: int = 64, notice: str | None = None):
        """notice: why the app serves another model than the shipped default (shown under the model picker)."""
        self.default_checkpoint = str(default_checkpoint)
        self.notice = notice
        self.device = device
        self.default_caption_source = caption_source
        self.cache_dir = cache_dir
        self._predictors: dict[tuple[str, str | None], Any] = {}
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # one model call at a time (micro-batches and whole-file runs)
        self.photo_captioner = PhotoCaptioner(self._run_lock)
        self._batcher = MicroBatcher(self._run_lock, after=self._caption_photos)
        self._recent: LRUCache[tuple] = LRUCache(cache_size)
        self._recent_lock = threading.Lock()

    # -- loading
    def resolve(self, checkpoint: str | None) -> str:
        folder = (checkpoint or "").strip() or self.default_checkpoint
        try:
            return str(require_checkpoint(folder).resolve())
        except NotACheckpoint as err:
            raise UserError(str(err)) from None

    def caption_spec(self, caption_source: str | None) -> str | None:
        spec = (caption_source or "").strip()
        if not spec or spec in (DEFAULT_SOURCE, "checkpoint default"):  # the latter: the API's name before 0.2
            return self.default_caption_source
        return spec

    def predictor(self, checkpoint: str | None = None, caption_source: str | None = None):
        """The predictor of a checkpoint folder (default: the app's) with a caption source, loaded once."""
        return self.load(self.resolve(checkpoint), self.caption_spec(caption_source))

    def load(self, folder: str, spec: str | None):
        """`predictor` for an already resolved folder and caption spec. A checkpoint loaded next to others shares
        their image backbone and feature cache when it reads the same backbone."""
        from ..predict import Predictor

        key = (folder, spec)
        with self._load_lock:
            if key in self._predictors:
                return self._predictors[key]
            same = next((p for (f, _), p in self._predictors.items() if f == folder), None)
            try:
                if same is not None:  # same weights, another caption source: share the model too
                    pred = same.with_caption_source(spec)
                else:
                    pred = Predictor.from_pretrained(folder, self.device, spec, self.cache_dir)
                    if self._predictors:
                        first = next(iter(self._predictors.values()))
                        pred = first.sharing_inputs(pred.model, pred.tokenizer, pred.name, pred.card, spec,
                                                    pred.version)
            except (FileNotFoundError, ValueError, OSError, RuntimeError) as err:
                raise UserError(f"Cannot load the checkpoint {folder}: {err}") from err
            if pred.config.use_caption:
                check_caption_source(pred, spec)
            self._predictors[key] = pred
            return pred

    def caption_source_note(self, checkpoint: str | None, caption_source: str | None) -> str:
        """What the caption-source picker should say for this checkpoint ("" when it reads captions)."""
        from ..configuration_itjner import ITJNERConfig

        config = ITJNERConfig.load(self.resolve(checkpoint))
        if not config.use_caption:
            return "This model reads no captions: the caption source is not used."
        return ""

    def warm_up(self) -> float:
        """Load everything the first request would otherwise wait for (image backbone, caption source, kernels) by
        tagging one dummy tweet with a small grey image; returns the seconds it took."""
        import io

        from PIL import Image

        from ..images import sha256

        started = time.perf_counter()
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (128, 128, 128)).save(buf, "PNG")
        image = ImageInput(data=buf.getvalue(), image=Image.new("RGB", (64, 48)), digest=sha256(buf.getvalue()))
        self.predict_tokens(["warm", "up"], image)
        with self._recent_lock:
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
                       image_id: str | None = None) -> PredictResult:
        """image_id: the tweet's image id; by default one of the photo's content ("app-<12 hex>", or "app" without a
        photo), so tweets sent from the app keep their own image in Label Studio and in `pull --images`."""
        from ..captioning.sources import CaptionSourceUnavailable

        folder, spec = self.resolve(checkpoint), self.caption_spec(caption_source)
        predictor = self.load(folder, spec)
        override = (caption_override or "").strip() or None
        if override and len(override) > MAX_CHARS:
            raise UserError(f"The caption override has {len(override)} characters; at most {MAX_CHARS}.")
        blob = image.usable
        digest = image.digest if blob else None
        image_id = image_id or (f"app-{digest[:12]}" if digest else "app")
        key = (folder, spec, digest, tuple(tokens), override, image_id)
        notes = override_notes(predictor.config, spec, override)
        with self._recent_lock:
            recent = self._recent.get(key)
        if recent is not None:
            return self._result(recent[0], image, folder, spec, predictor, recent[1], notes, cached=True)
        started = time.perf_counter()
        try:
            pred = self._batcher.predict(predictor, Tweet(image_id, tokens), blob, override, digest, extra=image)
        except ImportError as err:
            raise UserError(f"The caption source {spec or predictor.config.caption_source!r} is not available "
                            f"in this installation ({err}).") from err
        except CaptionSourceUnavailable as err:
            raise UserError(str(err)) from err
        except (ValueError, FileNotFoundError, OSError) as err:
            raise UserError(f"Prediction failed: {err}") from err
        seconds = time.perf_counter() - started
        with self._recent_lock:
            self._recent.put(key, (pred, seconds))
        return self._result(pred, image, folder, spec, predictor, seconds, notes)

    def _caption_photos(self, predictor, jobs, preds) -> None:
        """After a micro-batch (model lock held): caption its photos that need a caption of their own, together."""
        self.photo_captioner.caption_batch(predictor, [job.extra for job, pred in zip(jobs, preds)
                                                       if self.photo_captioner.wanted(pred, job.extra)])

    def tag_many(self, predictor, tweets: list[Tweet], **kwargs) -> list[Prediction]:
        """A whole file's tweets (error analysis, export), taking turns with the app's micro-batches."""
        with self._run_lock:
            return predictor.predict(tweets, **kwargs)

    def _result(self, pred, image, folder, spec, predictor, seconds, notes, cached=False) -> PredictResult:
        return PredictResult(pred, image, folder, spec, predictor.config.use_image, predictor.config.modalities(),
                             seconds, cached, notes, default_caption_source=str(predictor.config.caption_source),
                             photo_caption=self.photo_captioner.for_prediction(pred, predictor, image),
                             card=predictor.card)


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


def check_caption_source(predictor, spec: str | None) -> None:
    """Load the caption source now, so a bad one (`lstm:/nonexistent`, an unknown name) is refused with a message
    when it is chosen, not accepted and then silently producing no captions."""
    try:
        predictor.caption_source  # noqa: B018 - loads it
    except ImportError as err:
        raise UserError(f"The caption source {spec!r} is not available in this installation ({err}).") from None
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as err:
        raise UserError(f"Cannot use the caption source {spec or predictor.config.caption_source!r}: {err}") from None
