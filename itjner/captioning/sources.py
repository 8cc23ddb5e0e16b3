"""Where the image caption comes from: one interface, chosen per model or app run by a spec string.

    lstm:<checkpoint dir>      the region-attention captioner trained with `itjner caption train`; reads
                               region features of the backbone it was trained on, gives per-word attention.
                               A relative folder is looked up in the working directory, then in the repository
                               (`lstm:assets/captioner-flickr8k`: the shipped captioner trained on Flickr8k photos)
    tags[:threshold[:max]]     offline: the EfficientNet-Lite0 ImageNet classifier's confident labels as a short
                               caption ("a photo of a maze, coil"); labels below `threshold`
                               (softmax probability, default 0.15) are not written, at most `max` (default 3)
    given[:<file.jsonl>]       the user's own text: alt text passed per call, or `{"image_id", "caption"}` lines
    hf:<model id or folder>    a transformers image-to-text model (BLIP, GIT, ViT-GPT2, ...) whose weights you have

`make_caption_source(spec)` builds one; `source.caption(images=..., image_ids=..., features=..., given=...)` returns a
`CaptionResult` per image. An image-derived caption of a missing image is "" (the NER model masks the caption path).

Cost of `tags` on CPU (this project's 2-core machine, 640x480 photo, preprocessing included, median): from pixels
~20-30 ms per image (2 threads, idle machine), 42-70 ms (1 thread while another job kept the cores busy; 2 threads
then slowed to 100-230 ms: OpenMP oversubscription); from already cached Lite0 region features ~0.2 ms per image
(only the pooled 1280x1000 classifier runs), so with the feature cache `tags` is practically free.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

MISSING = ""  # caption of an image that is missing or unreadable


class CaptionSourceUnavailable(RuntimeError):
    """A caption source cannot be built here (weights absent, bad spec); the message says how to fix it."""


@dataclass
class CaptionResult:
    """text: the caption ("" when the image is missing); attention: per word its 49 region weights (row-major 7x7),
    when the source has them; details: source-specific extras (tag probabilities, log-probability, ...)."""

    text: str
    attention: list[list[float]] | None = None
    details: dict | None = None


class CaptionSource:
    """Base class. `feature_backbone` names the image backbone whose region features `caption` can take instead of
    pixels (None: the source cannot use features). `reads_images` is False for sources whose text does not come
    from the image (then a caption is given even where the image is missing)."""

    spec: str = ""
    feature_backbone: str | None = None
    reads_images: bool = True

    def caption(self, images: Sequence | None = None, image_ids: Sequence[str] | None = None,
                features: Sequence[torch.Tensor | None] | None = None,
                given: Sequence[str | None] | None = None) -> list[CaptionResult]:
        raise NotImplementedError


def _count(*lists) -> int:
    lengths = {len(x) for x in lists if x is not None}
    if len(lengths) > 1:
        raise ValueError(f"images, image_ids, features and given must have the same length (got {sorted(lengths)})")
    return lengths.pop() if lengths else 0


def _pick(values, i):
    return None if values is None else values[i]


# ------------------------------------------------------------------------------------------------- image sources
class _FeatureCaptioner(CaptionSource):
    """Shared plumbing of sources that run a frozen backbone: features where given, pixels otherwise."""

    def __init__(self, backbone):
        self.backbone = backbone
        self.feature_backbone = backbone.name

    def _features(self, images, features, n: int) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = []
        todo = []
        for i in range(n):
            f = _pick(features, i)
            if f is not None:
                if f.shape[-1] != self.backbone.channels:
                    raise ValueError(f"{self.spec}: got {f.shape[-1]}-d region features; this source reads "
                                     f"{self.backbone.name} features ({self.backbone.channels}-d). Pass images, or "
                                     "features of that backbone.")
                out.append(f.float())
            else:
                out.append(None)
                if _pick(images, i) is not None:
                    todo.append(i)
        for i, f in zip(todo, self.backbone.features_of_images([images[i] for i in todo])):
            out[i] = f
        return out


# "Is this caption likely poor?" A caption whose mean log-probability per token (its words and <end>) is below this
# is flagged `likely_poor` in the lstm source's details. Chosen for the shipped captioner (assets/captioner-flickr8k,
# default decoding: beam 3, length penalty 1.0, no_repeat_ngram_size 2) on the Flickr8k 1k VALID split (98 photos):
# the cut that best separates the photos whose caption is in the bottom quarter by per-image CIDEr-D (pycocoevalcap,
# the split's idf) from the rest (max recall - false-positive rate, cuts tried in steps of 0.05). Measured:
#   valid: 27 of 98 flagged; mean CIDEr-D flagged 0.280 vs unflagged 0.517; 12 of the 25 worst-quarter flagged
#   test:  25 of 92 flagged; mean CIDEr-D flagged 0.313 vs unflagged 0.534 (median 0.174 vs 0.443); 9 of the 23
#          worst-quarter captions flagged (36% of flagged are worst-quarter, 21% of unflagged)
# A weak but real signal (Spearman rank correlation of the score with per-image CIDEr-D: 0.45 valid, 0.42 test); it
# misses many poor captions, notably confident generic ones. An out-of-domain measure (cosine distance of the photo's
# pooled Lite0 feature to the nearest training photo, or to their mean) did not separate good from poor captions on
# valid (Spearman -0.06 / +0.09) and would need the training features shipped, so it is not used. The cut is in the
# units of this captioner's probabilities: recalibrate it (`likely_poor_below`) for another checkpoint.
LIKELY_POOR_BELOW = -1.05


class LstmCaptionSource(_FeatureCaptioner):
    """The project's region-attention captioner (itjner.modeling_captioner); per-word attention included.

    details per caption: `logprob` (the caption's total log-probability under the model, <end> included),
    `logprob_per_token` (that divided by the number of words + 1 for <end>) and `likely_poor`
    (logprob_per_token < likely_poor_below; see LIKELY_POOR_BELOW for how the cut was chosen and how well it
    separates good from poor captions). `beam` and `no_repeat_ngram_size` default to the checkpoint's config."""

    def __init__(self, checkpoint: str | Path, image_backbone=None, beam: int | None = None,
                 no_repeat_ngram_size: int | None = None, likely_poor_below: float = LIKELY_POOR_BELOW):
        from ..backbones import load_image_backbone
        from ..modeling_captioner import CaptionModel

        try:
            self.model = CaptionModel.from_pretrained(checkpoint)
        except FileNotFoundError as err:
            raise CaptionSourceUnavailable(f"caption source 'lstm:{checkpoint}': {err}") from err
        name = self.model.config.backbone
        if not name:
            raise CaptionSourceUnavailable(f"{checkpoint}: config.json does not say which image backbone the "
                                           "captioner was trained on (field `backbone`)")
        backbone = image_backbone if image_backbone is not None and image_backbone.name == name else None
        super().__init__(backbone or load_image_backbone(name))
        if self.backbone.channels != self.model.config.feature_dim:
            raise CaptionSourceUnavailable(f"{checkpoint}: trained on {self.model.config.feature_dim}-d features but "
                                           f"backbone {name} gives {self.backbone.channels}-d")
        self.spec, self.beam = f"lstm:{checkpoint}", beam
        self.no_repeat_ngram_size, self.likely_poor_below = no_repeat_ngram_size, likely_poor_below

    def caption(self, images=None, image_ids=None, features=None, given=None) -> list[CaptionResult]:
        n = _count(images, image_ids, features, given)
        feats = self._features(images, features, n)
        present = [i for i, f in enumerate(feats) if f is not None]
        results = [CaptionResult(MISSING) for _ in range(n)]
        if present:
            captions = self.model.generate(torch.stack([feats[i] for i in present]), beam=self.beam,
                                           no_repeat_ngram_size=self.no_repeat_ngram_size)
            for i, cap in zip(present, captions):
                results[i] = CaptionResult(cap.text, cap.attention, self.confidence(cap.score, len(cap.words)))
        return results

    def confidence(self, logprob: float, words: int) -> dict:
        """The details of a caption of `words` words with total log-probability `logprob` (<end> included)."""
        per_token = logprob / (words + 1)
        return {"logprob": round(logprob, 4), "logprob_per_token": round(per_token, 4),
                "likely_poor": bool(per_token < self.likely_poor_below)}


class TagsCaptionSource(_FeatureCaptioner):
    """ImageNet labels of EfficientNet-Lite0 above a probability threshold, written as "a photo of a X, Y"."""

    BACKBONE = "efficientnet-lite0"

    def __init__(self, threshold: float = 0.15, max_labels: int = 3, image_backbone=None):
        from ..backbones import imagenet_labels, load_image_backbone

        if not 0.0 < threshold <= 1.0 or max_labels < 1:
            raise ValueError(f"tags: threshold must be in (0, 1] and max labels >= 1 (got {threshold}, {max_labels})")
        backbone = image_backbone if image_backbone is not None and image_backbone.name == self.BACKBONE else None
        super().__init__(backbone or load_image_backbone(self.BACKBONE))
        self.threshold, self.max_labels = threshold, max_labels
        self.labels = [short_label(label) for label in imagenet_labels()]
        self.spec = f"tags:{threshold}:{max_labels}"

    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, 49, 1280) cached region features -> (B, 1000) ImageNet logits (the classifier head alone)."""
        return self.backbone.classify_features(feats.to(next(self.backbone.parameters()).device)).cpu()

    def probabilities(self, images=None, features=None, n: int | None = None) -> list[torch.Tensor | None]:
        n = _count(images, features) if n is None else n
        feats = self._features(images, features, n)
        present = [i for i, f in enumerate(feats) if f is not None]
        out: list[torch.Tensor | None] = [None] * n
        if present:
            with torch.inference_mode():
                probs = self.logits_from_features(torch.stack([feats[i] for i in present])).softmax(-1)
            for i, p in zip(present, probs):
                out[i] = p
        return out

    def caption(self, images=None, image_ids=None, features=None, given=None) -> list[CaptionResult]:
        n = _count(images, image_ids, features, given)
        return [CaptionResult(MISSING) if p is None else self.tags_caption(p)
                for p in self.probabilities(images, features, n)]

    def tags_caption(self, probs: torch.Tensor) -> CaptionResult:
        top = probs.topk(self.max_labels * 2)  # a few spare: distinct classes can share a short name
        chosen: list[tuple[str, float]] = []
        for p, idx in zip(top.values.tolist(), top.indices.tolist()):
            label = self.labels[idx]
            if p < self.threshold or len(chosen) == self.max_labels:
                break
            if label not in (c[0] for c in chosen):
                chosen.append((label, round(p, 4)))
        text = tags_text([c[0] for c in chosen])
        return CaptionResult(text, None, {"labels": [list(c) for c in chosen]})


def short_label(imagenet_label: str) -> str:
    """First synonym of an ImageNet class description ("theater curtain, theatre curtain" -> "theater curtain")."""
    return imagenet_label.split(",")[0].strip()


def tags_text(labels: Sequence[str]) -> str:
    """["stage", "theater curtain"] -> "a photo of a stage, theater curtain"; no labels -> ""."""
    if not labels:
        return MISSING
    first = labels[0]
    article = "an" if first[:1].lower() in "aeiou" else "a"
    return f"a photo of {article} " + ", ".join(labels)


# ------------------------------------------------------------------------------------------------ text sources
class GivenCaptionSource(CaptionSource):
    """The user's own text. Per call, `given[i]` (e.g. alt text) wins; else the JSONL file's caption for
    `image_ids[i]`; else "". The text does not come from the image, so it is kept even when the image is missing."""

    reads_images = False

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.table = read_given_captions(self.path) if self.path else {}
        self.spec = f"given:{path}" if path else "given"

    def caption(self, images=None, image_ids=None, features=None, given=None) -> list[CaptionResult]:
        n = _count(images, image_ids, features, given)
        results = []
        for i in range(n):
            text = _pick(given, i)
            if text is None and image_ids is not None:
                text = self.table.get(str(image_ids[i]))
            results.append(CaptionResult(" ".join((text or "").split())))
        return results


def read_given_captions(path: str | Path) -> dict[str, str]:
    table = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            table[str(row["image_id"])] = str(row["caption"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f'{path}:{lineno}: expected {{"image_id": ..., "caption": ...}} ({err})') from err
    return table


# ----------------------------------------------------------------------------------------- transformers models
class HfCaptionSource(CaptionSource):
    """A transformers image-to-text model (AutoProcessor + AutoModelForImageTextToText, e.g. BLIP), from the hub
    cache or a local folder. Needs the weights on this machine: nothing is downloaded when the hub is unreachable."""

    def __init__(self, model_id: str, max_new_tokens: int = 30, device: str | None = None):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model_id, self.max_new_tokens, self.spec = model_id, max_new_tokens, f"hf:{model_id}"
        try:
            self.processor = AutoProcessor.from_pretrained(model_id)
            self.model = AutoModelForImageTextToText.from_pretrained(model_id).eval()
        except (OSError, ValueError) as err:
            raise CaptionSourceUnavailable(_hf_message(model_id, err)) from err
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.decoder = self.processor if hasattr(self.processor, "batch_decode") else self._tokenizer(model_id)

    @staticmethod
    def _tokenizer(model_id: str):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_id)

    def caption(self, images=None, image_ids=None, features=None, given=None) -> list[CaptionResult]:
        n = _count(images, image_ids, features, given)
        present = [i for i in range(n) if _pick(images, i) is not None]
        results = [CaptionResult(MISSING) for _ in range(n)]
        if present:
            inputs = self.processor(images=[images[i].convert("RGB") for i in present], return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in inputs.items() if hasattr(v, "to")}
            with torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
            for i, text in zip(present, self.decoder.batch_decode(out, skip_special_tokens=True)):
                results[i] = CaptionResult(" ".join(text.split()))
        return results


def _hf_message(model_id: str, err: Exception) -> str:
    if "Unrecognized configuration class" in str(err):
        return (f"caption source 'hf:{model_id}': {model_id!r} is not an image-to-text model that "
                "AutoModelForImageTextToText can load (captioners such as BLIP, BLIP-2, GIT or ViT-GPT2 are).")
    if Path(model_id).is_dir():
        return (f"caption source 'hf:{model_id}': the folder exists but does not hold a transformers image-to-text "
                f"model with its processor ({err.__class__.__name__}: {err}). Save one there with "
                "`model.save_pretrained(dir)` and `processor.save_pretrained(dir)`.")
    return (f"caption source 'hf:{model_id}': the model {model_id!r} is not available on this machine (not a local "
            f"folder, not in the Hugging Face cache, and the hub is unreachable or offline; "
            f"{err.__class__.__name__}). Download it where you have internet (`hf download {model_id}`) and copy "
            "~/.cache/huggingface here, or pass a local folder holding the saved model and processor "
            "(hf:/path/to/folder). Offline alternatives: `tags`, `lstm:<checkpoint>`, `given`.")


# ------------------------------------------------------------------------------------------------------ factory
from ..checkpoints import REPO as REPO_ROOT  # noqa: E402 - lstm: specs may name a folder of the repository
SHIPPED_CAPTIONER = "assets/captioner-flickr8k"  # the captioner trained on Flickr8k photos, shipped in the repo


def resolve_checkpoint(path: str) -> str:
    """A checkpoint folder as given when it exists (absolute, or relative to the working directory); otherwise,
    if relative, the same path under the repository root (so `lstm:assets/captioner-flickr8k` works from any
    working directory). The spec keeps the path as written when it resolves in the working directory."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return path
    in_repo = REPO_ROOT / given
    return str(in_repo) if in_repo.exists() else path


SPEC_HELP = "lstm:<checkpoint dir> | tags[:threshold[:max labels]] | given[:<file.jsonl>] | hf:<model id or folder>"


def make_caption_source(spec: str, image_backbone=None) -> CaptionSource:
    """Build the caption source a spec string names (see the module docstring). `image_backbone`, when it is the
    backbone the source needs, is reused instead of loading a second copy."""
    kind, _, arg = spec.partition(":")
    if kind == "lstm" and arg:
        return LstmCaptionSource(resolve_checkpoint(arg), image_backbone)
    if kind == "tags":
        parts = arg.split(":") if arg else []
        try:
            threshold = float(parts[0]) if parts else 0.15
            max_labels = int(parts[1]) if len(parts) > 1 else 3
        except ValueError:
            raise ValueError(f"bad caption source {spec!r}: expected tags[:threshold[:max labels]], e.g. tags:0.2:3")
        return TagsCaptionSource(threshold, max_labels, image_backbone)
    if kind == "given":
        return GivenCaptionSource(arg or None)
    if kind == "hf" and arg:
        return HfCaptionSource(arg)
    raise ValueError(f"unknown caption source {spec!r}; expected {SPEC_HELP}")

