"""README.md model card written beside every saved checkpoint: what it is, what data it saw, what it scored."""
from __future__ import annotations

from pathlib import Path


def _row(name: str, scores: dict | None) -> str:
    if not scores:
        return f"| {name} | – | – | – |"
    s = scores.get("overall", scores)
    return f"| {name} | {s['precision']:.2f} | {s['recall']:.2f} | {s['f1']:.2f} |"


def _training_data_lines(card: dict) -> list[str]:
    """What it learnt from beyond the dataset's own train split: extra files (`train --add-train`), how many tweets
    in all, a teacher (`train --teacher`)."""
    lines = [f"- more training tweets from `{extra}`" for extra in card.get("add_train") or ()]
    if card.get("train_tweets"):
        untagged = card.get("unlabeled_tweets") or 0
        lines.append(f"- trained on {card['train_tweets'] + untagged} tweets in all"
                     + (f", {untagged} of them tagged by the teacher" if untagged else ""))
    if card.get("teacher"):
        lines.append(f"- distilled from teacher `{card['teacher']}` (its CRF marginals on the same training tweets as "
                     f"soft targets, weight {card.get('train', {}).get('distil_weight')})")
    for path in card.get("unlabeled") or ():
        lines.append(f"- more training tweets from `{path}` with their tags ignored: the teacher's tags and "
                     "marginals stand in for them")
    return lines


def write_model_card(folder: str | Path, config, card: dict) -> None:
    image_note = ("The image branch is part of this model." if config.use_image else
                  "**Trained without images: the image does not influence its predictions.**")
    if config.adapter:
        weights = config.text_encoder_weights or {}
        encoder = (f"frozen, loaded by name from its installed weights (sha256 {weights.get('sha256', '?')[:12]}... "
                   f"checked at load), with a LoRA adapter (rank {config.adapter.get('r')}, alpha "
                   f"{config.adapter.get('alpha')}, on {config.adapter.get('target_modules')}) stored in encoder_adapter/")
    elif config.freeze_text_encoder:
        encoder = "frozen, loaded by name, not stored"
    else:
        encoder = "fine-tuned, stored here"
    lines = [
        f"# ITJNER checkpoint `{Path(folder).name}`",
        "",
        "Image-text joint NER (Zhong et al., 2022), implemented by the ITJNER project.",
        "",
    ] + ([f"**Warning:** {card['warning']}", ""] if card.get("warning") else []) + [
        f"- preset: `{config.preset}`; text encoder `{config.text_encoder}` ({encoder}); image backbone "
        f"`{config.image_backbone}` (frozen, loaded by name, not stored)",
        f"- modalities trained with: **{config.modalities()}**. {image_note}",
        f"- switches: caption={config.use_caption}, gate={config.use_gate}, "
        f"image-aware text fusion={config.use_image_text_fusion}, caption query mode `{config.caption_query}`, "
        f"aux weight λ={config.aux_weight}, word-shape embedding={config.word_shape}, "
        f"FFN width of the multimodal blocks {config.fusion_ffn_mult}×"
        + (f", character CNN width {config.char_cnn}" if config.char_cnn else "")
        + (f", spaCy word tags from `{config.word_tags}`" if config.word_tags else ""),
        f"- data: `{card.get('data')}`" + (f" (first {card['limit']} tweets per split)" if card.get("limit") else ""),
        f"- images: `{card.get('images') or 'none (all image branches masked)'}`",
    ] + _training_data_lines(card) + [
        f"- seed: {card.get('seed')}; training: `{card.get('train')}`",
        "",
        "| split | P | R | F1 |",
        "|---|---|---|---|",
        _row("dev (best epoch)", card.get("dev")),
        _row("test (evaluated once)", card.get("test")),
        "",
        "Entity-level micro scores over exact (type, start, end) chunks, conlleval chunking, first sub-token tags.",
    ]
    if card.get("precision_scores"):
        lines += ["", f"The same stored file in each compute precision (`itjner evaluate --precision P` reprints them; "
                  f"`auto` ran {card.get('precision')} where this card was written):", "",
                  "| precision | dev F1 | test F1 |", "|---|---|---|"]
        lines += [f"| {p} | {s.get('dev', float('nan')):.2f} | {s.get('test', float('nan')):.2f} |"
                  for p, s in card["precision_scores"].items()]
    if card.get("speed"):
        speed = card["speed"]
        lines += ["", f"Speed: {speed['ms_per_tweet']} ms to tag one tweet at {speed['precision']} "
                  f"({speed.get('machine', '')}; {speed.get('measured', '')})."]
    if card.get("stored_dtype"):
        lines += ["", f"Weights stored as {card['stored_dtype']}; the figures above were measured on the stored file "
                  f"(before conversion: dev F1 {card['dev_fp32']['overall']['f1']:.2f}, "
                  f"test F1 {card['test_fp32']['overall']['f1']:.2f})."]
    if card.get("command"):
        lines += ["", "Reproduce:", "", "```", card["command"], "```"]
    Path(folder, "README.md").write_text("\n".join(lines) + "\n")
