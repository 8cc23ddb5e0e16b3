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


def _image_urls(args, client, project, predictions) -> dict[str, str] | None:
    if getattr(args, "images_as", "data-url") != "local-files":
        return None
    import os

    from .media import local_image_urls

    root = args.document_root or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    if not args.images or not root:
        raise ValueError("--images-as local-files needs --images and --document-root (Label Studio's "
                         "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true)")
    urls = local_image_urls([p.tweet for p in predictions], args.images, root)
    if urls:
        client.ensure_local_storage(project, args.images)
    return urls


def cmd_push(args, get_predictor) -> int:
    client = connect(args.url, getattr(args, "api_key", None))
    if args.create:
        project, created = client.project_for_title(args.create)
        print(f"{'created' if created else 'reusing'} project {project} {args.create!r}")
    else:
        project = int(args.project)
    predictions, version = _predict(args, get_predictor)
    urls = _image_urls(args, client, project, predictions)
    tasks = build_tasks(predictions, args.images, version, order=args.order, image_urls=urls)
    result = client.push_tasks(project, tasks)
    print(f"project {project} at {client.url}: {result} (model version {version})")
    return 0


def cmd_pull(args) -> int:
    from .tasks import tweets_from_tasks

    client = connect(args.url, getattr(args, "api_key", None))
    tasks = client.list_tasks(int(args.project))
    tweets, merged = tweets_from_tasks(tasks)
    for tw in tweets:
        for problem in tw.meta.get("problems", []):
            print(f"warning: task {tw.meta.get('task_id')}: {problem}", file=sys.stderr)
    out = Path(args.out)
    out.write_text(format_conll(tweets), encoding="utf-8")
    print(f"wrote {len(tweets)} annotated tweet(s) from project {args.project} to {out}; merged {merged} "
          f"duplicate task(s) of the same tweet (latest annotation kept)")
    if getattr(args, "images", None):
        from .media import save_images

        keep = {tw.meta.get("task_id") for tw in tweets}
        written, problems = save_images([t for t in tasks if _task_id(t) in keep], args.images, client.url,
                                        client.key)
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)
        print(f"wrote {written} image(s) to {args.images}")
    return 0


def _task_id(task) -> int | None:
    from .tasks import as_dict

    return as_dict(task).get("id")


def cmd_flush(args) -> int:
    from .outbox import Outbox

    box = Outbox(args.outbox_dir) if getattr(args, "outbox_dir", None) else Outbox()
    client = LabelStudioClient(args.url, getattr(args, "api_key", None))
    result = box.flush(client)
    print(result)
    return 0 if result.pending == 0 else 1


def cmd_serve(args) -> int:
    import logging
    import os

    import uvicorn

    from ..checkpoints import checkpoint_or_default
    from .backend import Backend, create_app
    from .retraining import RetrainOptions

    os.environ.setdefault("TQDM_DISABLE", "1")  # a server log, not a terminal: no progress bars
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    auth = None
    if args.basic_auth_user:
        password = os.environ.get("ITJNER_BACKEND_PASSWORD")
        if not password:
            raise ValueError("--basic-auth-user needs the password in $ITJNER_BACKEND_PASSWORD")
        auth = (args.basic_auth_user, password)
    options = RetrainOptions(epochs=args.epochs, lr_scale=args.lr_scale, heldout=args.heldout,
                             min_heldout=args.min_heldout,
                             min_gain=args.min_gain, max_dev_drop=args.max_dev_drop, replay=args.replay,
                             base_data=args.base_data, keep=args.keep)
    backend = Backend(checkpoint_or_default(args.checkpoint), args.images, args.versions, args.url,
                      getattr(args, "api_key", None), options, args.train_every)
    print(f"ITJNER ML backend serving {backend.model_version} on http://{args.host}:{args.port} "
          f"(Label Studio: Settings > Model > Connect model > http://{args.host}:{args.port})", flush=True)
    uvicorn.run(create_app(backend, auth), host=args.host, port=args.port, log_level="info")
    return 0


