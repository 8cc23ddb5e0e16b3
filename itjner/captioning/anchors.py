"""Two reference points a trained captioner is scored against: nearest-neighbour caption retrieval from the
training images, and the `tags` caption source."""
from __future__ import annotations

from typing import Sequence

import torch

from .data import CaptionPair, references_by_image


def nearest_neighbour_captions(train_pairs: Sequence[CaptionPair], images: Sequence[str],
                               features: dict[str, torch.Tensor]) -> dict[str, str]:
    """Caption retrieval: for each image, the first caption (file order) of the training image whose mean-pooled
    region feature is most similar by cosine."""
    refs = references_by_image(train_pairs)
    train_images = [i for i in refs if features.get(i) is not None]
    pooled = lambda names: torch.nn.functional.normalize(
        torch.stack([features[n].float().mean(0) for n in names]), dim=1)
    similarity = pooled(images) @ pooled(train_images).T
    best = similarity.argmax(1).tolist()
    return {image: refs[train_images[j]][0] for image, j in zip(images, best)}


def tags_captions(images: Sequence[str], features: dict[str, torch.Tensor], spec: str = "tags") -> dict[str, str]:
    """The `tags` caption source (ImageNet labels of EfficientNet-Lite0) on cached Lite0 features."""
    from .sources import make_caption_source

    source = make_caption_source(spec)
    results = source.caption(features=[features[i] for i in images])
    return {image: r.text for image, r in zip(images, results)}
