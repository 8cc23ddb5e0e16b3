"""The caption of the photo and where each caption word looked, for every model the app serves.

A model that reads captions shows the caption it read (with the captioner's per-word attention when its caption
source is the LSTM captioner). For a model that reads no captions, or reads them from another source, the app still
captions the photo with the default captioner (assets/captioner-flickr8k, the paper's show-attend-tell captioner
trained on real photos) so users see the paper's cross-modal attention between generated words and image regions.
Captions are cached by image content; the captioner reads the predictor's cached backbone features when it uses the
same backbone.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from ..caching import LRUCache
from ..checkpoints import DEFAULT_CAPTIONER


@dataclass
class PhotoCaption:
    text: str
    attention: list[list[float]] | None   # per caption word, its 49 region weights (row-major 7x7)
    read_by_model: bool                   # True: the NER model read this caption; False: shown for the photo only
    likely_poor: bool = False             # the captioner was unsure of it (captioning/sources.LIKELY_POOR_BELOW)

    @property
    def words(self) -> list[str]:
        return self.text.split()


class PhotoCaptioner:
    """Captions of the users' photos, cached by image content. The micro-batch worker captions every photo of a
    batch in one call (`caption_batch`, inside the model lock it already holds): the photos' features come from the
    predictor's feature cache in one backbone call and the captioner decodes them together; `for_prediction` then
    finds them cached."""

    def __init__(self, lock: threading.Lock, checkpoint=DEFAULT_CAPTIONER, cache_size: int = 256):
        self.lock, self.checkpoint = lock, checkpoint
        self._source = None
        self._load_lock = threading.Lock()
        self._cache: LRUCache[PhotoCaption] = LRUCache(cache_size)
        self._cache_lock = threading.Lock()

    @property
    def available(self) -> bool:
        return (self.checkpoint / "model.safetensors").is_file()

    def source(self):
        with self._load_lock:
            if self._source is None:
                from ..captioning.sources import LstmCaptionSource

                self._source = LstmCaptionSource(self.checkpoint)
            return self._source

    @staticmethod
    def model_read(pred) -> PhotoCaption | None:
        """The caption the NER model read, when its source gives per-word attention (the LSTM captioner)."""
        details = pred.details or {}
        attention = details.get("caption_attention")
        if pred.caption and attention and any(a is not None for a in attention):
            return PhotoCaption(pred.caption, attention, read_by_model=True,
                                likely_poor=bool(details.get("caption_likely_poor")))
        return None

    def _cached(self, digest: str) -> PhotoCaption | None:
        with self._cache_lock:
            return self._cache.get(digest)

    def wanted(self, pred, image) -> bool:
        """Whether the photo needs a caption of its own made (a usable photo, no model-read caption, none cached)."""
        return (self.available and image is not None and image.usable is not None and image.image is not None
                and self.model_read(pred) is None and self._cached(image.digest) is None)

    def caption_batch(self, predictor, images: list) -> None:
        """Caption these photos (ImageInput) together and cache the captions; the caller holds the model lock."""
        todo = list({img.digest: img for img in images}.values())
        if not todo:
            return
        source = self.source()
        feats = [None] * len(todo)
        if predictor.config.image_backbone == source.feature_backbone:
            feats = predictor.image_features([img.data for img in todo], [img.digest for img in todo])[0]
        results = source.caption(images=[img.image for img in todo], features=feats)
        with self._cache_lock:
            for img, result in zip(todo, results):
                self._cache.put(img.digest, PhotoCaption(result.text, result.attention, read_by_model=False,
                                                         likely_poor=bool((result.details or {}).get("likely_poor"))))

    def for_prediction(self, pred, predictor, image) -> PhotoCaption | None:
        """The caption to show: the one the model read when it has per-word attention, else the photo's own
        (made now if no batch made it: a prediction answered from the recent-answers cache)."""
        read = self.model_read(pred)
        if read is not None:
            return read
        if image.usable is None or image.image is None or not self.available:
            return None
        if self._cached(image.digest) is None:
            with self.lock:
                self.caption_batch(predictor, [image])
        return self._cached(image.digest)
