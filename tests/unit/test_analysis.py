"""Error classification, confusion counts and JSONL rows of itjner.analysis, on hand-computed cases."""
import json

import pytest

from itjner.analysis import (MISSED, SPURIOUS, WRONG_BOTH, WRONG_BOUNDARY, WRONG_TYPE, analyse, classify_errors,
                             confusion_counts, filter_rows, score_table, tweet_row, write_jsonl)
from itjner.data import Entity, Prediction, Tweet, bio_to_entities


def kinds(gold, pred):
    return [(e.kind, e.gold and e.gold.key(), e.pred and e.pred.key()) for e in classify_errors(gold, pred)]


def test_exact_match_is_no_error():
    tags = ["B-PER", "I-PER", "O", "B-LOC"]
    assert classify_errors(tags, tags) == []


def test_missed_and_spurious():
    gold = ["B-PER", "O", "O", "B-LOC"]
    pred = ["O", "O", "B-ORG", "O"]
    assert kinds(gold, pred) == [(MISSED, ("PER", 0, 1), None), (SPURIOUS, None, ("ORG", 2, 3)),
                                 (MISSED, ("LOC", 3, 4), None)]


def test_wrong_type_same_span():
    assert kinds(["B-ORG", "I-ORG", "O"], ["B-LOC", "I-LOC", "O"]) == [(WRONG_TYPE, ("ORG", 0, 2), ("LOC", 0, 2))]


def test_wrong_boundary_same_type():
    # gold "New York Yankees" ORG (0-3), predicted "New York" ORG (0-2)
    assert kinds(["B-ORG", "I-ORG", "I-ORG"], ["B-ORG", "I-ORG", "O"]) == [
        (WRONG_BOUNDARY, ("ORG", 0, 3), ("ORG", 0, 2))]


def test_wrong_type_and_boundary():
    assert kinds(["B-ORG", "I-ORG", "I-ORG"], ["B-LOC", "I-LOC", "O"]) == [
        (WRONG_BOTH, ("ORG", 0, 3), ("LOC", 0, 2))]


def test_one_prediction_over_two_gold_chunks():
    # gold: LOC "New York" (0-2) + ORG "Yankees" (2-3); predicted ORG over all three words.
    # The prediction shares 2 words with the LOC and 1 with the ORG: it pairs with the LOC (most overlap),
    # the ORG is missed.
    gold = ["B-LOC", "I-LOC", "B-ORG"]
    pred = ["B-ORG", "I-ORG", "I-ORG"]
    assert kinds(gold, pred) == [(WRONG_BOTH, ("LOC", 0, 2), ("ORG", 0, 3)), (MISSED, ("ORG", 2, 3), None)]


def test_tie_on_overlap_prefers_same_type():
    # predicted PER over words 1-2 overlaps gold LOC (0-2) and gold PER (2-4) by one word each
    gold = ["B-LOC", "I-LOC", "B-PER", "I-PER"]
    pred = ["O", "B-PER", "I-PER", "O"]
    assert kinds(gold, pred) == [(MISSED, ("LOC", 0, 2), None), (WRONG_BOUNDARY, ("PER", 2, 4), ("PER", 1, 3))]


def test_adjacent_same_type_chunks_stay_apart():
    gold = ["B-PER", "B-PER"]
    pred = ["B-PER", "I-PER"]
    # predicted PER(0-2) overlaps both gold chunks by one word: leftmost wins, the other is missed
    assert kinds(gold, pred) == [(WRONG_BOUNDARY, ("PER", 0, 1), ("PER", 0, 2)), (MISSED, ("PER", 1, 2), None)]


def test_twitter2015_other_is_misc():
    assert kinds(["B-OTHER"], ["B-MISC"]) == []


def test_confusion_exact_mode_hand_counted():
    pairs = [
        (["B-PER", "O", "B-LOC"], ["B-PER", "O", "B-ORG"]),       # PER ok; LOC->ORG same span
        (["B-ORG", "I-ORG", "O"], ["B-ORG", "O", "B-MISC"]),      # ORG boundary error; spurious MISC
        (["B-MISC", "O"], ["O", "O"]),                            # missed MISC
    ]
    rows, cols, m = confusion_counts(pairs, mode="exact")
    assert rows == cols == ["PER", "LOC", "ORG", "MISC", "none"]
    expected = [
        # PER LOC ORG MISC none
        [1, 0, 0, 0, 0],  # gold PER
        [0, 0, 1, 0, 0],  # gold LOC
        [0, 0, 0, 0, 1],  # gold ORG: boundary error counts as missed in exact mode ...
        [0, 0, 0, 0, 1],  # gold MISC missed
        [0, 0, 1, 1, 0],  # ... and its predicted ORG(0-1) as spurious, plus the spurious MISC
    ]
    assert m == expected


