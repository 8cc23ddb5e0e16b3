"""One command line: `itjner {app,train,evaluate,predict,export,labelstudio,caption,toyworld}` (also
`python -m itjner ...`). Heavy imports happen inside each command, so `itjner --help` answers at once."""
from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
from dataclasses import fields, replace
from pathlib import Path

from .configuration_itjner import PRESETS
from .word_tags import DEFAULT_PIPELINE

# Commands with their own parser in their own module: `itjner NAME ...` hands the rest of the line to MODULE.main.
DELEGATED = {
    "app": ("itjner.app", "start the Gradio demo (same as `python app.py`)"),
    "caption": ("itjner.captioning.cli", "train / evaluate / run the region-attention captioner"),
    "toyworld": ("itjner.toyworld", "the toy world only the image can solve: generate data, run the experiment"),
}


def cmd_train(args) -> int:
    from .configuration_itjner import preset
    from .train import train

    model_cfg, train_cfg = preset(args.preset)
    model_cfg = model_cfg.with_ablation(args.no_caption, args.no_gate, args.no_image_text, args.text_only)
    # every TrainConfig field that has a flag of the same name (--crf-lr -> crf_lr) and was given overrides the preset
    overrides = {f.name: getattr(args, f.name) for f in fields(train_cfg) if getattr(args, f.name, None) is not None}
    train_cfg = replace(train_cfg, **overrides)
    if args.caption_query:
        model_cfg.caption_query = args.caption_query
    if args.no_word_shape:
        model_cfg.word_shape = False
    if args.char_cnn:
        model_cfg.char_cnn = args.char_cnn
    if args.word_tags:
        from .word_tags import pipeline_labels

        model_cfg.word_tags, model_cfg.word_tag_labels = args.word_tags, pipeline_labels(args.word_tags)
    if args.fusion_ffn_mult:
        model_cfg.fusion_ffn_mult = args.fusion_ffn_mult
    if args.dropout is not None:
        model_cfg.dropout = args.dropout
    model_cfg.adapter = adapter_choice(args, model_cfg.adapter)
    result = train(model_cfg, train_cfg, args.data, args.out, images_dir=args.images, device=args.device,
                   random_init=args.random_init, limit=args.limit, test=not args.no_test,
                   caption_source=args.caption_source, init_from=args.init_from, add_train=args.add_train or (),
                   dev=args.dev, allow_dev_is_train=args.allow_dev_is_train, teacher=args.teacher,
                   unlabeled=args.unlabeled or ())
    if result.get("best_dev") is None:  # a non-zero torchrun rank: rank 0 saves and reports
        return 0
    _annotate_card(args.out, " ".join(shlex.quote(a) for a in ["itjner"] + sys.argv[1:]))
    dev = result["best_dev"]["overall"]
    print(f"best dev P {dev['precision']:.2f} R {dev['recall']:.2f} F1 {dev['f1']:.2f}; checkpoint in {args.out}")
    return 0


LORA_FLAGS = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_targets": "target_modules"}


def adapter_choice(args, preset_adapter: dict | None) -> dict | None:
    """The LoRA settings a training uses: the preset's, `--adapter lora|none`, and the --lora-* flags over them."""
    from .adapters import LoraSettings

    flags = [flag for flag in LORA_FLAGS if getattr(args, flag, None) is not None]
    given = {LORA_FLAGS[flag]: getattr(args, flag) for flag in flags}
    if args.adapter == "none":
        if flags:
            raise ValueError(f"--{flags[0].replace('_', '-')} sets up a LoRA adapter, but --adapter none fine-tunes "
                             "the whole encoder: drop one of them")
        return None
    if args.adapter is None and preset_adapter is None and not given:
        return None
    settings = {**(preset_adapter or {}), **given}
    targets = settings.get("target_modules")
    if isinstance(targets, str) and targets != "all-linear":  # peft reads any other string as a regular expression
        settings["target_modules"] = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraSettings.from_dict(settings).to_dict()


def _annotate_card(folder, command: str) -> None:
    from .configuration_itjner import ITJNERConfig
    from .model_card import write_model_card

    card_path = Path(folder, "card.json")
    card = json.loads(card_path.read_text())
    card["command"] = command
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    write_model_card(folder, ITJNERConfig.load(folder), card)


