"""`itjner app` / `python app.py`: load the model once, then serve the demo on 127.0.0.1 (unless told otherwise)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..checkpoints import (DEFAULT_CAPTION_SPEC, DEFAULT_CAPTIONER, DEFAULT_CHECKPOINT, REPO, NotACheckpoint,
                           default_checkpoint, find_checkpoints, require_checkpoint)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def missing_checkpoint_message(path: Path) -> str:
    return (f"No ITJNER checkpoint at {path}.\n"
            "Get one by training it (CPU, offline; ~10-20 min for the lite preset on Twitter-2017):\n"
            f"  itjner train --preset lite --data data/twitter2017 --out {path}\n"
            "or start the app on any folder written by `itjner train --out DIR` / save_pretrained:\n"
            "  itjner app --checkpoint DIR")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="itjner app", description="ITJNER demo app (Gradio)")
    p.add_argument("--checkpoint", help=f"model folder (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--caption-source", help=f"lstm:<dir> | tags | given | hf:<model> (default: {DEFAULT_CAPTION_SPEC}, "
                                            "the captioner trained on real photos)")
    p.add_argument("--cache-dir", help="image feature cache (default $ITJNER_CACHE or ~/.cache/itjner)")
    p.add_argument("--allow-server-paths", action="store_true",
                   help="keep the error-analysis and export tabs (they read server paths) on a non-local --host")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is much faster on a "
                                               "machine whose cores are busy with other work)")
    return p.parse_args(argv)


def checkpoint_folder(args) -> tuple[Path, str | None]:
    """(the folder to serve, a notice when the default could not be), or NotACheckpoint with a message that says
    how to get one."""
    folder, notice = (Path(args.checkpoint), None) if args.checkpoint else default_checkpoint()
    if not folder.exists():
        raise NotACheckpoint(missing_checkpoint_message(folder))
    return require_checkpoint(folder), notice


def main(argv=None) -> int:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no calls home at launch
    os.environ.setdefault("MPLBACKEND", "Agg")
    args = parse_args(argv)
    from .. import runtime

    runtime.prepare(args.threads)
    try:
        folder, notice = checkpoint_folder(args)
    except NotACheckpoint as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if notice:
        print(f"notice: {notice}", file=sys.stderr)
    runtime.quiet_transformers()
    from .layout import CSS, EXAMPLES, KEYS_JS, build_demo
    from .messages import UserError
    from .service import MAX_UPLOAD_MB, PredictService

    caption_source = args.caption_source or (DEFAULT_CAPTION_SPEC if DEFAULT_CAPTIONER.is_dir() else None)
    service = PredictService(folder, args.device, caption_source,
                             cache_dir=Path(args.cache_dir) / "features" if args.cache_dir else None, notice=notice)
    try:
        service.predictor()  # load once, now: the first request does not pay for it and a broken folder fails here
        warm = service.warm_up()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    default = Path(service.default_checkpoint).resolve()
    others = [c for c in find_checkpoints([REPO / "assets", REPO / "runs", folder.parent])
              if Path(c).resolve() != default]
    local = args.host in LOCAL_HOSTS or args.host.startswith("127.")
    demo = build_demo(service, [service.default_checkpoint] + others, server_paths=local or args.allow_server_paths)
    demo.queue(default_concurrency_limit=4)
    print(f"ITJNER app: model {folder} ({service.predictor().config.modalities()}, warm-up {warm:.1f} s) on "
          f"http://{args.host}:{args.port}", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=f"{MAX_UPLOAD_MB}mb",
                show_error=True, footer_links=["api"], allowed_paths=[str(EXAMPLES)], head=KEYS_JS,
                css=CSS)
    return 0
