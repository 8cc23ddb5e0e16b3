"""`itjner export` and `itjner labelstudio {push,pull,flush}`: the Label Studio loop from the command line."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from ..data import format_conll, read_tweets
from .client import DEFAULT_URL, LabelStudioClient, connect
from .tasks import LABEL_CONFIG, build_tasks, export_tasks_json


def _predict(args, get_predictor):
    tweets = read_tweets(args.data)
    if not tweets:
        raise ValueError(f"{args.data}: no tweets")
    predictor = get_predictor(args.checkpoint)
    predictions = predictor.predict(tweets, images_dir=args.images)
    return predictions, predictor.model_version


def cmd_export(args, get_predictor) -> int:
    if args.format != "labelstudio":
        raise ValueError(f"unknown export format {args.format!r}")
    predictions, version = _predict(args, get_predictor)
    n = export_tasks_json(predictions, args.images, version, args.out, order=args.order)
    print(f"wrote {n} task(s) to {args.out}; create a project with this labeling config, then import the file:\n"
          f"{LABEL_CONFIG}")
    return 0


def cmd_push(args, get_predictor) -> int:
    client = connect(args.url, getattr(args, "api_key", None))
    project = client.create_project(args.create) if args.create else int(args.project)
    predictions, version = _predict(args, get_predictor)
    tasks = build_tasks(predictions, args.images, version, order=args.order)
    result = client.push_tasks(project, tasks)
    print(f"project {project} at {client.url}: {result}")
    return 0


def cmd_pull(args) -> int:
    client = connect(args.url, getattr(args, "api_key", None))
    tweets = client.pull_annotations(int(args.project))
    for tw in tweets:
        for problem in tw.meta.get("problems", []):
            print(f"warning: task {tw.meta.get('task_id')}: {problem}", file=sys.stderr)
    out = Path(args.out)
    out.write_text(format_conll(tweets), encoding="utf-8")
    print(f"wrote {len(tweets)} annotated tweet(s) from project {args.project} to {out}")
    return 0


def cmd_flush(args) -> int:
    from .outbox import Outbox

    box = Outbox(args.outbox_dir) if getattr(args, "outbox_dir", None) else Outbox()
    client = LabelStudioClient(args.url, getattr(args, "api_key", None))
    result = box.flush(client)
    print(result)
    return 0 if result.pending == 0 else 1


def add_cli(subparsers, get_predictor: Callable[[str | None], Any]) -> None:
    """Register `export` and `labelstudio {push,pull,flush}`; each sets `func(args) -> exit code`.
    Errors are LabelStudioError (a RuntimeError) or ValueError, with messages ready to print."""
    def common(p, url=True):
        if url:
            p.add_argument("--url", help=f"Label Studio URL (default $LABEL_STUDIO_URL or {DEFAULT_URL})")
            p.add_argument("--api-key", help="API key (prefer $LABEL_STUDIO_API_KEY: arguments show up in `ps`)")

    def predicting(p):
        p.add_argument("--data", required=True, help="tweets to tag: CoNLL, JSONL or CSV")
        p.add_argument("--images", help="folder with <IMGID>.jpg (missing images are sent without one)")
        p.add_argument("--checkpoint", help="trained model folder")
        p.add_argument("--order", choices=["file", "uncertainty"], default="file",
                       help="task order: as in the file, or least confident first")

    ex = subparsers.add_parser("export", help="write predictions as a Label Studio tasks.json (no server needed)")
    ex.add_argument("--format", choices=["labelstudio"], default="labelstudio")
    ex.add_argument("--out", required=True, help="tasks.json to write")
    predicting(ex)
    ex.set_defaults(func=lambda a: cmd_export(a, get_predictor))

    ls = subparsers.add_parser("labelstudio", help="send predictions to / fetch annotations from Label Studio")
    lsub = ls.add_subparsers(dest="ls_command", required=True)
    push = lsub.add_parser("push", help="create pre-annotated tasks (existing ones are skipped)")
    common(push)
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--project", type=int, help="existing project id")
    target.add_argument("--create", metavar="TITLE", help="create a project with the ITJNER labeling config")
    predicting(push)
    push.set_defaults(func=lambda a: cmd_push(a, get_predictor))

    pull = lsub.add_parser("pull", help="write the latest annotation of each annotated task as Twitter CoNLL")
    common(pull)
    pull.add_argument("--project", type=int, required=True)
    pull.add_argument("--out", required=True, help="CoNLL file to write (IMGID: format)")
    pull.set_defaults(func=cmd_pull)

    flush = lsub.add_parser("flush", help="send the corrections queued in the local outbox")
    common(flush)
    flush.add_argument("--outbox-dir", help="folder of outbox.sqlite (default $ITJNER_DATA_DIR or ~/.local/share/itjner)")
    flush.set_defaults(func=cmd_flush)
