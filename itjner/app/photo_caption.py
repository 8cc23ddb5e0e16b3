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

    @property
    def words(self) -> list[str]:
        return self.text.split()


class PhotoCaptioner:
    def __init__(self, lock: threading.Lock, checkpoint=DEFAULT_CAPTIONER, cache_size: int = 256):
        self.lock, self.checkpoint = lock, checkpoint
        self._source = None
        self._load_lock = threading.Lock()
        self._cache: LRUCache[PhotoCaption] = LRUCache(cache_size)

    @property
    def available(self) -> bool:
        return (self.checkpoint / "model.safetensors").is_file()

    def source(self):
        with self._load_lock:
            if self._source is None:
                from ..captioning.sources import LstmCaptionSource

                self._source = LstmCaptionSource(self.checkpoint)
            return self._source

    def for_prediction(self, pred, predictor, image) -> PhotoCaption | None:
        """The caption to show: the one the model read when it has per-word attention, else the photo's own."""
        attention = (pred.details or {}).get("caption_attention")
        if pred.caption and attention and any(a is not None for a in attention):
            return PhotoCaption(pred.caption, attention, read_by_model=True)
        if image.usable is None or image.image is None or not self.available:
            return None
        key = image.digest
        cached = self._cache.get(key)
        if cached is None:
            cached = self._caption(predictor, image)
            self._cache.put(key, cached)
        return cached

    def _caption(self, predictor, image) -> PhotoCaption:
        source = self.source()
        feats = None
        if predictor.config.image_backbone == source.feature_backbone:
            feats = predictor.image_features([image.data], [image.digest])[0][0]
        with self.lock:
            result = source.caption(images=[image.image], features=[feats])[0]
        return PhotoCaption(result.text, result.attention, read_by_model=False)
