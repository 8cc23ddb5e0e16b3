"""The region-attention captioner, trained for real on procedurally drawn scenes with real frozen EfficientNet-Lite0
features: it must reproduce held-out captions and attend to where the shape is (7x7 row-major regions)."""
from __future__ import annotations

import itertools
import json
import random
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from itjner.captioning.cli import main
from itjner.captioning.data import CaptionPair, read_captions, split_by_image
from itjner.captioning.training import load_features, selection_key
from itjner.caption_metrics import score_captions
from itjner.modeling_captioner import CaptionModel
from itjner.tokenization_captioner import Vocabulary, caption_tokenize

SIZE, GRID = 224, 7
COLOURS = {"red": (215, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 215)}
SHAPES = ("circle", "square", "triangle")
PLACES = ("at the top left", "at the top", "at the top right", "on the left", "in the middle", "on the right",
          "at the bottom left", "at the bottom", "at the bottom right")
BACKGROUNDS = ((235, 235, 235), (225, 225, 210), (215, 225, 235), (245, 240, 230))
TRAIN_COPIES = 4  # drawings of each (colour, shape, place) for training; one more, held out, for testing


def draw_scene(colour: str, shape: str, place: int, rng: random.Random):
    """A coloured shape in cell `place` (row-major) of a 3x3 layout on a lightly noisy plain background.
    Returns the image, its caption and the 7x7 region indices (row * 7 + col) the shape's box covers."""
    image = Image.new("RGB", (SIZE, SIZE), rng.choice(BACKGROUNDS))
    row, col = divmod(place, 3)
    half = rng.randint(22, 30)
    cx = (col + 0.5) * SIZE / 3 + rng.randint(-6, 6)
    cy = (row + 0.5) * SIZE / 3 + rng.randint(-6, 6)
    box = (cx - half, cy - half, cx + half, cy + half)
    fill = tuple(max(0, min(255, v + rng.randint(-20, 20))) for v in COLOURS[colour])
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=fill)
    noise = np.random.default_rng(rng.randint(0, 2**31)).normal(0, 6, (SIZE, SIZE, 3))
    image = Image.fromarray((np.asarray(image, dtype=np.float32) + noise).clip(0, 255).astype(np.uint8))
    cell = SIZE / GRID
    rows = range(int(box[1] // cell), int((box[3] - 1) // cell) + 1)
    cols = range(int(box[0] // cell), int((box[2] - 1) // cell) + 1)
    return image, f"a {colour} {shape} {PLACES[place]}", {r * GRID + c for r in rows for c in cols}


def dilate(cells: set[int]) -> set[int]:
    return {r * GRID + c for x in cells for r in range(x // GRID - 1, x // GRID + 2)
            for c in range(x % GRID - 1, x % GRID + 2) if 0 <= r < GRID and 0 <= c < GRID}


def transpose(cells: set[int]) -> set[int]:
    return {(x % GRID) * GRID + x // GRID for x in cells}


@pytest.fixture(scope="module")
def one_thread():
    """The model is small: one thread is as fast, and immune to the 10-30x slow-down two OpenMP threads suffer
    when another process is busy on a 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, one_thread):
    """Images on disk + a JSONL caption file of the training scenes; held-out scenes listed separately."""
    root = tmp_path_factory.mktemp("scenes")
    rng = random.Random(0)
    train, held_out = [], []
    for copy in range(TRAIN_COPIES + 1):
        for colour, shape, place in itertools.product(COLOURS, SHAPES, range(9)):
            image, caption, cells = draw_scene(colour, shape, place, rng)
            name = f"{copy}-{colour}-{shape}-{place}.png"
            image.save(root / name)
            (held_out if copy == TRAIN_COPIES else train).append((name, caption, cells, place))
    captions = root / "captions.jsonl"
    captions.write_text("".join(json.dumps({"image": n, "caption": c}) + "\n" for n, c, _, _ in train))
    return root, captions, train, held_out


@pytest.fixture(scope="module")
def trained(scenes, tmp_path_factory):
    """Train through the CLI (features via the shared FeatureStore cache), then load the best checkpoint."""
    root, captions, _, held_out = scenes
    out, cache = tmp_path_factory.mktemp("captioner"), tmp_path_factory.mktemp("features")
    start = time.perf_counter()
    assert main(["train", "--captions", str(captions), "--images", str(root), "--out", str(out), "--cache-dir", str(cache),
          "--epochs", "25", "--lr", "1e-3", "--batch-size", "32", "--min-count", "1", "--beam", "1",
          "--val-fraction", "0.1", "--embed-dim", "64", "--hidden-dim", "256", "--attention-dim", "128",
          "--dropout", "0.1", "--alpha-c", "1.0", "--seed", "1", "--device", "cpu"]) == 0
    print(f"\ncaptioner: features + training took {time.perf_counter() - start:.1f} s")
    model = CaptionModel.from_pretrained(out)
    pairs = [CaptionPair(n, c) for n, c, _, _ in held_out]
    feats = load_features(pairs, root, "efficientnet-lite0", cache, progress=False)
    features = torch.stack([feats[n] for n, _, _, _ in held_out])
    return model, out, features


@pytest.fixture(scope="module")
def greedy(trained):
    model, _, features = trained
    return model.generate(features, beam=1)


@pytest.mark.slow  # trains a captioner (module fixture)
def test_reproduces_held_out_captions(trained, greedy, scenes):
    held_out = scenes[3]
    refs = [c for _, c, _, _ in held_out]
    exact = sum(c.text == r for c, r in zip(greedy, refs)) / len(refs)
    bleu = score_captions({i: [r] for i, r in enumerate(refs)}, {i: c.words for i, c in enumerate(greedy)})["bleu4"]
    print(f"held-out ({len(refs)} images): exact match {exact:.3f}, corpus BLEU-4 {bleu:.4f}")
    assert bleu >= 0.9 and exact >= 0.9
    model = trained[0]
    assert model.config.backbone == "efficientnet-lite0" and model.config.feature_dim == 1280


@pytest.mark.slow  # trains a captioner (module fixture)
def test_attention_peaks_where_the_shape_is(greedy, scenes):
    """The colour and shape words must attend to the shape's 7x7 cells (or their neighbours). Placements off the
    diagonal (top right vs bottom left, ...) prove rows and columns are not swapped anywhere."""
    held_out = scenes[3]
    hits, strict, transposed, off_diagonal = {1: [], 2: []}, [], [], []
    for caption, (_, ref, cells, place) in zip(greedy, held_out):
        for pos in (1, 2):  # "a <colour> <shape> ..."
            if len(caption.words) <= pos or caption.words[pos] != caption_tokenize(ref)[pos]:
                continue
            peak = int(torch.tensor(caption.attention[pos]).argmax())
            hits[pos].append(peak in dilate(cells))
            strict.append(peak in cells)
            if place in (1, 2, 3, 5, 6, 7):
                off_diagonal.append(peak in dilate(cells))
                transposed.append(peak in (dilate(transpose(cells)) - dilate(cells)))
    rate = {pos: sum(h) / len(h) for pos, h in hits.items()}
    print(f"attention peak on the shape (cells or neighbours): colour word {rate[1]:.3f}, shape word {rate[2]:.3f}; "
          f"strictly inside the shape's cells {sum(strict) / len(strict):.3f}; "
          f"off-diagonal placements {sum(off_diagonal) / len(off_diagonal):.3f} vs transposed "
          f"{sum(transposed) / len(transposed):.3f}")
    assert len(hits[1]) >= 0.9 * len(held_out) and len(hits[2]) >= 0.9 * len(held_out)
    assert rate[1] >= 0.9 and rate[2] >= 0.9
    assert sum(off_diagonal) / len(off_diagonal) >= 0.9 and sum(transposed) / len(transposed) <= 0.1
    for caption in greedy:
        assert all(len(a) == 49 and abs(sum(a) - 1) < 1e-3 for a in caption.attention)
        assert len(caption.attention) == len(caption.words)


@pytest.mark.slow  # trains a captioner (module fixture)
def test_beam_search_matches_or_beats_greedy(trained, greedy, scenes):
    model, _, features = trained
    refs = [c for _, c, _, _ in scenes[3]]
    width_one = model.generate(features[:20], beam=1)
    beam_one = [model.beam_search(f, beam=1, max_len=model.config.max_len) for f in features[:20]]
    for g, b in zip(width_one, beam_one):  # beam width 1 is greedy decoding (batched vs one image: float noise)
        assert g.words == b.words and g.score == pytest.approx(b.score, abs=1e-4)
        assert np.allclose(g.attention, b.attention, atol=1e-5)
    beam = model.generate(features, beam=3)
    exact = lambda caps: sum(c.text == r for c, r in zip(caps, refs))
    print(f"held-out exact: greedy {exact(greedy)}/{len(refs)}, beam 3 {exact(beam)}/{len(refs)}")
    assert exact(beam) >= exact(greedy)
    assert all(b.score >= g.score - 1e-4 for b, g in zip(beam, greedy))


@pytest.mark.slow  # trains a captioner (module fixture)
def test_best_checkpoint_round_trip(trained, tmp_path):
    model, out, features = trained
    history = json.loads((out / "history.json").read_text())
    best = max(history, key=selection_key)  # validation CIDEr, then the lower validation loss
    assert model.config.extra["epoch"] == best["epoch"]
    assert set(history[0]) >= {"val_loss", "bleu1", "bleu4", "cider", "train_loss"}
    model.save_pretrained(tmp_path / "copy")
    again = CaptionModel.from_pretrained(tmp_path / "copy")
    assert again.vocab.itos == model.vocab.itos and again.config == model.config
    for a, b in zip(model.generate(features[:10], beam=3), again.generate(features[:10], beam=3)):
        assert a.words == b.words and a.attention == b.attention


@pytest.mark.slow  # trains a captioner (module fixture)
def test_generate_cli(trained, scenes, capsys):
    root, _, _, held_out = scenes
    _, out, _ = trained
    name, caption, _, _ = held_out[5]
    assert main(["generate", "--checkpoint", str(out), "--image", str(root / name), "--beam", "3", "--attention"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["caption"] == caption and len(printed["attention"]) == len(caption.split())
    assert main(["generate", "--checkpoint", str(out / "missing"), "--image", str(root / name)]) == 2
    assert "not a captioner checkpoint" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- cheap unit tests
def test_vocabulary_min_count_and_unk(tmp_path):
    vocab = Vocabulary.build(["A red circle.", "a red square", "a blue circle"], min_count=2)
    assert vocab.itos[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert vocab.itos[4:] == ["a", "circle", "red"]  # by count, then alphabetical; "square"/"blue" seen once
    ids = vocab.encode("A blue circle!")
    assert ids == [vocab.start_id, vocab.stoi["a"], vocab.unk_id, vocab.stoi["circle"], vocab.end_id]
    assert vocab.decode(ids + [vocab.stoi["red"]]) == ["a", "<unk>", "circle"]  # stops at <end>
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json").itos == vocab.itos
    assert len(Vocabulary.build(["a b c"], min_count=1)) == 7
    assert caption_tokenize("A man's hat, on-stage.") == ["a", "man's", "hat", "on", "stage"]


def test_readers_coco_and_jsonl(tmp_path):
    coco = {"images": [{"id": 7, "file_name": "x.jpg"}, {"id": 9, "file_name": "y.jpg"}],
            "annotations": [{"id": 1, "image_id": 7, "caption": "A dog. "}, {"id": 2, "image_id": 7, "caption": "a pup"},
                            {"id": 3, "image_id": 9, "caption": "a cat"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    assert read_captions(tmp_path / "c.json") == [CaptionPair("x.jpg", "A dog."), CaptionPair("x.jpg", "a pup"),
                                                  CaptionPair("y.jpg", "a cat")]
    (tmp_path / "c.jsonl").write_text('{"image": "x.jpg", "caption": "a dog"}\n\n{"image": "y.jpg", "caption": "a cat"}\n')
    assert read_captions(tmp_path / "c.jsonl") == [CaptionPair("x.jpg", "a dog"), CaptionPair("y.jpg", "a cat")]
    (tmp_path / "one.jsonl").write_text('{"image": "x.jpg", "caption": "a dog"}\n')  # one line is still JSONL
    assert read_captions(tmp_path / "one.jsonl") == [CaptionPair("x.jpg", "a dog")]
    (tmp_path / "bad.jsonl").write_text('{"image": "x.jpg", "caption": "a dog"}\n{"img": "y.jpg"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        read_captions(tmp_path / "bad.jsonl")
    coco["annotations"].append({"id": 4, "image_id": 99, "caption": "?"})
    (tmp_path / "c2.json").write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="unknown image_id 99"):
        read_captions(tmp_path / "c2.json")


def test_split_is_by_image():
    pairs = [CaptionPair(f"{i}.jpg", f"caption {j}") for i in range(20) for j in range(3)]
    train, val = split_by_image(pairs, 0.25, seed=1)
    assert {p.image for p in train}.isdisjoint({p.image for p in val})
    assert len({p.image for p in val}) == 5 and len(train) + len(val) == len(pairs)


def test_corpus_bleu():
    """BLEU now comes from pycocoevalcap (itjner.caption_metrics); the same hand-checkable cases as the former
    hand-written scorer. pycocoevalcap adds 1e-9/1e-15 to the n-gram counts, hence approx and abs tolerances."""
    bleu4 = lambda refs, hyps: score_captions(dict(enumerate(refs)), dict(enumerate(hyps)))["bleu4"]
    ref = "the cat is on the mat".split()
    assert bleu4([[ref]], [ref]) == pytest.approx(1.0)
    assert bleu4([[ref]], [["dog"]]) == pytest.approx(0.0, abs=1e-6)
    # brevity: a correct 4-word prefix of a 6-word reference -> exp(1 - 6/4)
    assert bleu4([[ref]], [ref[:4]]) == pytest.approx(np.exp(1 - 6 / 4))
    # clipping: the reference has two "the", so only 2 of 4 unigrams count; no bigram matches -> 0
    assert bleu4([[ref]], ["the the the the".split()]) == pytest.approx(0.0, abs=1e-6)
    refs = [[ref, "there is a cat on the mat".split()]]
    hyps = ["the cat sat on the mat".split()]
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    assert bleu4(refs * 2, hyps + [ref]) == pytest.approx(nltk_bleu.corpus_bleu(refs * 2, hyps + [ref]))
    many_refs = [[r.split() for r in ("a red circle at the top", "a red ball up top")], ["a blue square".split()]]
    many_hyps = ["a red circle at the top left".split(), "a blue square in the middle".split()]
    assert bleu4(many_refs, many_hyps) == pytest.approx(nltk_bleu.corpus_bleu(many_refs, many_hyps))