def cmd_evaluate(args) -> int:
    from .checkpoints import REPO, checkpoint_or_default, load_card
    from .data import read_conll, split_path
    from .images import ImageReport
    from .metrics import format_scores
    from .predict import Predictor, effective_precision
    from .train import evaluate_tweets

    checkpoint = checkpoint_or_default(args.checkpoint)
    card = load_card(checkpoint)
    data = args.data or card.get("data")
    if not data:
        raise ValueError(f"{checkpoint}'s card names no dataset: give --data (a dataset folder or a CoNLL file)")
    if not Path(data).exists() and (REPO / data).exists():  # a card's relative path, from another directory
        data = REPO / data
    predictor = Predictor.from_pretrained(checkpoint, args.device, args.caption_source, precision=args.precision)
    tweets = read_conll(split_path(data, args.split))
    report = ImageReport()
    scores = evaluate_tweets(predictor, tweets, args.images, report=report)
    if predictor.config.use_image:
        print(report.summary(), file=sys.stderr)
    precision = effective_precision(predictor.device, predictor.precision)
    print(f"{checkpoint} on {split_path(data, args.split)} ({len(tweets)} tweets, {precision})")
    print(format_scores(scores))
    recorded = (card.get("precision_scores") or {}).get(precision, {}).get("dev" if args.split in ("dev", "valid")
                                                                            else args.split)
    if recorded is not None:
        same = abs(recorded - scores["overall"]["f1"]) < 0.005
        print(f"the model card records F1 {recorded:.2f} for this split in {precision}: "
              + ("reproduced" if same else f"NOT reproduced (got {scores['overall']['f1']:.2f})"))
    if args.json:
        Path(args.json).write_text(json.dumps(scores, indent=2) + "\n")
    return 0


def cmd_predict(args) -> int:
    from .predict_files import done_indices, predict_file

    predictor = get_predictor(args.checkpoint, args.device, args.precision)
    n = predict_file(predictor, args.data, args.out, args.images, batch_size=args.batch_size)
    kept = len(done_indices(Path(args.out))) - n
    print(f"tagged {n} tweet(s) into {args.out}" + (f" ({kept} already there were kept)" if kept > 0 else ""))
    return 0


def _add_precision(parser: argparse.ArgumentParser) -> None:
    """--precision, checked by the Predictor (predict.PRECISIONS): a bad name is a one-line error, exit code 2."""
    parser.add_argument("--precision", default="auto",
                        help="auto (default): bf16 autocast on GPU and on CPUs with AVX512-BF16/AMX, exact fp32 on "
                             "other CPUs; fp32; bf16 (autocast on any device)")


def _add_train_parser(sub) -> None:
    """`itjner train`: what to train on, the model's switches, the schedule, distillation."""
    t = sub.add_parser("train", help="train on a Twitter CoNLL dataset folder (train/valid/test.txt)")
    t.add_argument("--preset", default="lite", choices=sorted(PRESETS))
    t.add_argument("--data", required=True, help="dataset folder, e.g. data/twitter2017")
    t.add_argument("--images", help="folder with <IMGID>.jpg images (optional; missing images are masked)")
    t.add_argument("--out", required=True, help="checkpoint folder to write")
    _add_train_model_switches(t.add_argument_group("model switches"))
    _add_train_schedule(t.add_argument_group("schedule"))
    d = t.add_argument_group("data and starting point")
    d.add_argument("--limit", type=int,
                   help="use only the first N tweets of each split and --add-train file (smoke tests)")
    d.add_argument("--no-test", action="store_true", help="do not evaluate the test split at the end")
    d.add_argument("--random-init", action="store_true", help="random backbone weights (tests, benchmarks)")
    d.add_argument("--device")
    d.add_argument("--init-from", metavar="CHECKPOINT", help="fine-tune this checkpoint (its architecture and "
                                                             "weights) instead of starting from the preset")
    d.add_argument("--add-train", metavar="CONLL", action="append",
                   help="also train on this file, e.g. `itjner labelstudio pull` output (repeatable)")
    d.add_argument("--dev", metavar="CONLL", help="dev file instead of the dataset's valid.txt")
    d.add_argument("--allow-dev-is-train", action="store_true",
                   help="train even when the dev data is training data (refused otherwise)")
    k = t.add_argument_group("distillation")
    k.add_argument("--teacher", metavar="CHECKPOINT",
                   help="distil: this trained checkpoint's CRF marginals on the training tweets are soft targets")
    k.add_argument("--distil-weight", type=float, help="weight of the teacher's soft targets (default 0.5)")
    k.add_argument("--distil-temperature", type=float,
                   help="divide the teacher's scores by this before its marginals (default 1: as trained)")
    k.add_argument("--unlabeled", metavar="CONLL", action="append",
                   help="more training tweets whose tags are ignored: the teacher tags them and its marginals are "
                        "their soft targets (repeatable; refused if they share a tweet with dev or test)")
    t.set_defaults(func=cmd_train)


