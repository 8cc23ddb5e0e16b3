"""CRF decoder (paper eqs. 13-16) on pytorch-crf, plus exact per-word marginals for confidence scores.

score(A, y) = sum_i T[y_i, y_{i+1}] + sum_i E[a_i, y_i], E = emission weights (2d x C) applied to A.
Training maximises log p(y | S, I); decoding is Viterbi. Marginals p(y_i = c | S, I) come from forward-backward.
"""
from __future__ import annotations

import torch
from torch import nn
from torchcrf import CRF


class CRFDecoder(nn.Module):
    def __init__(self, in_dim: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.emission = nn.Linear(in_dim, num_labels)  # E_{a_i, y_i} = w^{y_i} . a_i  (eq. 15)
        self.crf = CRF(num_labels, batch_first=True)

    def emissions(self, a: torch.Tensor) -> torch.Tensor:
        return self.emission(self.dropout(a))

    def nll(self, emissions, labels, mask) -> torch.Tensor:
        """Mean negative log-likelihood over the batch (eq. 16, negated)."""
        return -self.crf(emissions.float(), labels, mask=mask, reduction="mean")

    def decode(self, emissions, mask) -> list[list[int]]:
        return self.crf.decode(emissions.float(), mask=mask)

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, C) probabilities p(y_i = c); padded positions are zeros."""
        e, mask = emissions.float(), mask.bool()
        start, trans, end = self.crf.start_transitions, self.crf.transitions, self.crf.end_transitions
        b, n, c = e.shape
        alpha = torch.zeros(b, n, c, device=e.device)
        alpha[:, 0] = start + e[:, 0]
        for i in range(1, n):
            step = torch.logsumexp(alpha[:, i - 1, :, None] + trans[None], dim=1) + e[:, i]
            alpha[:, i] = torch.where(mask[:, i, None], step, alpha[:, i - 1])
        lengths = mask.sum(1)
        beta = torch.zeros(b, n, c, device=e.device)
        last = (lengths - 1).clamp(min=0)
        beta[torch.arange(b), last] = end.expand(b, c)
        for i in range(n - 2, -1, -1):
            step = torch.logsumexp(trans[None] + (e[:, i + 1] + beta[:, i + 1])[:, None, :], dim=2)
            inside = (i + 1) < lengths
            beta[:, i] = torch.where(inside[:, None], step, beta[:, i])
        log_z = torch.logsumexp(alpha[torch.arange(b), last] + end, dim=-1)
        probs = (alpha + beta - log_z[:, None, None]).exp()
        return probs * mask[..., None]
