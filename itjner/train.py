"""Training: AdamW with separate learning rates for the encoder, the new layers and the CRF; linear warm-up and
decay; dev evaluation every epoch; the best-on-dev model is saved; test is evaluated once, at the end, on it."""
from __future__ import annotations

import json
import math
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbones import load_tokenizer
from .configuration_itjner import ITJNERConfig, TrainConfig
from .data import SPLITS, Tweet, read_conll, split_path
from .batching import collate, to_device
from .distillation import soft_targets, teacher_marginals, teacher_tagged
from .distributed import barrier, mean_across, world
from .images import ImageReport, read_image_bytes
from .metrics import entity_scores, format_scores
from .modeling_itjner import ITJNERModel
from .predict import InputPipeline, Predictor, autocast, default_device

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(model: ITJNERModel, cfg: TrainConfig) -> list[dict]:
    groups = {"encoder": [], "encoder_nd": [], "head": [], "head_nd": [], "crf": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2
        if ".crf." in name:
            groups["crf"].append(p)
        elif name.startswith("text.encoder."):
            groups["encoder_nd" if no_decay else "encoder"].append(p)
        else:
            groups["head_nd" if no_decay else "head"].append(p)
    encoder_lr = cfg.adapter_lr if model.config.adapter else cfg.lr
    lr = {"encoder": encoder_lr, "encoder_nd": encoder_lr, "head": cfg.head_lr, "head_nd": cfg.head_lr,
          "crf": cfg.crf_lr}
    return [{"params": ps, "lr": lr[k], "weight_decay": 0.0 if k.endswith("_nd") or k == "crf" else cfg.weight_decay}
            for k, ps in groups.items() if ps]


def linear_schedule(optimizer, total: int, warmup: float):
    warm = max(1, int(total * warmup))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm))))