def _add_train_model_switches(g) -> None:
    for flag in ("no-caption", "no-gate", "no-image-text", "text-only"):
        g.add_argument(f"--{flag}", action="store_true", help=f"ablation: {flag.replace('-', ' ')}")
    g.add_argument("--no-word-shape", action="store_true", help="drop the capitalisation-shape embedding")
    g.add_argument("--char-cnn", type=int, metavar="WIDTH",
                   help="add a cased character CNN of this width per word to T (extension; off by default)")
    g.add_argument("--word-tags", nargs="?", const=DEFAULT_PIPELINE, metavar="SPACY_PIPELINE",
                   help="add embeddings of a spaCy pipeline's cased POS and entity tags per word to T (extension; "
                        f"default pipeline {DEFAULT_PIPELINE}, `bash setup.sh --word-tags`)")
    g.add_argument("--caption-query", choices=["text", "caption"], help="how P is formed (see modeling_fusion)")
    g.add_argument("--fusion-ffn-mult", type=int, choices=[1, 2, 4],
                   help="FFN width (x hidden) of the multimodal blocks (default: the preset's; lite 1, paper 4)")
    g.add_argument("--caption-source", help="tags | given:<jsonl> | lstm:<dir> | hf:<model> (default: preset's)")
    g.add_argument("--dropout", type=float, help="dropout of the new layers (default: the preset's, 0.1)")
    g.add_argument("--adapter", choices=["lora", "none"],
                   help="lora: train LoRA adapters on the frozen text encoder (the checkpoint stores only them and "
                        "the encoder weights' hash); none: fine-tune the whole encoder (default: the preset's; "
                        "base: lora, others: none)")
    g.add_argument("--lora-r", type=positive_int, metavar="RANK", help="LoRA rank (base preset: 16)")
    g.add_argument("--lora-alpha", type=positive_int, help="LoRA alpha; the update is scaled by alpha / rank (32)")
    g.add_argument("--lora-dropout", type=float, help="dropout on the adapters' input (0.1)")
    g.add_argument("--lora-targets", metavar="NAMES",
                   help="comma-separated linear layers of the encoder that get adapters, e.g. q,k,v,o "
                        "(default all-linear: every one)")


def _add_train_schedule(g) -> None:
    """Each flag overrides the preset's TrainConfig field of the same name."""
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="text encoder learning rate")
    g.add_argument("--head-lr", type=float, help="learning rate of the new layers")
    g.add_argument("--crf-lr", type=float)
    g.add_argument("--ema", type=float, metavar="DECAY",
                   help="evaluate and save an exponential moving average of the weights (e.g. 0.995; default off)")
    g.add_argument("--warmup", type=float)
    g.add_argument("--adapter-lr", type=float, help="learning rate of the encoder's LoRA adapters (default 5e-4)")
    g.add_argument("--precision", choices=["fp32", "bf16"],
                   help="bf16: autocast in training steps, ~1.6x faster on CPUs with AVX512-BF16/AMX (default: the "
                        "preset's; base: bf16, others: fp32)")
    g.add_argument("--seed", type=int)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="itjner", description="ITJNER: image-text joint NER for tweets")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text + f" (itjner {name} --help)", add_help=False)

    _add_train_parser(sub)

    e = sub.add_parser("evaluate", help="entity-level P/R/F1 of a checkpoint on a split")
    e.add_argument("checkpoint", nargs="?", help="model folder (default: the default model)")
    e.add_argument("--data", help="dataset folder or a CoNLL file (default: the one its card names)")
    e.add_argument("--split", default="test", choices=["train", "dev", "valid", "test"])
    e.add_argument("--images")
    e.add_argument("--caption-source")
    e.add_argument("--json", help="also write the scores as JSON here")
    e.add_argument("--device")
    _add_precision(e)
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="tag a file of tweets into JSONL (resumable; shards under torchrun)")
    pr.add_argument("--data", required=True, help="CoNLL (.txt), JSONL or CSV with id/image_id and text/tokens")
    pr.add_argument("--images", help="folder with <IMGID>.jpg")
    pr.add_argument("--out", required=True, help="JSONL to write; a rerun skips rows already there")
    pr.add_argument("--checkpoint", help="model folder (default: the embedded checkpoint)")
    pr.add_argument("--batch-size", type=int, default=64)
    pr.add_argument("--device")
    _add_precision(pr)
    pr.set_defaults(func=cmd_predict)

    from .labelstudio.cli import add_cli

    add_cli(sub, get_predictor)
    return parser


def get_predictor(checkpoint: str | None = None, device: str | None = None, precision: str = "auto"):
    """The checkpoint a CLI tags with: the given folder, else the default."""
    from .checkpoints import checkpoint_or_default
    from .predict import Predictor

    return Predictor.from_pretrained(checkpoint_or_default(checkpoint), device, precision=precision)


def main(argv: list[str] | None = None) -> int:
    from . import runtime

    runtime.prepare()  # before torch is imported
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        return importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:])
    args = build_parser().parse_args(argv)
    runtime.quiet_transformers()
    from .backbones import BackboneUnavailable
    from .labelstudio.client import LabelStudioError

    try:
        return args.func(args)
    except (BackboneUnavailable, FileNotFoundError, ValueError, LabelStudioError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
