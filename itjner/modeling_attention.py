"""The attention block of the collaborative interaction module (paper eqs. 8-11).

    A_i(X, Y)  = softmax([W_qi X][W_ki Y]^T / sqrt(d_k)) [W_vi Y]          (8)
    MHA(X, Y)  = W_o [A_1(X, Y), ..., A_m(X, Y)]                           (9)
    P~         = LN(X + MHA(X, Y))                                          (10)
    out        = LN(P~ + FFN(P~))                                           (11)

With X = Y it is the standard self-attention layer used for R, O and W (eqs. 6-7). Attention weights are returned per
head so the UI can draw them. When nobody asks for the weights (training, plain tagging) the same maths runs through
torch's fused `scaled_dot_product_attention` kernel instead.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class MultiHeadCrossAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, hidden // heads
        self.q, self.k, self.v = (nn.Linear(hidden, hidden) for _ in range(3))
        self.o = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d) -> (B, m, L, d/m)
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, y, y_mask=None, need_weights: bool = True):
        """x: (B, Lx, d) queries; y: (B, Ly, d) keys/values; y_mask: (B, Ly) bool, True = attend.
        Returns (B, Lx, d) and the weights (B, m, Lx, Ly), or None for them when not `need_weights`."""
        q, k, v = self._split(self.q(x)), self._split(self.k(y)), self._split(self.v(y))
        # finfo.min, not -inf: a row with no valid key gives uniform weights instead of NaN (callers drop it).
        bias = None if y_mask is None else torch.zeros(y_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
            ~y_mask, torch.finfo(q.dtype).min)[:, None, None, :]
        if need_weights:
            scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
            weights = (scores if bias is None else scores + bias).softmax(dim=-1)
            heads = self.dropout(weights) @ v
        else:
            weights = None
            heads = nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.dropout.p if self.training else 0.0)
        b, _, n, _ = heads.shape
        return self.o(heads.transpose(1, 2).reshape(b, n, -1)), weights


class CrossModalBlock(nn.Module):
    """MHA -> add & LayerNorm -> FFN -> add & LayerNorm, with X as query and Y as key/value."""

    def __init__(self, hidden: int, heads: int, dropout: float, ffn_mult: int = 4):
        super().__init__()
        self.attention = MultiHeadCrossAttention(hidden, heads, dropout)
        self.norm1 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn_mult * hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_mult * hidden, hidden))
        self.norm2 = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, y, y_mask=None, need_weights: bool = True):
        attended, weights = self.attention(x, y, y_mask, need_weights)
        p = self.norm1(x + self.dropout(attended))
        return self.norm2(p + self.dropout(self.ffn(p))), weights


class SelfAttentionLayer(CrossModalBlock):
    """The standard self-attention layer on R, O and W: the same block with X = Y."""

    def forward(self, x, mask=None, need_weights: bool = True):  # noqa: D401 - same block, one input
        return super().forward(x, x, mask, need_weights)
