import pytest

from fixtures.paths import DATA
from itjner.data import (Entity, bio_to_entities, char_offsets, entities_to_bio, format_conll, normalize_tag,
                         parse_conll, read_conll, tokenize)
from itjner.metrics import entity_scores


@pytest.mark.parametrize("name", ["twitter2015", "twitter2017"])
@pytest.mark.parametrize("split", ["train.txt", "valid.txt", "test.txt"])
def test_conll_round_trip_is_exact(name, split):
    path = (DATA / name) / split
    text = path.read_text(encoding="utf-8")
    tweets = parse_conll(text)
    assert format_conll(tweets, trailing_blank=text.endswith("\n\n")) == text
    assert all(len(t.tokens) == len(t.tags) > 0 for t in tweets)


def test_split_sizes_match_the_paper():
    sizes = {(n, s): len(read_conll((DATA / n) / s)) for n in ("twitter2015", "twitter2017")
             for s in ("train.txt", "valid.txt", "test.txt")}
    assert sizes[("twitter2015", "train.txt")] == 4000 and sizes[("twitter2015", "test.txt")] == 3257
    assert sizes[("twitter2017", "train.txt")] == 3373 and sizes[("twitter2017", "test.txt")] == 723


def test_other_maps_to_misc_and_unknown_types_fail():
    assert normalize_tag("B-OTHER") == "B-MISC" and normalize_tag("I-OTHER") == "I-MISC"
    with pytest.raises(ValueError, match="unknown tag"):
        normalize_tag("B-FOOD")


def test_conlleval_chunking_hand_cases():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-ORG", "B-ORG", "I-PER", "B-OTHER"]
    got = [(e.type, e.start, e.end) for e in bio_to_entities(tags)]
    # orphan I-LOC starts a chunk; adjacent B-ORG B-ORG are two chunks; I-PER after ORG starts a new PER chunk
    assert got == [("PER", 0, 2), ("LOC", 3, 5), ("ORG", 5, 6), ("ORG", 6, 7), ("PER", 7, 8), ("MISC", 8, 9)]


def test_entity_scores_hand_computed():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-MISC"]]
    s = entity_scores(gold, pred)
    # gold 3 chunks, predicted 4, correct 2 (PER 0-2, ORG 0-1)
    assert s["overall"]["tp"] == 2 and s["overall"]["pred"] == 4 and s["overall"]["gold"] == 3
    assert s["overall"]["precision"] == pytest.approx(50.0)
    assert s["overall"]["recall"] == pytest.approx(200 / 3)
    assert s["overall"]["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3) * 100)
    assert s["LOC"]["recall"] == 0.0 and s["MISC"]["pred"] == 1


def test_twitter2015_test_gold_chunk_count_is_conlleval():
    tweets = read_conll((DATA / "twitter2015") / "test.txt")
    s = entity_scores([t.tags for t in tweets], [t.tags for t in tweets])
    assert s["overall"]["gold"] == 5207 and s["overall"]["f1"] == 100.0
    t17 = read_conll((DATA / "twitter2017") / "test.txt")
    assert entity_scores([t.tags for t in t17], [t.tags for t in t17])["overall"]["gold"] == 1351


def test_entities_to_bio_keeps_adjacent_entities_apart():
    ents = [Entity(0, 1, "ORG"), Entity(1, 3, "ORG")]
    tags = entities_to_bio(ents, 4)
    assert tags == ["B-ORG", "B-ORG", "I-ORG", "O"]
    assert [(e.start, e.end) for e in bio_to_entities(tags)] == [(0, 1), (1, 3)]


def test_char_offsets_and_tokenize():
    toks = tokenize('Kevin Durant joins the "Warriors", in Oakland!')
    assert toks == ["Kevin", "Durant", "joins", "the", '"', "Warriors", '"', ",", "in", "Oakland", "!"]
    text = " ".join(toks)
    for tok, (a, b) in zip(toks, char_offsets(toks)):
        assert text[a:b] == tok


def test_tokenize_keeps_html_entities_and_is_stable_on_its_own_output():
    from itjner.data import tokenize

    for text in ["Dinner sauce.. &amp; 3, fries at @Nandos !", "AT&amp;T &lt;3 (yes).", "'quoted' \"x\" #tag: ok"]:
        tokens = tokenize(text)
        assert tokenize(" ".join(tokens)) == tokens
    assert "&amp;" in tokenize("fish &amp; chips") and "&lt;3" in tokenize("I &lt;3 it")
