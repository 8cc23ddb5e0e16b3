"""The multimodal collaborative interaction module (paper Sec. 3, Fig. 4), in data-flow order.

Left of Fig. 4, image-guided text fusion:   P = Block(caption <-> text),  Z = Block(W, P),  H = Block(R, Z)
Right of Fig. 4, text-guided image fusion:  Q = Block(P, W),  g = sigmoid(W_h H + W_q Q),  G = g * Q
Output A = [H ; G].

Per-example masks: a tweet without a usable caption gets P = R; one without a usable image gets H = R and G = 0,
so a missing input never feeds garbage into the tagger.

A is only read at each word's first sub-token (the CRF's positions), and H and Q feed nothing else, so their blocks
run on those query rows alone: an attention block's output row depends on its own query row only, so this is the
same maths with fewer rows (R, P and Z stay full length: they are keys and values).
"""
from __future__ import annotations

import torch
from torch import nn

from .modeling_attention import CrossModalBlock


def _keep(flag: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per example: `new` where flag (B,) is True, else `old`."""
    return torch.where(flag[:, None, None], new, old)


class CaptionGuidedText(nn.Module):
    """P: caption-aware text. The paper puts O (caption) as query and R as key/value, yet gives P the text's length;
    it pads every sequence to the same maximum length, so position i of P pairs caption token i with text token i.

    mode "text" (default): text tokens query the caption, X = R, Y = O -> P has the text's length and each text token
    gathers the caption words relevant to it. mode "caption": the literal reading, X = O padded/cut to the text length,
    Y = R, residual on O (positions beyond the caption are zero queries)."""

    def __init__(self, hidden, heads, dropout, mode="text", ffn_mult=4):
        super().__init__()
        if mode not in ("text", "caption"):
            raise ValueError(f"caption_query must be 'text' or 'caption', not {mode!r}")
        self.mode = mode
        self.block = CrossModalBlock(hidden, heads, dropout, ffn_mult)

    def forward(self, r, r_mask, o, o_mask, need_weights=True):
        if self.mode == "text":
            return self.block(r, o, o_mask, need_weights)
        n = r.shape[1]
        o = o[:, :n] if o.shape[1] >= n else nn.functional.pad(o, (0, 0, 0, n - o.shape[1]))
        return self.block(o, r, r_mask, need_weights)


class ImageGuidedTextFusion(nn.Module):
    """Left branch: Z (regions attend to caption-aware text P) then H (text R attends to Z)."""

    def __init__(self, hidden, heads, dropout, ffn_mult=4):
        super().__init__()
        self.region_block = CrossModalBlock(hidden, heads, dropout, ffn_mult)  # Z: query W, key/value P
        self.text_block = CrossModalBlock(hidden, heads, dropout, ffn_mult)    # H: query R, key/value Z

    def forward(self, r, p, text_mask, w, region_mask, need_weights=True):
        """r: the query rows of R wanted in H; p: all of P (Z's keys)."""
        z, z_attn = self.region_block(w, p, text_mask, need_weights)
        h, h_attn = self.text_block(r, z, region_mask, need_weights)
        return h, {"Z": z_attn, "H": h_attn}


class VisualGate(nn.Module):
    """g = sigmoid(W_h^T H + W_q^T Q) (eq. 12); G = g * Q."""

    def __init__(self, hidden):
        super().__init__()
        self.w_h = nn.Linear(hidden, hidden, bias=False)
        self.w_q = nn.Linear(hidden, hidden, bias=True)

    def forward(self, h, q):
        g = torch.sigmoid(self.w_h(h) + self.w_q(q))
        return g * q, g


class TextGuidedImageFusion(nn.Module):
    """Right branch: Q (caption-aware text P attends to regions W), then the visual gate."""

    def __init__(self, hidden, heads, dropout, use_gate=True, ffn_mult=4):
        super().__init__()
        self.word_block = CrossModalBlock(hidden, heads, dropout, ffn_mult)  # Q: query P, key/value W
        self.gate = VisualGate(hidden) if use_gate else None

    def forward(self, p, w, region_mask, h, need_weights=True):
        q, q_attn = self.word_block(p, w, region_mask, need_weights)
        if self.gate is None:
            return q, None, q, q_attn
        g_out, g = self.gate(h, q)
        return g_out, g, q, q_attn


class CollaborativeInteraction(nn.Module):
    """The whole of Fig. 4: (R, O, W) -> A = [H ; G], with the ablation switches of Table 3.
    Returns A, the attention maps (None unless `need_weights`), the gate g and Q (the word-aware visual features
    before gating)."""

    def __init__(self, config):
        super().__init__()
        d, m, p, f = config.hidden_size, config.num_heads, config.dropout, config.fusion_ffn_mult
        self.config = config
        self.caption_guided = CaptionGuidedText(d, m, p, config.caption_query, f) if config.use_caption else None
        self.image_guided = (ImageGuidedTextFusion(d, m, p, f)
                             if config.use_image and config.use_image_text_fusion else None)
        self.text_guided = TextGuidedImageFusion(d, m, p, config.use_gate, f) if config.use_image else None

    def forward(self, r, text_mask, words, o=None, o_mask=None, has_caption=None, w=None, has_image=None,
                need_weights=True):
        """words: (B, N) each word's first sub-token; A, H, Q, the gate and the H/Q maps come back per word."""
        attn: dict[str, torch.Tensor] = {}
        p = r
        if self.caption_guided is not None and o is not None:
            p_new, attn["P"] = self.caption_guided(r, text_mask, o, o_mask, need_weights)
            p = _keep(has_caption, p_new, r)
        r_words = gather_positions(r, words)
        h, g_out, gate, q = r_words, torch.zeros_like(r_words), None, None
        if w is not None and self.text_guided is not None:
            region_mask = has_image[:, None].expand(-1, w.shape[1])
            if self.image_guided is not None:
                h_new, left = self.image_guided(r_words, p, text_mask, w, region_mask, need_weights)
                h = _keep(has_image, h_new, r_words)
                attn.update(left)
            g_new, gate, q, attn["Q"] = self.text_guided(gather_positions(p, words), w, region_mask, h, need_weights)
            g_out = _keep(has_image, g_new, torch.zeros_like(g_new))
        return torch.cat([h, g_out], dim=-1), attn, gate, q


def gather_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, L, D), index (B, N) -> (B, N, D)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))
