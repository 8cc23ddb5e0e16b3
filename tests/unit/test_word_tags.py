"""The spaCy word tags (word_tags.py): a cased reading of each word, embedded and added to T."""
from dataclasses import replace

import torch

from itjner.batching import build_examples, collate
from itjner.data import Tweet
from itjner.modeling_itjner import ITJNERModel
from itjner.word_tags import DEFAULT_PIPELINE, pipeline_labels, tag_ids

LABELS = pipeline_labels(DEFAULT_PIPELINE)


def test_each_word_gets_its_part_of_speech_and_entity_tag_with_case_read():
    words = ["Kevin", "Durant", "moved", "to", "San", "Francisco"]
    (tags,) = tag_ids([words], DEFAULT_PIPELINE, LABELS)
    assert len(tags) == len(words)
    pos = [LABELS["pos"][p - 1] for p, _ in tags]
    assert pos[0] == pos[1] == "NNP" and pos[2] == "VBD"
    person, place = LABELS["entity"].index("PERSON"), LABELS["entity"].index("GPE")
    assert [e for _, e in tags] == [2 + 2 * person, 3 + 2 * person, 1, 1, 2 + 2 * place, 3 + 2 * place]
    # the uncased encoder sees "Apple" and "apple" alike; the tags do not
    cased, uncased = tag_ids([["Shares", "of", "Apple", "rose"], ["shares", "of", "apple", "rose"]], DEFAULT_PIPELINE,
                             LABELS)
    assert (LABELS["pos"][cased[2][0] - 1], LABELS["pos"][uncased[2][0] - 1]) == ("NNP", "NN")
    assert cased[2][1] == 2 + 2 * LABELS["entity"].index("ORG") and uncased[2][1] == 1


def test_odd_words_keep_one_tag_each():
    odd = ["", "two words", "⚾", "️", "<b>", "@user", "#Hashtag", "x" * 300]
    (tags,) = tag_ids([odd], DEFAULT_PIPELINE, LABELS)
    assert len(tags) == len(odd) and all(p >= 0 and e >= 1 for p, e in tags)


def test_model_with_word_tags_spreads_them_over_pieces_and_survives_save_load(tiny_config, tiny_tokenizer, tmp_path):
    cfg = replace(tiny_config, use_image=False, use_caption=False, word_tags=DEFAULT_PIPELINE,
                  word_tag_labels=LABELS)
    tweet = Tweet("a", ["Durant", "joins", "Golden", "State"])
    (example,) = build_examples([tweet], tiny_tokenizer, cfg)
    (tags,) = tag_ids([tweet.tokens], DEFAULT_PIPELINE, LABELS)
    ends = example.word_index[1:] + [len(example.input_ids) - 1]
    for word, (start, end) in enumerate(zip(example.word_index, ends)):
        assert example.word_tag_ids[start:end] == [tags[word]] * (end - start)
    assert example.word_tag_ids[0] == example.word_tag_ids[-1] == (0, 0)  # [CLS], [SEP]

    torch.manual_seed(0)
    model = ITJNERModel.from_config(cfg).eval()
    long = Tweet("b", ["a", "much", "longer", "tweet", "from", "Oakland", "with", "many", "words"])
    with torch.no_grad():
        alone = model(collate(build_examples([tweet], tiny_tokenizer, cfg), cfg)).emissions[0]
        padded = model(collate(build_examples([tweet, long], tiny_tokenizer, cfg), cfg)).emissions[0, :4]
        plain = ITJNERModel(replace(cfg, word_tags="", word_tag_labels=None), model.text.encoder).eval()
        plain.load_state_dict(model.state_dict(), strict=False)
        without = plain(collate(build_examples([tweet], tiny_tokenizer, plain.config), plain.config)).emissions[0]
    assert torch.allclose(alone, padded, atol=1e-5)
    assert not torch.allclose(alone, without, atol=1e-3)  # the tags reach the emissions
    model.save_pretrained(tmp_path / "ckpt")
    again = ITJNERModel.from_pretrained(tmp_path / "ckpt")
    assert again.config.word_tag_labels == LABELS
    with torch.no_grad():
        assert torch.allclose(again(collate(build_examples([tweet], tiny_tokenizer, cfg), cfg)).emissions[0], alone,
                              atol=1e-6)


def test_a_missing_pipeline_says_how_to_install_it():
    import pytest

    from itjner.backbones import BackboneUnavailable
    from itjner.word_tags import load_pipeline

    with pytest.raises(BackboneUnavailable, match="setup.sh --word-tags"):
        load_pipeline("en_core_web_not_installed")
