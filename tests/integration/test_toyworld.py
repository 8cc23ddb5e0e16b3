"""The image branch, proven end to end on the toy world (lite preset's real frozen EfficientNet-Lite0 features)."""
import pytest

from itjner.predict import Predictor
from itjner.toyworld import experiment, generate, load_meta

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("toy"), sizes=(900, 100, 200), seed=0)


def test_generator_is_seeded_and_balanced(tmp_path, toy):
    again = generate(tmp_path / "again", sizes=(900, 100, 200), seed=0)
    assert (again / "test.txt").read_text() == (toy / "test.txt").read_text()
    meta = load_meta(toy, "train")
    related = [m for m in meta if m["related"]]
    assert 0.6 < len(related) / len(meta) < 0.8
    assert {m["cue_type"] for m in related} == {"PER", "LOC", "ORG"}
    assert len({m["cue_cell"] for m in related}) > 40  # cues land all over the grid


def test_only_the_image_decides_and_the_gate_closes_on_unrelated_images(toy, tmp_path):
    results = experiment(toy, tmp_path / "runs", variants=("full", "text-only"), epochs=4, log=print)
    full, text = results["full"], results["text-only"]
    assert full["name_accuracy_related"] >= 95.0
    assert text["name_accuracy_related"] <= 50.0  # three types: chance is 33%
    # the share of the visual signal the gate lets through is lower when the image is unrelated
    assert full["gate_effective_unrelated"] < full["gate_effective_related"]
    # the name's text-guided heatmap peaks next to the cue (its 3x3 block: 18% of the grid by chance; seeds 1-3
    # gave 88%, 100%, 97%). The exact cell is reported but not asserted: the backbone's grid is not that sharp
    # (README "Proof that the image branch works").
    assert full["heatmap_peak_near_cue_cell"] >= 70.0
    # the stored toy checkpoint holds trained weights only; the frozen encoder comes back by name
    from safetensors import safe_open

    with safe_open(str(tmp_path / "runs" / "full" / "model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    assert keys and not any(k.startswith("text.encoder.") for k in keys)
    again = Predictor.from_pretrained(tmp_path / "runs" / "full")
    assert again.config.freeze_text_encoder


def test_decoys_frame_the_subject_among_cues_of_the_other_types():
    import random

    from itjner.toyworld import CELL, GRID, make_pair

    rng = random.Random(3)
    pairs = [make_pair(rng, f"x{i}", related=True, decoys=2) for i in range(20)]
    for p in pairs:
        r, c = divmod(p.cue_cell, GRID)
        assert p.image.getpixel((c * CELL + 1, r * CELL + CELL // 2)) == (255, 230, 0)  # the frame's left edge
    plain = make_pair(random.Random(3), "y", related=True)
    r, c = divmod(plain.cue_cell, GRID)
    assert plain.image.getpixel((c * CELL + 1, r * CELL + CELL // 2)) != (255, 230, 0)  # no decoys, no frame
