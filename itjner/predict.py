"""Batched inference: one model load per process, tweets batched by length, image features from the on-disk cache,
`torch.inference_mode`, bf16 autocast where the device computes bf16 (GPU; CPUs with AVX512-BF16/AMX), a loaded
model's linear weights cast once for it. The app, the CLIs and training's dev evaluation all tag through here."""
from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import Prediction, Tweet, bio_to_entities
from .batching import build_examples, collate, length_batches, to_device
from .images import FeatureStore, ImageReport, decode_image, read_image_bytes
from .checkpoints import checkpoint_version, load_card
from .modeling_itjner import ITJNERModel


def default_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


PRECISIONS = ("auto", "fp32", "bf16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX, read from /proc/cpuinfo's flags). Elsewhere bf16
    is emulated and slower than fp32, so `auto` keeps fp32 there."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in BF16_CPU_FLAGS)
    except OSError:
        pass
    return False


def effective_precision(device: torch.device, precision: str = "auto") -> str:
    """"bf16" or "fp32": what `precision` means on this device. auto: bf16 autocast on GPU and on CPUs with native
    bf16 (there it halved MPNet-base's time per tweet with hidden states at cosine >= 0.9999 to fp32; the shipped
    checkpoints' cards give their F1 in both), exact fp32 elsewhere."""
    if check_precision(precision) != "auto":
        return precision
    return "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()) else "fp32"


def autocast(device: torch.device, precision: str = "auto"):
    if effective_precision(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class InferenceWeights:
    """The linear layers of a model loaded for inference, held in the dtype the precision computes them in.

    Under bf16 autocast every linear layer casts its fp32 weight to bf16 on every call: for MPNet-base that is ~85M
    values per request, half the time of one tweet. Casting them once gives bit-identical results (autocast would
    compute with the same rounded weights) at half the time; the fp32 weights are kept aside, so fp32 is exact
    again when asked. Only models registered by `Predictor.from_pretrained` are touched (never a model in training),
    and predictors that share a model share its state (the app runs one precision for all of them)."""

    _registry: "weakref.WeakKeyDictionary[ITJNERModel, InferenceWeights]" = weakref.WeakKeyDictionary()

    def __init__(self, model: ITJNERModel):
        self.model, self.dtype, self.masters = model, torch.float32, {}
        self.lock = threading.Lock()

    @classmethod
    def register(cls, model: ITJNERModel) -> None:
        cls._registry.setdefault(model, cls(model))

    @classmethod
    def use(cls, model: ITJNERModel, precision: str) -> None:
        """Put a registered model's linear weights in the dtype `precision` computes them in (no-op otherwise)."""
        state = cls._registry.get(model)
        if state is not None:
            device = next(model.parameters()).device
            state.to(torch.bfloat16 if effective_precision(device, precision) == "bf16" else torch.float32)

    def to(self, dtype: torch.dtype) -> None:
        with self.lock:
            if dtype == self.dtype:
                return
            for module in self.model.modules():
                if isinstance(module, torch.nn.Linear):
                    for name in ("weight", "bias"):
                        param = getattr(module, name)
                        if param is None:
                            continue
                        if dtype == torch.float32:
                            param.data = self.masters.pop(param)
                        else:
                            self.masters[param] = param.data
                            param.data = param.data.to(dtype)
            self.dtype = dtype


@torch.inference_mode()
def tag_examples(model: ITJNERModel, examples, batch_size: int = 64, details: bool = False, progress: bool = False,
                 desc: str = "tagging", precision: str = "auto"):
    """Examples -> per example (label ids, per-word marginals (words, labels), details or None), in input order."""
    device = next(model.parameters()).device
    was_training = model.training
    if was_training:
        model.eval()
    results = [None] * len(examples)
    batches = length_batches(examples, batch_size)
    for chunk in tqdm(batches, desc=desc, disable=None if progress else True, leave=False):  # None: terminals only
        batch = to_device(collate(chunk, model.config), device)
        with autocast(device, precision):
            out = model(batch, output_attentions=details)
        paths = model.decode(out)
        marg = model.marginals(out).cpu()
        for j, ex in enumerate(chunk):
            n = len(ex.word_index)
            extra = _details(out, j, ex, n) if details else None
            results[ex.index] = (paths[j][:n], marg[j, :n], extra)
    if was_training:
        model.train()
    return results


def _stitch(parts, n_words: int):
    """One tweet's (path, marginals, None) from its windows' results: each window gives the words it owns."""
    path, marg = [0] * n_words, None
    for (lo, hi, first), (window_path, window_marg, _) in parts:
        if marg is None:
            marg = window_marg.new_zeros((n_words, window_marg.shape[1]))
        path[first:first + hi - lo] = window_path[lo:hi]
        marg[first:first + hi - lo] = window_marg[lo:hi]
    return path, marg, None


def _details(out, j: int, ex, n: int) -> dict:
    """Attention maps of one tweet, indexed by word (its first sub-token): name -> (heads, words, keys). H, Q, the
    gate and Q's features come out of the model per word already; R and P are per sub-token."""
    idx = torch.tensor(ex.word_index)
    maps = {}
    for name, attn in (out.attentions or {}).items():
        if name in ("Q", "H"):
            maps[name] = attn[j][:, :n].float().cpu().numpy()
        elif name in ("P", "R"):
            maps[name] = attn[j][:, idx, :].float().cpu().numpy()
    if out.gate is not None:
        g, q = out.gate[j, :n].float(), out.visual[j, :n].float()
        maps["gate"] = g.mean(-1).cpu().numpy()
        # share of the visual signal the gate lets through: |g * Q| / |Q| (dimensions where Q is ~0 do not count)
        maps["gate_effective"] = ((g * q).norm(dim=-1) / q.norm(dim=-1).clamp_min(1e-6)).cpu().numpy()
    return maps


class InputPipeline:
    """Everything between raw inputs and model-ready examples: image bytes -> cached region features, captions from
    the configured source, tokenisation. Backbone and caption source load lazily, once; `sharing` makes a pipeline
    that reuses them."""

    def __init__(self, config, tokenizer, device, caption_source: str | None = None, cache_dir=None,
                 image_backbone=None):
        """image_backbone: an already loaded one (e.g. random weights for benchmarks); by default loaded by name."""
        self.config, self.tokenizer, self.device = config, tokenizer, device
        self.caption_spec = caption_source or config.caption_source
        self.cache_dir = cache_dir
        self._image_backbone, self._store, self._captioner = image_backbone, None, None

    def sharing(self, config, tokenizer, caption_source: str | None = None) -> "InputPipeline":
        """A pipeline for another model (or caption source) that reuses this one's image backbone and feature cache
        when it reads the same backbone (its caption source is loaded anew)."""
        other = InputPipeline(config, tokenizer, self.device, caption_source, self.cache_dir)
        if config.image_backbone == self.config.image_backbone:
            other._image_backbone, other._store = self._image_backbone, self._store
        return other

    @property
    def image_backbone(self):
        if self._image_backbone is None:
            from .backbones import load_image_backbone

            self._image_backbone = load_image_backbone(self.config.image_backbone).to(self.device)
        return self._image_backbone

    @property
    def feature_store(self) -> FeatureStore:
        if self._store is None:
            self._store = FeatureStore(self.image_backbone, self.cache_dir)
        return self._store

    @property
    def captioner(self):
        """The caption source (loaded on first use; CaptionSourceUnavailable, ImportError or ValueError if it
        cannot be)."""
        if self._captioner is None:
            from .captioning.sources import make_caption_source

            self._captioner = make_caption_source(self.caption_spec, image_backbone=self.image_backbone)
        return self._captioner

    def image_inputs(self, blobs: list[bytes | None], digests: list[str | None] | None = None):
        """Cached features and problems per image (None bytes = no image); nothing runs when no modality needs it."""
        if not self.config.multimodal or all(b is None for b in blobs):
            return [None] * len(blobs), ["missing"] * len(blobs)
        return self.feature_store.features_for_bytes(blobs, digests)

    def captions(self, tweets, blobs, feats, given):
        """Caption text and the source's `CaptionResult` (per-word attention, confidence) for each tweet ("" and
        None when there is nothing to caption)."""
        texts, info = [""] * len(tweets), [None] * len(tweets)
        if not self.config.use_caption:
            return texts, info
        given = given or [None] * len(tweets)
        need = [i for i, (f, g) in enumerate(zip(feats, given)) if f is not None or g]
        if need:
            source = self.captioner
            # the source takes our cached region features only when they come from the backbone it reads;
            # otherwise it gets the decoded image (and decoding is skipped when features do)
            shares = source.feature_backbone == self.config.image_backbone
            pixels = source.reads_images and not shares
            images = [decode_image(blobs[i]) if pixels and feats[i] is not None else None for i in need]
            features = [feats[i] for i in need] if shares else None
            results = source.caption(images, [tweets[i].image_id for i in need], features, [given[i] for i in need])
            for i, res in zip(need, results):
                texts[i], info[i] = res.text, res
        return texts, info

    def prepare(self, tweets: list[Tweet], images: list[bytes | None], given=None, report: ImageReport | None = None,
                digests: list[str | None] | None = None):
        feats, problems = self.image_inputs(images, digests)
        if report is not None:
            for tw, problem in zip(tweets, problems):
                report.add(tw.image_id, problem)
        captions, caption_info = self.captions(tweets, images, feats, given)
        examples = build_examples(tweets, self.tokenizer, self.config, feats if self.config.use_image else None,
                                  captions)
        return examples, problems, captions, caption_info


class Predictor:
    """Loads a checkpoint once; `predict` tags tweets with their images (bytes or an images folder)."""

    def __init__(self, model: ITJNERModel, tokenizer, name: str = "itjner", card: dict | None = None,
                 caption_source: str | None = None, cache_dir=None, precision: str = "auto",
                 version: str | None = None, image_backbone=None):
        """version: `model_version` (default the name; `from_pretrained` gives name + short weights hash).
        precision: "auto" (`effective_precision`), "fp32", or "bf16" (autocast on any device)."""
        self.model, self.tokenizer, self.name, self.card = model, tokenizer, name, card or {}
        self.precision = precision
        self.version = version or name
        self.config = model.config
        self.device = next(model.parameters()).device
        self.inputs = InputPipeline(self.config, tokenizer, self.device, caption_source, cache_dir, image_backbone)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | None = None, caption_source: str | None = None,
                        cache_dir=None, precision: str = "auto") -> "Predictor":
        from .backbones import load_tokenizer

        model = ITJNERModel.from_pretrained(folder, default_device(device))
        InferenceWeights.register(model)  # loaded for inference only: its weights may take the precision's dtype
        tokenizer = load_tokenizer(model.config.text_encoder)
        return cls(model, tokenizer, Path(folder).name, load_card(folder), caption_source, cache_dir, precision,
                   version=checkpoint_version(folder))

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = check_precision(value)
        InferenceWeights.use(self.model, value)  # a loaded model's weights take the dtype it computes in, now

    @property
    def model_version(self) -> str:
        return self.version

    @property
    def reads_images(self) -> bool:
        """Whether the image (or a caption of it) can change this model's tags."""
        return self.config.multimodal

    @property
    def caption_source(self):
        """The caption source this predictor captions with (loaded now if it was not: CaptionSourceUnavailable,
        ImportError or ValueError when it cannot be)."""
        return self.inputs.captioner

    def examples(self, tweets: list[Tweet], images: list[bytes | None]):
        """Model-ready examples of tweets with their images (features cached, captions from the source)."""
        return self.inputs.prepare(tweets, images)[0]

    def image_features(self, images: list[bytes | None], digests: list[str | None] | None = None):
        """(region features or None, problem or None) per image, from the feature cache (computed once per image
        content; `digests`: the images' sha256 when the caller has them already)."""
        return self.inputs.feature_store.features_for_bytes(images, digests)

    def with_caption_source(self, spec: str | None) -> "Predictor":
        """The same model, backbone and feature cache, with captions from another source."""
        return self.sharing_inputs(self.model, self.tokenizer, self.name, self.card, spec, self.version)

    def sharing_inputs(self, model: ITJNERModel, tokenizer, name: str, card: dict | None = None,
                       caption_source: str | None = None, version: str | None = None) -> "Predictor":
        """A predictor for another model that shares this one's image backbone and feature cache (when both read the
        same backbone): a second checkpoint in the app does not load or cache the CNN twice."""
        other = Predictor(model, tokenizer, name, card, caption_source, self.inputs.cache_dir, self.precision, version)
        other.inputs = self.inputs.sharing(model.config, tokenizer, caption_source)
        return other

    def predict(self, tweets: list[Tweet], images_dir=None, images: list[bytes | None] | None = None,
                given_captions: list[str | None] | None = None, details: bool = False, batch_size: int = 64,
                progress: bool = False, report: ImageReport | None = None,
                digests: list[str | None] | None = None) -> list[Prediction]:
        """digests: the images' sha256 when the caller computed them already (the feature cache's keys)."""
        if images is None:
            images = [read_image_bytes(images_dir, tw.image_id) for tw in tweets]
        examples, problems, captions, caption_info = self.inputs.prepare(tweets, images, given_captions, report,
                                                                         digests)
        windows = {} if details else self._windows(tweets, examples, captions)
        extra = [ex for parts in windows.values() for _, ex in parts]
        InferenceWeights.use(self.model, self.precision)  # a no-op unless a predictor sharing the model changed it
        tagged = tag_examples(self.model, examples + extra, batch_size, details, progress, precision=self.precision)
        for i, parts in windows.items():
            tagged[i] = _stitch([(owned, tagged[ex.index]) for owned, ex in parts], len(tweets[i].tokens))
        return [self._prediction(*row, details) for row in
                zip(tweets, examples, tagged, captions, caption_info, problems)]

    def _windows(self, tweets, examples, captions) -> dict[int, list]:
        """Tweets longer than the encoder's input, as overlapping windows of words: {tweet index: [((first, end)
        word range the window tags, its example)]}. Each window reads the tweet's image and caption."""
        from .batching import build_examples
        from .tokenization import window_owners, word_windows

        out, next_index = {}, len(examples)
        for i, ex in enumerate(examples):
            if not ex.truncated_words:
                continue
            words = tweets[i].tokens
            spans = word_windows(self.tokenizer, words, self.config.max_length)
            parts = build_examples([Tweet(tweets[i].image_id, words[a:b]) for a, b in spans], self.tokenizer,
                                   self.config, [ex.image_feats] * len(spans) if self.config.use_image else None,
                                   [captions[i]] * len(spans))
            out[i] = []
            for (a, b), (lo, hi), part in zip(spans, window_owners(spans), parts):
                part.index, next_index = next_index, next_index + 1
                out[i].append(((lo - a, hi - a, lo), part))
            examples[i].truncated_words = 0  # every word is tagged now
        return out

    def _prediction(self, tweet, ex, tagged, caption, caption_info, problem, details) -> Prediction:
        path, marg, extra = tagged
        tags = [self.config.labels[k] for k in path] + ["O"] * ex.truncated_words
        conf = [float(marg[i, k]) for i, k in enumerate(path)] + [1.0] * ex.truncated_words
        if details:
            extra.update(caption_attention=caption_info.attention if caption_info else None,
                         caption_likely_poor=bool(((caption_info and caption_info.details) or {}).get("likely_poor")),
                         truncated_words=ex.truncated_words)
        return Prediction(tweet=tweet, tags=tags, entities=bio_to_entities(tags, conf), score=min(conf),
                          caption=caption, image_problem=problem if self.config.use_image else None, details=extra)

