"""ITJNER: image-text joint NER with multimodal semantic interaction (Zhong et al., 2022), Fig. 1 in data-flow order.

    text  S --text encoder--> T --self-attn--> R
    image I --frozen CNN (cached, images.py)--> U (49 x C) --W_u--> V --self-attn--> W
    caption L (captioning/sources.py) --same text encoder--> C --self-attn--> O
    (R, O, W) --collaborative interaction (modeling_fusion.py)--> A = [H ; G] --CRF--> tags

The CRF runs over words: A is read at each word's first sub-token (the field's convention; the remaining
sub-tokens and [CLS]/[SEP] carry no tag), so H and Q are only computed there (modeling_fusion.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .backbones import HUB_IDS, check_weights, load_text_encoder, weights_identity
from .checkpoints import require_checkpoint
from .configuration_itjner import ITJNERConfig
from .modeling_attention import SelfAttentionLayer
from .modeling_crf import CRFDecoder
from .modeling_fusion import CollaborativeInteraction, gather_positions
from .tokenization import CHAR_VOCAB
from .word_tags import vocabulary_sizes

NUM_SHAPES = 6  # word shapes for the optional capitalisation embedding (tokenization.word_shape)
# Padded sub-tokens above which tweet and caption get separate encoder calls (measured on the lite preset, 2-core
# CPU: ~75 us of MiniLM per padded token against ~5 ms for a second call).
MAX_SHARED_CALL_PADDING = 64


@dataclass
class ITJNEROutput:
    loss: torch.Tensor | None
    emissions: torch.Tensor          # (B, words, labels)
    word_mask: torch.Tensor          # (B, words)
    attentions: dict | None = None   # name -> (B, heads, Lq, Lk); names R, O, W, P, Z, H, Q (H, Q: Lq = words)
    gate: torch.Tensor | None = None  # (B, words, d)
    visual: torch.Tensor | None = None  # Q: (B, words, d), before the gate


class CharacterFeatures(nn.Module):
    """Extension (off in every preset): a cased character CNN over each word (embedding -> width-3 convolution ->
    ReLU -> max over the word's characters), given to every sub-token of the word. Its output is concatenated to T
    and mapped back to d by a linear layer whose T block is the identity, i.e. T + W_c c."""

    def __init__(self, config: ITJNERConfig, char_dim: int = 32):
        super().__init__()
        self.embedding = nn.Embedding(CHAR_VOCAB, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, config.char_cnn, kernel_size=3, padding=1)
        self.dropout = nn.Dropout(config.dropout)
        self.projection = nn.Linear(config.char_cnn, config.hidden_size)

    def forward(self, t, char_ids):
        """t (B, L, d), char_ids (B, L, chars) -> T with its words' character features added in."""
        b, length, chars = char_ids.shape
        x = self.embedding(char_ids.view(b * length, chars)).transpose(1, 2)
        h = torch.relu(self.conv(x)).masked_fill((char_ids.view(b * length, 1, chars) == 0), 0.0)
        c = h.max(dim=2).values.view(b, length, -1)
        return t + self.projection(self.dropout(c)).to(t.dtype)


class WordTagFeatures(nn.Module):
    """Extension (off in every preset): a spaCy pipeline's cased part-of-speech and entity tags of each word
    (word_tags.py), one embedding each, added to T like the word shape."""

    def __init__(self, config: ITJNERConfig):
        super().__init__()
        pos_size, entity_size = vocabulary_sizes(config.word_tag_labels)
        self.pos_embedding = nn.Embedding(pos_size, config.hidden_size, padding_idx=0)
        self.entity_embedding = nn.Embedding(entity_size, config.hidden_size, padding_idx=0)

    def forward(self, t, word_tag_ids):
        """t (B, L, d), word_tag_ids (B, L, 2) -> T with the tags' embeddings added."""
        return t + self.pos_embedding(word_tag_ids[..., 0]) + self.entity_embedding(word_tag_ids[..., 1])


class TextFeatures(nn.Module):
    """Text encoder (ALBERT in the paper) -> T; self-attention -> R (eq. 6). Captions reuse `encode`: C, then O."""

    def __init__(self, config: ITJNERConfig, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        d = config.hidden_size
        self.shape_embedding = nn.Embedding(NUM_SHAPES, d) if config.word_shape else None
        self.characters = CharacterFeatures(config) if config.char_cnn else None
        self.word_tags = WordTagFeatures(config) if config.word_tags else None
        self.text_self_attention = SelfAttentionLayer(d, config.num_heads, config.dropout)

    def encode(self, *sequences):
        """(ids, mask) pairs -> their hidden states. They share ONE encoder call when that pads little (a tweet and
        its caption: one call saves ~5 ms of per-call cost on CPU); otherwise each gets its own call, so a batch of
        long tweets does not pad every short caption to the tweet width. Right padding with masked keys leaves each
        sequence's states unchanged either way."""
        width = max(ids.shape[1] for ids, _ in sequences)
        padding = sum(ids.shape[0] * (width - ids.shape[1]) for ids, _ in sequences)
        if len(sequences) == 1 or padding > MAX_SHARED_CALL_PADDING:
            return [self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state for ids, mask in sequences]
        ids = torch.cat([nn.functional.pad(i, (0, width - i.shape[1])) for i, _ in sequences])
        mask = torch.cat([nn.functional.pad(m, (0, width - m.shape[1])) for _, m in sequences])
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        parts = hidden.split([i.shape[0] for i, _ in sequences])
        return [h[:, :i.shape[1]] for h, (i, _) in zip(parts, sequences)]

    def forward(self, t, attention_mask, shape_ids=None, need_weights=True, char_ids=None, word_tag_ids=None):
        """T (encoder states of the tweet) -> R."""
        if self.shape_embedding is not None and shape_ids is not None:
            t = t + self.shape_embedding(shape_ids)
        if self.characters is not None and char_ids is not None:
            t = self.characters(t, char_ids)
        if self.word_tags is not None and word_tag_ids is not None:
            t = self.word_tags(t, word_tag_ids)
        return self.text_self_attention(t, attention_mask.bool(), need_weights)


class ImageFeatures(nn.Module):
    """V = W_u^T U (eq. 4), then self-attention over the 49 regions -> W (eq. 7)."""

    def __init__(self, config: ITJNERConfig):
        super().__init__()
        self.w_u = nn.Linear(config.image_dim, config.hidden_size)
        self.region_self_attention = SelfAttentionLayer(config.hidden_size, config.num_heads, config.dropout,
                                                        config.fusion_ffn_mult)

    def forward(self, u, has_image, need_weights=True):
        v = self.w_u(u)
        region_mask = has_image[:, None].expand(-1, v.shape[1])
        return self.region_self_attention(v, region_mask, need_weights)


class CaptionFeatures(nn.Module):
    """C = text encoder(caption) (TextFeatures.encode: the same encoder); self-attention -> O (eq. 6)."""

    def __init__(self, config: ITJNERConfig):
        super().__init__()
        self.caption_self_attention = SelfAttentionLayer(config.hidden_size, config.num_heads, config.dropout,
                                                         config.fusion_ffn_mult)

    def forward(self, c, caption_mask, need_weights=True):
        return self.caption_self_attention(c, caption_mask.bool(), need_weights)


class ITJNERModel(nn.Module):
    def __init__(self, config: ITJNERConfig, text_encoder: nn.Module | None = None):
        super().__init__()
        if text_encoder is None:
            text_encoder = load_text_encoder(config.text_encoder, config_dict=config.text_encoder_config)
        # the model's own copy records the encoder's architecture (saved with it: rebuilds offline); the caller's
        # config is left as it was
        config = replace(config, text_encoder_config=text_encoder.config.to_dict())
        self.config = config
        if text_encoder.config.hidden_size != config.hidden_size:
            raise ValueError(f"hidden_size {config.hidden_size} != text encoder width {text_encoder.config.hidden_size}")
        self.text = TextFeatures(config, text_encoder)
        if config.freeze_text_encoder:
            self.text.encoder.requires_grad_(False)
        self.image = ImageFeatures(config) if config.use_image else None
        self.caption = CaptionFeatures(config) if config.use_caption else None
        self.interaction = CollaborativeInteraction(config)
        self.decoder = CRFDecoder(2 * config.hidden_size, config.num_labels, config.dropout)
        # lambda-weighted auxiliary text-only tagger on R (used only when another modality is on)
        self.aux_decoder = (CRFDecoder(config.hidden_size, config.num_labels, config.dropout)
                            if config.multimodal and config.aux_weight > 0 else None)

    @classmethod
    def from_config(cls, config: ITJNERConfig, random_init: bool = False) -> "ITJNERModel":
        """A new model with the pretrained text encoder named in the config (random weights only when asked), with
        fresh LoRA adapters on it when the config has `adapter` (the weights' identity is recorded then)."""
        encoder = load_text_encoder(config.text_encoder, random_init=random_init)
        if config.adapter:
            from .adapters import LoraSettings, add_adapter

            identity = None if random_init else weights_identity(config.text_encoder)
            config = replace(config, text_encoder_weights=identity)
            encoder = add_adapter(encoder, LoraSettings.from_dict(config.adapter),
                                  HUB_IDS.get(config.text_encoder, config.text_encoder))
        return cls(config, encoder)

    # ------------------------------------------------------------------------------------------------- forward
    def forward(self, batch: dict, labels: torch.Tensor | None = None, output_attentions: bool = False):
        text_mask = batch["attention_mask"].bool()
        # no encoder work for captions when no tweet in the batch has one (P = R for those tweets anyway)
        with_caption = self.caption is not None and "caption_ids" in batch and bool(batch["has_caption"].any())
        sequences = [(batch["input_ids"], batch["attention_mask"])]
        if with_caption:
            sequences.append((batch["caption_ids"], batch["caption_mask"]))
        hidden = self.text.encode(*sequences)
        r, r_attn = self.text(hidden[0], batch["attention_mask"], batch.get("shape_ids"), output_attentions,
                              batch.get("char_ids"), batch.get("word_tag_ids"))
        attn = {"R": r_attn}
        o = o_mask = has_caption = None
        if with_caption:
            o_mask = batch["caption_mask"].bool()
            o, attn["O"] = self.caption(hidden[1], batch["caption_mask"], output_attentions)
            has_caption = batch["has_caption"].bool()
        w = has_image = None
        if self.image is not None and "image_feats" in batch:
            has_image = batch["has_image"].bool()
            w, attn["W"] = self.image(batch["image_feats"].to(r.dtype), has_image, output_attentions)
        words, word_mask = batch["word_index"], batch["word_mask"].bool()
        a, fusion_attn, gate, q = self.interaction(r, text_mask, words, o, o_mask, has_caption, w, has_image,
                                                   output_attentions)
        attn.update(fusion_attn)
        emissions = self.decoder.emissions(a)
        loss = None
        if labels is not None:
            loss = self.decoder.nll(emissions, labels, word_mask)
            if self.aux_decoder is not None:
                aux = self.aux_decoder.emissions(gather_positions(r, words))
                loss = loss + self.config.aux_weight * self.aux_decoder.nll(aux, labels, word_mask)
        if not output_attentions:
            return ITJNEROutput(loss, emissions, word_mask)
        return ITJNEROutput(loss, emissions, word_mask, attn, gate, q)

    def decode(self, out: ITJNEROutput) -> list[list[int]]:
        return self.decoder.decode(out.emissions, out.word_mask)

    def marginals(self, out: ITJNEROutput) -> torch.Tensor:
        return self.decoder.marginals(out.emissions, out.word_mask)

    # ------------------------------------------------------------------------------------------- save / load
    def save_pretrained(self, folder: str | Path, card: dict | None = None, dtype: torch.dtype | None = None) -> None:
        """config.json + model.safetensors (+ README.md model card). The frozen image backbone is not stored: it is
        re-loaded by name; nor is a frozen or adapted text encoder (its adapter goes to encoder_adapter/, see
        adapters.py). `dtype=torch.float16` halves the files."""
        from safetensors.torch import save_file

        from .adapters import has_adapter, save_adapter
        from .model_card import write_model_card

        if self.config.adapter and not has_adapter(self.text.encoder):
            raise ValueError("this model's adapter was merged into the encoder (from_pretrained(merge=True), for "
                             "inference): load it with merge=False to save it again")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder)
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
                 for k, v in self.state_dict().items() if not self._reloadable_by_name(k)}
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        if self.config.adapter:
            save_adapter(self.text.encoder, folder, HUB_IDS.get(self.config.text_encoder, self.config.text_encoder),
                         dtype)
        if card is not None:
            (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
            write_model_card(folder, self.config, card)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu", merge: bool = True
                        ) -> "ITJNERModel":
        """merge: fold a LoRA adapter into the encoder's weights (inference); False keeps it apart and trainable."""
        from safetensors.torch import load_file

        folder = Path(folder)
        require_checkpoint(folder)
        config = ITJNERConfig.load(folder)
        model = cls(config, cls._stored_apart(config, folder, merge))
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(folder / "model.safetensors")).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not model._reloadable_by_name(k)]
        if missing or unexpected:
            raise ValueError(f"{folder}: checkpoint does not match its config (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        return model.to(device).eval()

    @staticmethod
    def _stored_apart(config: ITJNERConfig, folder: Path, merge: bool) -> nn.Module | None:
        """The text encoder of a checkpoint that does not store it (frozen, or adapted: it comes back pretrained, by
        name, after its weights' hash is checked, with the adapter on it); None when the checkpoint stores it."""
        if not (config.adapter or config.freeze_text_encoder):
            return None
        if config.text_encoder_weights:
            check_weights(config.text_encoder_weights)
        elif config.adapter:
            raise ValueError(f"{folder}: its adapter was trained over random encoder weights (a benchmark run); "
                             "it cannot be loaded")
        encoder = load_text_encoder(config.text_encoder)
        if config.adapter:
            from .adapters import load_adapter

            encoder = load_adapter(encoder, folder, merge)
        return encoder

    def _reloadable_by_name(self, key: str) -> bool:
        return bool(self.config.freeze_text_encoder or self.config.adapter) and key.startswith("text.encoder.")