def cmd_config(args) -> int:
    print(LABEL_CONFIG, end="")
    return 0


def add_serve_cli(lsub) -> None:
    serve = lsub.add_parser("serve", help="run ITJNER as a Label Studio ML backend (predictions, training)")
    serve.add_argument("--checkpoint", help="checkpoint folder to serve, and the base every retraining starts from "
                                            "(default: the shipped default model)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=9090)
    serve.add_argument("--images", help="folder with <IMGID>.jpg for tasks without an image of their own")
    serve.add_argument("--versions", help="folder of the retrained versions and history.json (default "
                                          "$ITJNER_DATA_DIR/backend/<checkpoint name>)")
    serve.add_argument("--url", help="Label Studio URL for images and annotations (default $LABEL_STUDIO_URL, "
                                     "else the hostname Label Studio gives at setup)")
    serve.add_argument("--api-key", help="prefer $LABEL_STUDIO_API_KEY (else the key Label Studio gives at setup)")
    serve.add_argument("--basic-auth-user", help="require HTTP basic auth (password in $ITJNER_BACKEND_PASSWORD)")
    t = serve.add_argument_group("retraining (each version is trained from --checkpoint, see README)")
    t.add_argument("--train-every", type=int, default=0,
                   help="also train after this many new annotations of a project (0: only on Start training)")
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--lr-scale", type=float, default=0.3,
                   help="the preset's learning rates times this (the base is trained already)")
    t.add_argument("--heldout", type=float, default=0.3,
                   help="share of the annotated tweets held out (by a stable hash of each tweet) to judge a version")
    t.add_argument("--min-heldout", type=int, default=2, help="fewer held-out annotated tweets: no training")
    t.add_argument("--min-gain", type=float, default=0.0,
                   help="accept a version when its held-out F1 > the serving model's + this (a tie is no gain)")
    t.add_argument("--max-dev-drop", type=float, default=0.5,
                   help="and when its F1 on the base's dev split falls by at most this")
    t.add_argument("--replay", type=int, default=600,
                   help="tweets of the base's own training split trained on with the annotations (not to forget)")
    t.add_argument("--base-data", help="dataset folder of the base (train.txt, valid.txt); default: its card's data")
    t.add_argument("--keep", type=int, default=3, help="accepted versions kept on disk besides the serving one")
    serve.set_defaults(func=cmd_serve)


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
    push = lsub.add_parser("push", help="create pre-annotated tasks (existing tweets get the new model's predictions)")
    common(push)
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--project", type=int, help="existing project id")
    target.add_argument("--create", metavar="TITLE",
                        help="the project with this title (created with the ITJNER labeling config if none; "
                             "refused if several)")
    predicting(push)
    push.add_argument("--images-as", choices=["data-url", "local-files"], default="data-url",
                      help="images inside each task (data-url, ~100 KB a task) or served by Label Studio from "
                           "--images (local-files; the folder must be under --document-root)")
    push.add_argument("--document-root", help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: "
                                              "that variable)")
    push.set_defaults(func=lambda a: cmd_push(a, get_predictor))

    pull = lsub.add_parser("pull", help="write the latest annotation of each annotated task as Twitter CoNLL")
    common(pull)
    pull.add_argument("--project", type=int, required=True)
    pull.add_argument("--out", required=True, help="CoNLL file to write (IMGID: format)")
    pull.add_argument("--images", help="also write each pulled tweet's image here as <IMGID>.jpg (for train --images)")
    pull.set_defaults(func=cmd_pull)

    flush = lsub.add_parser("flush", help="send the corrections queued in the local outbox")
    common(flush)
    flush.add_argument("--outbox-dir", help="folder of outbox.sqlite (default $ITJNER_DATA_DIR or ~/.local/share/itjner)")
    flush.set_defaults(func=cmd_flush)
    add_serve_cli(lsub)
    config = lsub.add_parser("config", help="print ITJNER's labeling config (paste it into a new project)")
    config.set_defaults(func=cmd_config)
