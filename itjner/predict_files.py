"""Batch pre-annotation: `python -m itjner predict --data FILE --out preds.jsonl`, resumable and shardable.

Output rows are written in chunks, each flushed and fsynced, so an interrupted run loses at most the chunk in flight;
a rerun skips every index already in the file (a torn last line is dropped). Under `torchrun --nproc_per_node N`,
rank r tags the tweets with index % N == r into its own part file, and rank 0 merges the parts by index once all
ranks are done, so the merged file is identical to a one-process run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm.auto import tqdm

from .data import Prediction, read_tweets
from .distributed import barrier, world as dist_world


def prediction_row(index: int, pred: Prediction) -> dict:
    return {"index": index, **pred.to_json()}


def done_indices(path: Path) -> set[int]:
    """Indices already written; a torn (partial) last line is cut off the file."""
    if not path.exists():
        return set()
    done, good_bytes = set(), 0
    with path.open("rb") as fh:
        for line in fh:
            try:
                done.add(json.loads(line)["index"])
            except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
                break
            good_bytes += len(line)
    with path.open("r+b") as fh:
        fh.truncate(good_bytes)
    return done


def predict_file(predictor, data, out, images_dir=None, chunk: int = 256, batch_size: int = 64,
                 progress: bool = True) -> int:
    """Tag every tweet of `data` into `out` (JSONL). Returns the number of rows written by this process."""
    rank, world = dist_world()
    tweets = read_tweets(data)
    out = Path(out)
    part = out if world == 1 else out.with_name(f"{out.name}.part{rank}-of-{world}")
    done = done_indices(part) | (done_indices(out) if world > 1 and out.exists() else set())
    todo = [i for i in range(len(tweets)) if i % world == rank and i not in done]
    written = 0
    with part.open("a", encoding="utf-8") as fh, tqdm(total=len(todo), desc=f"predict[{rank}]",
                                                         disable=None if progress else True) as bar:
        for start in range(0, len(todo), chunk):
            ids = todo[start:start + chunk]
            preds = predictor.predict([tweets[i] for i in ids], images_dir=images_dir, batch_size=batch_size)
            fh.write("".join(json.dumps(prediction_row(i, p), ensure_ascii=False) + "\n" for i, p in zip(ids, preds)))
            fh.flush()
            os.fsync(fh.fileno())
            written += len(ids)
            bar.update(len(ids))
    if world > 1:
        _merge(out, world, rank)
    return written


def _merge(out: Path, world: int, rank: int) -> None:
    barrier()
    if rank == 0:
        rows = {}
        for path in [out] + [out.with_name(f"{out.name}.part{r}-of-{world}") for r in range(world)]:
            if path.exists():
                for line in path.read_text(encoding="utf-8").splitlines():
                    row = json.loads(line)
                    rows[row["index"]] = line
        tmp = out.with_suffix(".merging")
        tmp.write_text("".join(rows[i] + "\n" for i in sorted(rows)), encoding="utf-8")
        tmp.replace(out)
        for r in range(world):
            out.with_name(f"{out.name}.part{r}-of-{world}").unlink(missing_ok=True)
    barrier()
