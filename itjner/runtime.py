"""Process set-up for ITJNER's entry points (the CLI, the app, benchmarks), called before torch is imported.
Importing `itjner` changes nothing; an entry point calls `prepare()` first."""
from __future__ import annotations

import os


def prepare(threads: int | None = None) -> None:
    """OpenMP threads that spin while waiting made a busy 2-core machine 10-30x slower (measured): wait passively,
    unless the user chose otherwise. Tokenizer threads off (they fight the model's). Optional torch thread count."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        import torch

        torch.set_num_threads(threads)


def quiet_transformers() -> None:
    """transformers' info/warning chatter (e.g. unused pooler weights, a deprecation peft triggers on every adapter
    load) off: our messages say what matters."""
    import warnings

    from transformers.utils import logging

    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