def test_confusion_overlap_mode_counts_boundary_pairs():
    pairs = [(["B-ORG", "I-ORG", "O"], ["B-ORG", "O", "B-MISC"]),
             (["B-ORG", "I-ORG", "I-ORG"], ["B-LOC", "I-LOC", "O"])]
    _, _, m = confusion_counts(pairs, mode="overlap")
    assert m[2][2] == 1          # ORG boundary error counted as ORG/ORG
    assert m[2][1] == 1          # ORG vs LOC type-and-boundary error
    assert m[4][3] == 1          # spurious MISC
    assert sum(map(sum, m)) == 3


def test_confusion_margins_are_gold_and_predicted_counts():
    pairs = [(["B-PER", "I-PER", "B-LOC", "O", "B-ORG"], ["B-PER", "B-PER", "B-LOC", "B-MISC", "I-ORG"]),
             (["O", "B-MISC", "I-MISC"], ["B-LOC", "I-LOC", "O"])]
    for mode in ("exact", "overlap"):
        labels, _, m = confusion_counts(pairs, mode=mode)
        for i, t in enumerate(labels[:-1]):
            n_gold = sum(1 for g, _ in pairs for e in bio_to_entities(g) if e.type == t)
            n_pred = sum(1 for _, p in pairs for e in bio_to_entities(p) if e.type == t)
            assert sum(m[i]) == n_gold, (mode, t)
            assert sum(row[i] for row in m) == n_pred, (mode, t)
    with pytest.raises(ValueError):
        confusion_counts(pairs, mode="fuzzy")


def test_tweet_row_and_filters(tmp_path):
    tokens = ["Obama", "visits", "New", "York"]
    row = tweet_row(3, "img3", tokens, ["B-PER", "O", "B-LOC", "I-LOC"], ["B-PER", "O", "B-ORG", "O"],
                    [Entity(0, 1, "PER", 0.9), Entity(2, 3, "ORG", 0.4)])
    assert row["gold"] == [{"type": "PER", "start": 0, "end": 1, "text": "Obama"},
                           {"type": "LOC", "start": 2, "end": 4, "text": "New York"}]
    assert row["pred"][1] == {"type": "ORG", "start": 2, "end": 3, "text": "New", "score": 0.4}
    assert row["error_kinds"] == [WRONG_BOTH]
    assert row["errors"][0]["gold"]["text"] == "New York"
    clean = tweet_row(4, "img4", ["hi"], ["O"], ["O"])
    rows = [row, clean]
    assert filter_rows(rows) == [row]
    assert filter_rows(rows, kinds=[MISSED]) == []
    assert filter_rows(rows, kinds=[WRONG_BOTH], types=["LOC"]) == [row]
    assert filter_rows(rows, types=["MISC"]) == []
    path = write_jsonl(rows, tmp_path / "errors.jsonl")
    back = [json.loads(line) for line in path.read_text().splitlines()]
    assert back == rows


def test_analyse_end_to_end():
    tweets = [Tweet("a", ["Obama", "in", "Paris"], ["B-PER", "O", "B-LOC"]),
              Tweet("b", ["Go", "Apple"], ["O", "B-ORG"])]
    preds = [Prediction(tweets[0], ["B-PER", "O", "B-LOC"], bio_to_entities(["B-PER", "O", "B-LOC"]), 0.9),
             Prediction(tweets[1], ["B-PER", "O"], bio_to_entities(["B-PER", "O"]), 0.5)]
    result = analyse(tweets, preds)
    assert [r["index"] for r in result.error_rows] == [1]
    assert result.rows[1]["error_kinds"] == [MISSED, SPURIOUS]
    table = score_table(result.scores)
    overall = table[0]
    assert overall[0] == "overall" and overall[1:] == [round(200 / 3, 2), round(200 / 3, 2), round(200 / 3, 2), 3, 3, 2]
    _, _, m = result.confusion
    assert m[0][0] == 1 and m[1][1] == 1 and m[2][4] == 1 and m[4][0] == 1
