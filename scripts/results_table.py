"""Mean ± sd over seeds of the test P/R/F1 in runs' metrics.json files, as a Markdown table for docs/results.md.
Runs trained with --no-test and evaluated afterwards (`itjner evaluate RUN --split test --json RUN/test.json`) are
read from that test.json. One row per dataset, preset with the training settings it changed, extra training files,
modalities and teacher; a run without test figures shows "–" for them.

    .venv/bin/python scripts/results_table.py runs/t17/lite-s* runs/t15/lite-s*
"""
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

from itjner.checkpoints import is_checkpoint, load_card
from itjner.configuration_itjner import preset


# model config fields a row names elsewhere (modalities, the preset) or that only follow from another one
SHOWN_ELSEWHERE = {"preset", "labels", "text_encoder_config", "text_encoder_weights", "word_tag_labels", "use_image",
                   "use_caption"}


def _changed(values: dict, defaults: dict, ignored: set) -> list[str]:
    return [f"{k}={v}" for k, v in values.items() if k not in ignored and k in defaults and v != defaults[k]]


def _model(card: dict, config: dict | None = None) -> str:
    """The preset, then what the run changed: model switches (config.json) and training settings that differ from
    the preset's (seed aside), extra training files, untagged files (`--unlabeled`), a teacher."""
    model_defaults, train_defaults = (asdict(c) for c in preset(card["preset"]))
    ignored = {"seed"} | ({"distil_weight", "distil_temperature"} if not card.get("teacher") else set())
    changed = sorted(_changed(config or {}, model_defaults, SHOWN_ELSEWHERE)
                     + _changed(card.get("train", {}), train_defaults, ignored))
    model = card["preset"] + (f" ({', '.join(changed)})" if changed else "")
    for key, prefix in (("add_train", ""), ("unlabeled", "untagged ")):
        model += "".join(f" + {prefix}{Path(f).parent.name}/{Path(f).name}" for f in card.get(key) or ())
    return model + (f" distilled from {Path(card['teacher']).name}" if card.get("teacher") else "")


def ms(values: list[float]) -> str:
    """Mean ± sd over seeds; one value as it is; none (a dev-only run's test) as "–"."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main(paths: list[str]) -> None:
    groups = defaultdict(list)
    for p in paths:
        if not is_checkpoint(p):
            print(f"skipping {p}: not a checkpoint", file=sys.stderr)
            continue
        card = load_card(p)
        metrics = json.loads(Path(p, "metrics.json").read_text())
        if metrics.get("test") is None and Path(p, "test.json").is_file():
            metrics["test"] = json.loads(Path(p, "test.json").read_text())
        config = json.loads(Path(p, "config.json").read_text())
        groups[(Path(card["data"]).name, _model(card, config), card["modalities"])].append((card, metrics))
    print("| data | model | modalities | seeds | test P | test R | test F1 | dev F1 | s / epoch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (data, model, modalities), runs in sorted(groups.items()):
        test = [m["test"]["overall"] for _, m in runs if m.get("test")]  # dev-only runs (--no-test) show "–"
        dev = [m["best_dev"]["overall"]["f1"] for _, m in runs]
        epoch_s = [s for c, _ in runs for s in c["epoch_seconds"]]
        seeds = ",".join(str(c["seed"]) for c, _ in runs)
        print(f"| {data} | {model} | {modalities} | {seeds} | {ms([t['precision'] for t in test])} | "
              f"{ms([t['recall'] for t in test])} | {ms([t['f1'] for t in test])} | {ms(dev)} | "
              f"{statistics.median(epoch_s):.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
