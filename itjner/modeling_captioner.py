"""A "show, attend and tell" captioner over the 7x7 = 49 region features of any image backbone (paper Sec. 2.2.2).

At every step an LSTM decoder attends softly over the regions (one weight per region, weights sum to 1), gates the
attended context with a sigmoid of its hidden state (the f_beta gate), and emits a word. The decoder state starts
from the mean region feature. Training loss: cross-entropy on the next word plus, optionally, the doubly stochastic
attention penalty alpha_c * mean((1 - sum_t alpha_t)^2) that pushes every region to be looked at over the caption.

Decoding is greedy or beam search, both batched over images; both return, per emitted word, its 49 attention weights
in the backbone's row-major region order (index = row * 7 + column, row 0 at the top). Both can block repeated n-grams
(config.no_repeat_ngram_size, as transformers' generate; the default, 2, and how it was chosen: see
itjner.configuration_captioner).

Laid out as a transformers model: the config is in itjner.configuration_captioner, the vocabulary and the caption
tokenizer (`caption_tokenize`) in itjner.tokenization_captioner; CaptionerConfig and Vocabulary are re-exported here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_captioner import CONFIG_FILE, CaptionerConfig
from .tokenization_captioner import END, PAD, SPECIALS, START, UNK, VOCAB_FILE, Vocabulary

__all__ = ["CaptionerConfig", "Vocabulary", "Caption", "RegionAttention", "CaptionModel", "pad_captions",
           "banned_next_words", "PAD", "START", "END", "UNK", "SPECIALS", "NEVER_EMITTED", "CONFIG_FILE",
           "VOCAB_FILE", "WEIGHTS_FILE"]

NEVER_EMITTED = (0, 1, 3)  # ids of <pad>, <start>, <unk>: decoding never produces them
WEIGHTS_FILE = "model.safetensors"


@dataclass
class Caption:
    """A generated caption: words, per word the 49 attention weights that produced it, and its log-probability."""

    words: list[str]
    attention: list[list[float]]
    score: float

    @property
    def text(self) -> str:
        return " ".join(self.words)


# ----------------------------------------------------------------------------------------------------------- model
class RegionAttention(nn.Module):
    """Additive attention: alpha = softmax(w^T relu(W_f f_i + W_h h)) over regions i."""

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int):
        super().__init__()
        self.from_features = nn.Linear(feature_dim, attention_dim)
        self.from_hidden = nn.Linear(hidden_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def forward(self, feats: torch.Tensor, projected: torch.Tensor, h: torch.Tensor):
        """feats (B, R, F), projected = from_features(feats) (B, R, A), h (B, H) -> context (B, F), alpha (B, R)."""
        energy = self.score(torch.relu(projected + self.from_hidden(h).unsqueeze(1))).squeeze(2)
        alpha = energy.softmax(dim=1)
        return (feats * alpha.unsqueeze(2)).sum(dim=1), alpha


class CaptionModel(nn.Module):
    def __init__(self, config: CaptionerConfig, vocab: Vocabulary):
        super().__init__()
        if config.vocab_size != len(vocab):
            raise ValueError(f"config.vocab_size {config.vocab_size} != vocabulary size {len(vocab)}")
        self.config, self.vocab = config, vocab
        c = config
        self.feature_norm = nn.LayerNorm(c.feature_dim)
        self.attention = RegionAttention(c.feature_dim, c.hidden_dim, c.attention_dim)
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=Vocabulary.pad_id)
        self.init_h = nn.Linear(c.feature_dim, c.hidden_dim)
        self.init_c = nn.Linear(c.feature_dim, c.hidden_dim)
        self.f_beta = nn.Linear(c.hidden_dim, c.feature_dim)
        self.cell = nn.LSTMCell(c.embed_dim + c.feature_dim, c.hidden_dim)
        self.dropout = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden_dim, c.vocab_size)

    # -- one decoding step, shared by training and both decoders
    def prepare(self, feats: torch.Tensor):
        """(B, R, F) raw region features -> normalised features, their attention projection and the initial (h, c)."""
        feats = self.feature_norm(feats.float())
        mean = feats.mean(dim=1)
        return feats, self.attention.from_features(feats), (torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)))

    def step(self, feats, projected, words: torch.Tensor, state):
        """Previous words (B,) -> logits (B, V) of the next word, attention (B, R), new (h, c)."""
        h, c = state
        context, alpha = self.attention(feats, projected, h)
        context = torch.sigmoid(self.f_beta(h)) * context
        h, c = self.cell(torch.cat([self.embed(words), context], dim=1), (h, c))
        return self.out(self.dropout(h)), alpha, (h, c)

    # -- training
    def forward(self, feats: torch.Tensor, captions: torch.Tensor):
        """Teacher forcing. feats (B, R, F); captions (B, T) = <start> .. <end> <pad>.. ->
        logits (B, T-1, V) predicting captions[:, 1:], and alphas (B, T-1, R)."""
        feats, projected, state = self.prepare(feats)
        logits, alphas = [], []
        for t in range(captions.size(1) - 1):
            step_logits, alpha, state = self.step(feats, projected, captions[:, t], state)
            logits.append(step_logits)
            alphas.append(alpha)
        return torch.stack(logits, 1), torch.stack(alphas, 1)

    def loss(self, feats: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, cross-entropy alone): mean CE per target word (against targets smoothed by
        config.label_smoothing) + alpha_c * attention penalty; the second value is the plain, unsmoothed CE."""
        logits, alphas = self(feats, captions)
        targets = captions[:, 1:]
        flat_logits, flat_targets = logits.reshape(-1, logits.size(-1)), targets.reshape(-1)
        ce = F.cross_entropy(flat_logits, flat_targets, ignore_index=Vocabulary.pad_id)
        loss = ce
        if self.config.label_smoothing > 0:
            loss = F.cross_entropy(flat_logits, flat_targets, ignore_index=Vocabulary.pad_id,
                                   label_smoothing=self.config.label_smoothing)
        if self.config.alpha_c <= 0:
            return loss, ce.detach()
        mask = (targets != Vocabulary.pad_id).unsqueeze(2).float()
        coverage = (alphas * mask).sum(dim=1)  # (B, R): attention each region received over the caption
        penalty = ((1.0 - coverage) ** 2).mean()
        return loss + self.config.alpha_c * penalty, ce.detach()

    # -- decoding
    @torch.no_grad()
    def generate(self, feats: torch.Tensor, beam: int | None = None, max_len: int | None = None,
                 length_penalty: float | None = None, no_repeat_ngram_size: int | None = None) -> list[Caption]:
        """Captions for (B, R, F) or (R, F) features. beam 1 = greedy; beam > 1 = beam search (`beam_search_batch`:
        the images' hypotheses advance together, one decoder step per word for all of them).
        Neither ever emits <unk> (nor <pad>/<start>, nor <end> as the first word): see `_decoding_logp`; nor, with
        no_repeat_ngram_size n > 0, a word that would repeat an n-gram the caption already contains (as in
        transformers' generate; see `banned_next_words`). None: the config's beam / max_len / length_penalty /
        no_repeat_ngram_size."""
        was_training = self.training
        self.eval()
        try:
            feats = feats.unsqueeze(0) if feats.dim() == 2 else feats
            feats = feats.to(next(self.parameters()).device)
            beam = beam or self.config.beam
            max_len = max_len or self.config.max_len
            ngram = self.config.no_repeat_ngram_size if no_repeat_ngram_size is None else no_repeat_ngram_size
            if beam <= 1:
                return self.greedy(feats, max_len, ngram)
            return self.beam_search_batch(feats, beam, max_len, length_penalty, ngram)
        finally:
            self.train(was_training)

    def greedy(self, feats: torch.Tensor, max_len: int, no_repeat_ngram_size: int = 0) -> list[Caption]:
        feats, projected, state = self.prepare(feats)
        batch = feats.size(0)
        words = torch.full((batch,), Vocabulary.start_id, dtype=torch.long, device=feats.device)
        done = torch.zeros(batch, dtype=torch.bool, device=feats.device)
        ids, alphas, scores = [], [], torch.zeros(batch, device=feats.device)
        history: list[list[int]] = [[] for _ in range(batch)]
        for t in range(max_len + 1):  # + 1: room for <end> after max_len words
            logits, alpha, state = self.step(feats, projected, words, state)
            logp = _decoding_logp(logits, t, max_len)
            if no_repeat_ngram_size > 0 and t < max_len:
                _block_repeats(logp, history, no_repeat_ngram_size)
            words = logp.argmax(-1)
            scores += torch.where(done, 0.0, logp.gather(1, words[:, None]).squeeze(1))
            ids.append(words)
            alphas.append(alpha)
            for seq, word in zip(history, words.tolist()):
                seq.append(word)
            done |= words == Vocabulary.end_id
            if done.all():
                break
        ids_t, alphas_t = torch.stack(ids, 1).tolist(), torch.stack(alphas, 1)
        return [self._caption(ids_t[b], alphas_t[b], scores[b].item(), max_len) for b in range(batch)]

    def beam_search(self, feats: torch.Tensor, beam: int, max_len: int, length_penalty: float | None = None,
                    no_repeat_ngram_size: int = 0) -> Caption:
        """Standard beam search for one image (R, F). A hypothesis that emits <end> leaves the beam; the search stops
        once `beam` have finished. The best finished hypothesis is chosen by total log-probability divided by
        (length in tokens, <end> included) ** length_penalty (0, the default: raw log-probability). With
        no_repeat_ngram_size n > 0, a word that would complete an n-gram already in its hypothesis gets log-probability
        -inf (after the softmax, as transformers' NoRepeatNGramLogitsProcessor: scores stay the model's own).
        `beam_search_batch` runs it for many images at once."""
        return self.beam_search_batch(feats.unsqueeze(0), beam, max_len, length_penalty, no_repeat_ngram_size)[0]

    def beam_search_batch(self, feats: torch.Tensor, beam: int, max_len: int, length_penalty: float | None = None,
                          no_repeat_ngram_size: int = 0) -> list[Caption]:
        """`beam_search` for every image of (B, R, F) at once: each step runs the decoder once over the open
        hypotheses of all images (rows grouped by image, in order), then each image ranks its rows' continuations,
        keeps the best `beam`, finishes those that emit <end>, and stops when `beam` have finished, none is open, or
        (raw log-probabilities only fall) no open one can beat its best finished one. Each caption is the one a
        search of that image alone finds (a test compares them), without B times the per-step overhead: 20 photos
        decode in ~20 decoder calls instead of ~220 (8 instead of 18 ms a photo here)."""
        lp = self.config.length_penalty if length_penalty is None else length_penalty
        rank = (lambda f: f[0] / len(f[1]) ** lp) if lp else (lambda f: f[0])
        feats, projected, (h, c) = self.prepare(feats)
        batch, device = feats.size(0), feats.device
        owner = list(range(batch))            # per open row: its image
        words = torch.full((batch,), Vocabulary.start_id, dtype=torch.long, device=device)
        scores = torch.zeros(batch, device=device)
        seqs: list[list[int]] = [[] for _ in range(batch)]
        seq_alphas: list[list[torch.Tensor]] = [[] for _ in range(batch)]
        finished: list[list[tuple[float, list[int], list[torch.Tensor]]]] = [[] for _ in range(batch)]
        fallback: list[tuple] = [(0.0, [], [])] * batch  # per image, its first open hypothesis (see the end)
        for t in range(max_len + 1):
            rows = torch.tensor(owner, device=device)
            logits, alpha, (h, c) = self.step(feats[rows], projected[rows], words, (h, c))
            logp = _decoding_logp(logits, t, max_len)
            if no_repeat_ngram_size > 0 and t < max_len:
                _block_repeats(logp, seqs, no_repeat_ngram_size)
            total_rows = scores[:, None] + logp
            vocab_size = logits.size(1)
            keep: list[tuple[int, int, list[int], list[torch.Tensor], int, float]] = []
            start = 0
            while start < len(owner):
                image = owner[start]
                end = start
                while end < len(owner) and owner[end] == image:
                    end += 1
                fallback[image] = (scores[start].item(), seqs[start], seq_alphas[start])
                total = total_rows[start:end].reshape(-1)
                top_scores, top = total.topk(min(beam, total.numel()))
                mine = []
                for score, flat in zip(top_scores.tolist(), top.tolist()):
                    if score == float("-inf"):
                        break
                    src, word = divmod(flat, vocab_size)
                    seq, al = seqs[start + src] + [word], seq_alphas[start + src] + [alpha[start + src]]
                    if word == Vocabulary.end_id:
                        finished[image].append((score, seq, al))
                    else:
                        mine.append((start + src, image, seq, al, word, score))
                best_open = max((m[5] for m in mine), default=float("-inf"))
                done = finished[image]
                if not (len(done) >= beam or not mine or (not lp and done and max(f[0] for f in done) >= best_open)):
                    keep.extend(mine)
                start = end
            if not keep:
                break
            index = torch.tensor([k[0] for k in keep], device=device)
            h, c = h[index], c[index]
            owner = [k[1] for k in keep]
            seqs, seq_alphas = [k[2] for k in keep], [k[3] for k in keep]
            words = torch.tensor([k[4] for k in keep], device=device)
            scores = torch.tensor([k[5] for k in keep], device=device)
        else:  # out of steps with hypotheses open (only with NaN scores): the image's first kept one
            for row, image in reversed(list(enumerate(owner))):
                fallback[image] = (scores[row].item(), seqs[row], seq_alphas[row])
        out = []
        for image in range(batch):
            # no finished hypothesis: only with NaN scores (NaN features or weights), where topk need not pick the
            # forced <end>; the image's first open hypothesis stands in
            done = finished[image] or [fallback[image]]
            score, seq, al = max(done, key=rank)
            out.append(self._caption(seq, torch.stack(al) if al else torch.zeros(0, feats.size(1)), score, max_len))
        return out

    def sample(self, feats: torch.Tensor, max_len: int, generator: torch.Generator | None = None):
        """Sampled captions with gradients, for self-critical training: (B, R, F) features -> ids (B, T) (<pad>
        after <end>) and the summed log-probability of each caption (B,). Same masking as decoding (no <unk>)."""
        feats, projected, state = self.prepare(feats)
        batch = feats.size(0)
        words = torch.full((batch,), Vocabulary.start_id, dtype=torch.long, device=feats.device)
        done = torch.zeros(batch, dtype=torch.bool, device=feats.device)
        ids, logps = [], []
        for t in range(max_len + 1):
            logits, _, state = self.step(feats, projected, words, state)
            logp = _decoding_logp(logits, t, max_len)
            words = torch.multinomial(logp.detach().exp(), 1, generator=generator).squeeze(1)
            chosen = logp.gather(1, words[:, None]).squeeze(1)
            logps.append(torch.where(done, torch.zeros_like(chosen), chosen))
            ids.append(torch.where(done, torch.full_like(words, Vocabulary.pad_id), words))
            done = done | (words == Vocabulary.end_id)
            if done.all():
                break
        return torch.stack(ids, 1), torch.stack(logps, 1).sum(1)

    def _caption(self, ids: list[int], alphas: torch.Tensor, score: float, max_len: int) -> Caption:
        words = self.vocab.decode(ids)[:max_len]
        return Caption(words, [[round(a, 6) for a in row] for row in alphas[: len(words)].tolist()], score)

    # -- persistence
    def save_pretrained(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
        (directory / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        self.vocab.save(directory / VOCAB_FILE)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> "CaptionModel":
        from safetensors.torch import load_file

        directory = Path(directory)
        missing = [name for name in (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE) if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory} is not a captioner checkpoint (missing {', '.join(missing)}); "
                                    "train one with `itjner caption train`")
        config = CaptionerConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8")))
        model = cls(config, Vocabulary.load(directory / VOCAB_FILE))
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE), device=map_location))
        return model.eval()