class WeightAverage:
    """An exponential moving average of the trainable weights (Polyak averaging), `train --ema DECAY`: after each
    step shadow <- d * shadow + (1 - d) * weights, with d = min(DECAY, (1 + n) / (10 + n)) after n steps so that the
    first steps are not averaged with the initial weights for long. Dev is evaluated, and the checkpoint saved, with
    the averaged weights in place (`applied`); training goes on from the raw ones."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.steps = decay, 0
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    @contextmanager
    def applied(self):
        raw = [p.detach().clone() for p in self.params]
        self._copy(self.shadow)
        try:
            yield
        finally:
            self._copy(raw)

    @torch.no_grad()
    def _copy(self, values) -> None:
        for p, v in zip(self.params, values):
            p.copy_(v)


def evaluate_tweets(predictor: Predictor, tweets: list[Tweet], images_dir=None, progress=True, report=None) -> dict:
    preds = predictor.predict(tweets, images_dir=images_dir, progress=progress, report=report)
    return entity_scores([t.tags for t in tweets], [p.tags for p in preds])


class Trainer:
    def __init__(self, model_cfg: ITJNERConfig, train_cfg: TrainConfig, out: str | Path, images_dir=None,
                 device=None, random_init=False, cache_dir=None, caption_source=None, log=print, init_from=None,
                 teacher=None):
        """init_from: a checkpoint folder to fine-tune (its config replaces `model_cfg`); teacher: a checkpoint whose
        CRF marginals on the training tweets are soft targets (weight `train_cfg.distil_weight`)."""
        seed_everything(train_cfg.seed)
        if init_from is not None:
            model_cfg = ITJNERConfig.load(init_from)
        self.model_cfg, self.cfg, self.out, self.images_dir, self.log = model_cfg, train_cfg, Path(out), images_dir, log
        self.teacher = teacher
        self.device = default_device(device)
        self.tokenizer = load_tokenizer(model_cfg.text_encoder)
        if init_from is not None:
            self.model = ITJNERModel.from_pretrained(init_from, self.device, merge=False)
        else:
            self.model = ITJNERModel.from_config(model_cfg, random_init=random_init).to(self.device)
        self.inputs = InputPipeline(model_cfg, self.tokenizer, self.device, caption_source, cache_dir)
        self.predictor = Predictor(self.model, self.tokenizer, self.out.name, caption_source=caption_source,
                                   cache_dir=cache_dir)
        self.predictor.inputs = self.inputs  # one feature store and captioner for train and dev
        self.history: list[dict] = []
        self.rank, self.world = world()
        self.net = self.model
        if self.world > 1:  # DistributedDataParallel: each rank takes its share of every global batch
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, find_unused_parameters=model_cfg.multimodal)

    def examples(self, tweets: list[Tweet], name: str):
        report = ImageReport()
        blobs = [read_image_bytes(self.images_dir, t.image_id) for t in tweets]
        examples, *_ = self.inputs.prepare(tweets, blobs, report=report)
        if self.model_cfg.multimodal:
            self.log(f"{name}: {report.summary()}")
        cut = sum(e.truncated_words > 0 for e in examples)
        if cut:
            self.log(f"{name}: {cut} tweets longer than {self.model_cfg.max_length} sub-tokens; their tail words are "
                     "left out of training and predicted O")
        return examples

    def fit(self, train: list[Tweet], dev: list[Tweet], unlabeled: list[Tweet] = ()) -> dict:
        """unlabeled: tweets without gold tags; the teacher tags them and they join `train`."""
        if unlabeled:
            train = train + teacher_tagged(self.teacher, unlabeled, self.images_dir, self.device)
        examples = self.examples(train, "train")
        if self.teacher is not None:
            marginals = teacher_marginals(self.teacher, train, self.images_dir, self.device,
                                          temperature=self.cfg.distil_temperature)
            for ex, marg in zip(examples, marginals):
                ex.soft_targets = soft_targets(marg, ex.labels, self.model_cfg.num_labels)
        steps_per_epoch = math.ceil(len(examples) / self.cfg.batch_size)
        optimizer = torch.optim.AdamW(param_groups(self.model, self.cfg), fused=self.device.type in ("cpu", "cuda"))
        scheduler = linear_schedule(optimizer, steps_per_epoch * self.cfg.epochs, self.cfg.warmup)
        rng = random.Random(self.cfg.seed)
        self.average = WeightAverage(self.model, self.cfg.ema) if self.cfg.ema else None
        best = -1.0
        for epoch in range(1, self.cfg.epochs + 1):
            started = time.time()
            loss = self.run_epoch(examples, optimizer, scheduler, rng, epoch)
            with self.average.applied() if self.average else nullcontext():
                best = self.end_epoch(epoch, loss, dev, started, best)
            barrier()
        return {"best_dev": getattr(self, "best_dev", None), "history": self.history}

    def end_epoch(self, epoch: int, loss: float, dev: list[Tweet], started: float, best: float) -> float:
        """Evaluate dev (rank 0), log the epoch, save the model if dev F1 is the best so far; returns the best."""
        if self.rank == 0:
            scores = evaluate_tweets(self.predictor, dev, self.images_dir, progress=True)
            row = {"epoch": epoch, "train_loss": loss, "dev": scores["overall"],
                   "epoch_seconds": time.time() - started}
            self.history.append(row)
            self.log(f"epoch {epoch}: loss {loss:.4f}  dev P {scores['overall']['precision']:.2f} "
                     f"R {scores['overall']['recall']:.2f} F1 {scores['overall']['f1']:.2f}  "
                     f"({row['epoch_seconds']:.0f} s)")
            if scores["overall"]["f1"] > best:
                best = scores["overall"]["f1"]
                self.best_dev = scores
                self.model.save_pretrained(self.out)
        return best

    def run_epoch(self, examples, optimizer, scheduler, rng, epoch) -> float:
        self.model.train()
        order = examples[:]
        rng.shuffle(order)
        batches = [order[i:i + self.cfg.batch_size] for i in range(0, len(order), self.cfg.batch_size)]
        total = 0.0
        # a bar on a terminal only (None: tqdm's own check), so logs of runs in the background stay readable
        bar = tqdm(batches, desc=f"epoch {epoch}/{self.cfg.epochs}", leave=False,
                   disable=None if self.rank == 0 else True)
        for chunk in bar:
            mine = chunk[self.rank::self.world] or chunk[:1]
            batch = to_device(collate(mine, self.model_cfg), self.device)
            with autocast(self.device, self.cfg.precision):
                out = self.net(batch, labels=batch["labels"])
            loss = out.loss
            if "soft_targets" in batch:
                w = self.cfg.distil_weight
                kd = self.model.decoder.soft_target_loss(out.emissions, out.word_mask, batch["soft_targets"])
                loss = (1 - w) * loss + w * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            if self.average:
                self.average.update()
            step_loss = mean_across(loss.item())
            total += step_loss
            bar.set_postfix(loss=f"{step_loss:.3f}")
        return total / max(1, len(batches))


def _key(tweet: Tweet) -> tuple:
    return (tweet.image_id, " ".join(tweet.tokens))


def _shared(a: list[Tweet], b: list[Tweet]) -> set:
    """The tweets (by image id and text) that are in both lists."""
    return {_key(t) for t in a} & {_key(t) for t in b}


def _read_files(paths, limit, log, message: str) -> list[Tweet]:
    """The tweets of the CoNLL files `paths` (the first `limit` of each), logging `message` per file."""
    tweets = []
    for path in paths or ():
        more = read_conll(path)[:limit]
        log(message.format(n=len(more), path=path))
        tweets += more
    return tweets


def load_splits(data, add_train=(), dev=None, limit=None, allow_dev_is_train=False, log=print):
    """(train, dev, test path or None). `add_train`: more CoNLL files (e.g. `itjner labelstudio pull` output)
    joined to the training split (`limit` cuts each of them too); `dev`: a dev file instead of the dataset's. A dev
    split that is (or shares tweets with) the training data is refused unless `allow_dev_is_train`, and then warned
    about loudly."""
    train_path = split_path(data, "train")
    dev_path = Path(dev) if dev else split_path(data, "dev")
    train_tweets = read_conll(train_path)[:limit]
    log(f"train: {len(train_tweets)} tweets from {train_path}")
    train_tweets += _read_files(add_train, limit, log, "train: + {n} tweets from {path}")
    dev_tweets = read_conll(dev_path)[:limit]
    shared = _shared(train_tweets, dev_tweets)
    if dev_path.resolve() == train_path.resolve() or shared:
        msg = (f"the dev data ({dev_path}) is also training data ({len(shared)} of {len(dev_tweets)} dev tweets are "
               "in the training set): dev F1 and the best-epoch choice would measure memorisation. Give a dataset "
               "folder (train.txt/valid.txt) with --add-train FILE, or --dev FILE")
        if not allow_dev_is_train:
            raise ValueError(msg + " (or --allow-dev-is-train to do it anyway)")
        log("WARNING: " + msg.upper())
    test_path = None
    if Path(data).is_dir() and (Path(data) / SPLITS["test"]).is_file():
        test_path = Path(data) / SPLITS["test"]
    elif Path(data).is_file() and not add_train:
        test_path = train_path
    return train_tweets, dev_tweets, test_path


def load_unlabeled(paths, dev_tweets: list[Tweet], test_path, limit=None, log=print) -> list[Tweet]:
    """The tweets of `paths` (CoNLL; their tags are ignored), refused when they share a tweet with dev or test."""
    tweets = _read_files(paths, limit, log, "unlabeled: {n} tweets from {path} (the teacher tags them)")
    shared = _shared(tweets, dev_tweets + (read_conll(test_path) if test_path else []))
    if shared:
        raise ValueError(f"{len(shared)} of the unlabeled tweets are dev or test tweets: the teacher's tags on them "
                         "would leak the evaluation data into training")
    return tweets


def train(model_cfg: ITJNERConfig, train_cfg: TrainConfig, data: str | Path, out: str | Path, images_dir=None,
          device=None, random_init=False, limit: int | None = None, test: bool = True, cache_dir=None,
          caption_source=None, log=print, init_from=None, add_train=(), dev=None, allow_dev_is_train=False,
          teacher=None, unlabeled=()) -> dict:
    """init_from: fine-tune this checkpoint (its architecture); add_train/dev/allow_dev_is_train: `load_splits`;
    teacher: distil from this checkpoint (`Trainer`); unlabeled: CoNLL files the teacher tags for training."""
    if unlabeled and teacher is None:
        raise ValueError("unlabeled tweets need a teacher to tag them (--teacher CHECKPOINT)")
    train_tweets, dev_tweets, test_path = load_splits(data, add_train, dev, limit, allow_dev_is_train, log)
    extra = load_unlabeled(unlabeled, dev_tweets, test_path, limit, log)
    if init_from is not None:
        model_cfg = ITJNERConfig.load(init_from)
    trainer = Trainer(model_cfg, train_cfg, out, images_dir, device, random_init, cache_dir, caption_source, log,
                      init_from=init_from, teacher=teacher)
    log(f"training {model_cfg.preset} ({model_cfg.modalities()}) on {len(train_tweets) + len(extra)} tweets, "
        f"dev {len(dev_tweets)}")
    started = time.time()
    result = trainer.fit(train_tweets, dev_tweets, extra)
    result["train_seconds"] = time.time() - started
    if trainer.rank != 0:
        return result
    if test and test_path is not None:
        best = Predictor.from_pretrained(out, device, caption_source, cache_dir)
        test_tweets = read_conll(test_path)[:limit]
        result["test"] = evaluate_tweets(best, test_tweets, images_dir)
        log("test (best-on-dev model, evaluated once):\n" + format_scores(result["test"]))
    card = {"preset": model_cfg.preset, "data": str(data), "images": str(images_dir) if images_dir else None,
            "modalities": model_cfg.modalities(), "seed": train_cfg.seed, "train": asdict(train_cfg),
            "limit": limit, "init_from": str(init_from) if init_from else None,
            "add_train": [str(p) for p in add_train or ()], "train_tweets": len(train_tweets),
            "teacher": str(teacher) if teacher else None, "unlabeled": [str(p) for p in unlabeled or ()],
            "unlabeled_tweets": len(extra), "dev": result["best_dev"], "test": result.get("test"),
            "epoch_seconds": [h["epoch_seconds"] for h in result["history"]]}
    ITJNERModel.from_pretrained(out, merge=False).save_pretrained(out, card=card)
    Path(out, "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
