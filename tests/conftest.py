import os

import pytest

# tests/ is on pytest's pythonpath (pyproject.toml): fixtures/ holds the shared fixtures and paths
pytest_plugins = ["fixtures.labelstudio_server"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from itjner import runtime  # noqa: E402

runtime.prepare(int(os.environ.get("OMP_NUM_THREADS", "2")))  # as the entry points do, before torch loads

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


@pytest.fixture
def one_thread():
    """One torch thread for the test (small models: as fast, and immune to OpenMP slow-downs on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
