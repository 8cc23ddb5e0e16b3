import os

import pytest

# tests/ is on pytest's pythonpath (pyproject.toml): fixtures/ holds the shared fixtures and paths
pytest_plugins = ["fixtures.labelstudio_server"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Threads that spin while waiting make a busy 2-core machine 10-30x slower (measured): wait passively.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

@pytest.fixture(scope="session")
def tiny_tokenizer():
    from itjner.backbones import load_tokenizer

    return load_tokenizer("tiny-bert")


@pytest.fixture()
def tiny_config():
    from itjner.configuration_itjner import preset

    cfg, _ = preset("tiny")
    cfg.dropout = 0.0
    return cfg


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ITJNER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ITJNER_DATA_DIR", str(tmp_path / "data"))
