"""Configuration of the "show, attend and tell" region-attention captioner (see itjner.modeling_captioner).

Stored as config.json in a checkpoint folder; unknown keys in an older or newer file are ignored on load, and
fields missing from it take the defaults below, so checkpoints written before a field existed keep loading.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

CONFIG_FILE = "config.json"

# The default no_repeat_ngram_size (n-gram blocking in greedy and beam decoding) was chosen on the shipped captioner
# (assets/captioner-flickr8k: beam 3, length penalty 1.0) by CIDEr-D on the Flickr8k 1k VALID split (98 photos):
#   n = 0 (off, the decoding before): 0.4400   n = 1: 0.3869   n = 2: 0.4517 (chosen)   n = 3: 0.4481   n = 4: 0.4417
# Unblocked, 20 of the 98 valid captions repeated a bigram and some looped ("a woman in a pink shirt and a woman in
# a pink shirt and ..."). n = 2 and n = 3 differ by less than the noise of 98 photos. TEST (92 photos), off -> n = 2:
# CIDEr-D 0.4715 -> 0.4743, BLEU-4 0.1776 -> 0.1782. Reproduce: `itjner caption evaluate --checkpoint
# assets/captioner-flickr8k --captions DIR/captions.txt --images DIR/images --list DIR/valid_images.txt
# --no-repeat-ngram-size 0,1,2,3,4`. A config.json without the field (written before it existed) gets this default.


@dataclass
class CaptionerConfig:
    feature_dim: int = 2048          # channels of the backbone's region features (2048 Res2Net-101, 1280 Lite0)
    embed_dim: int = 256
    hidden_dim: int = 512
    attention_dim: int = 256
    dropout: float = 0.5
    vocab_size: int = 4              # set from the Vocabulary
    alpha_c: float = 1.0             # weight of the doubly stochastic attention penalty (0 turns it off)
    label_smoothing: float = 0.0     # training loss only: cross-entropy against smoothed targets
    max_len: int = 30                # longest caption generated, in words
    beam: int = 3                    # default beam width of generate()
    length_penalty: float = 0.0      # beam search ranks finished captions by logprob / len**length_penalty (0: raw)
    no_repeat_ngram_size: int = 2    # decoding never repeats an n-gram of this many words within a caption (0: off;
                                     # 2: chosen on Flickr8k valid CIDEr-D, see above)
    backbone: str | None = None      # image backbone whose features this captioner reads
    extra: dict = field(default_factory=dict)  # free-form provenance (training data, epochs, scores)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CaptionerConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