def _decoding_logp(logits: torch.Tensor, t: int, max_len: int) -> torch.Tensor:
    """Next-word log-probabilities for decoding step t: <unk>, <pad> and <start> can never be emitted (their logits
    are masked before the softmax, so the rest renormalise), nor <end> as the first word (no empty caption); at
    t == max_len only <end> is possible."""
    if t == max_len:
        return _only_end(logits)
    masked = logits.float().clone()
    masked[:, list(NEVER_EMITTED)] = float("-inf")
    if t == 0:
        masked[:, Vocabulary.end_id] = float("-inf")
    return masked.log_softmax(-1)


def banned_next_words(seq: Sequence[int], n: int) -> set[int]:
    """Words that would repeat an n-gram of `seq` if appended: every word that followed an earlier occurrence of
    seq's last n - 1 words (n = 1: every word already in seq). As transformers' no_repeat_ngram_size."""
    if n <= 0 or len(seq) < n - 1:
        return set()
    if n == 1:
        return set(seq)
    prefix = tuple(seq[len(seq) - n + 1:])
    return {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i:i + n - 1]) == prefix}


def _block_repeats(logp: torch.Tensor, seqs: Sequence[Sequence[int]], n: int) -> None:
    """In place: log-probability -inf for each row's banned next words (rows = hypotheses, seqs = their words)."""
    for row, seq in enumerate(seqs):
        banned = banned_next_words(seq, n)
        if banned:
            logp[row, list(banned)] = float("-inf")


def _only_end(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities once the caption is out of room: <end> is certain (log 1 = 0), everything else impossible."""
    logp = torch.full_like(logits, float("-inf"))
    logp[:, Vocabulary.end_id] = 0.0
    return logp


def pad_captions(encoded: Sequence[Sequence[int]]) -> torch.Tensor:
    """Id lists -> (B, T) LongTensor padded with <pad>."""
    width = max(len(ids) for ids in encoded)
    out = torch.full((len(encoded), width), Vocabulary.pad_id, dtype=torch.long)
    for i, ids in enumerate(encoded):
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out
