"""The Predict tab: a tweet and its image in; caption, entities (correctable), heatmaps, gate, Label Studio out."""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import gradio as gr

from . import handoff
from . import views as ui
from ..checkpoints import checkpoint_version, model_card_text
from .messages import UserError, md_escape
from .service import CAPTION_SOURCES, DEFAULT_SOURCE, PredictService
from .widgets import raw_image


# The predict handler's outputs, in order; the API (`/predict`) returns them less the layout groups and the state.
PREDICT_OUTPUTS = ("status", "caption", "trust", "entities", "words", "fix_message", "token", "source", "head",
                   "heatmap", "legend", "maps", "map_note", "gate", "cap_group", "cap_word", "cap_heat", "cap_legend",
                   "json", "state")
PREDICT_API_OUTPUTS = tuple(name for name in PREDICT_OUTPUTS if name not in ("maps", "cap_group", "state"))


def on_predict(service: PredictService, w: dict, image, text, caption, checkpoint, caption_source) -> dict:
    """Tag the tweet; every output of the tab gets its new value (w: the tab's widgets by name)."""
    try:
        res = service.predict(text, image, caption, checkpoint, caption_source)
    except UserError as err:
        return predict_problem(w, str(err))
    pred = res.prediction
    choices = ui.token_choices(pred)
    first = choices[0][1] if choices else None
    sources = ui.map_sources(pred)
    picture = res.image.image if res.uses_image else None
    heat = ui.render_heatmap(pred, picture, first, ui.MAP_Q, ui.MEAN_HEADS) if sources else None
    state = {"pred": pred, "image": picture, "image_bytes": res.image.usable,
             "model_version": checkpoint_version(res.checkpoint), "entities": list(pred.entities),
             "photo": res.photo_caption, "photo_image": res.image.image, "model": Path(res.checkpoint).name,
             "modalities": res.modalities}
    maps = bool(sources) and picture is not None
    gate = ui.gate_rows(pred) if picture is not None else None
    return {
        w["status"]: ui.status_message(res),
        w["caption"]: ui.caption_text(res),
        w["trust"]: ui.trust_line(res),
        w["entities"]: entities_view(pred.tweet.tokens, pred.entities),
        w["words"]: gr.update(choices=ui.word_choices(pred.tweet.tokens), value=[]),
        w["fix_message"]: "",
        w["token"]: gr.update(choices=choices, value=first),
        w["source"]: gr.update(choices=sources or [ui.MAP_Q], value=(sources or [ui.MAP_Q])[0]),
        w["head"]: gr.update(choices=ui.head_choices(pred), value=ui.MEAN_HEADS),
        w["heatmap"]: ui.to_jpeg_file(heat.picture) if heat else None,
        w["legend"]: ui.heatmap_html(heat),
        w["maps"]: gr.update(visible=maps),
        w["map_note"]: gr.update(value=ui.map_note(res, sources), visible=res.uses_image and not maps),
        w["gate"]: gr.update(value=ui.gate_html(gate), visible=bool(gate)),
        **caption_panel(w, res.photo_caption, res.image.image),
        w["json"]: ui.prediction_json(pred, Path(res.checkpoint).name, res.modalities),
        w["state"]: state,
    }


def caption_panel(w: dict, photo, image) -> dict:
    """The caption's words and the heatmap of the first: where the captioner looked for each word it wrote."""
    choices = ui.caption_word_choices(photo)
    heat = ui.render_caption_heatmap(photo, image, None) if choices else None
    return {w["cap_group"]: gr.update(visible=heat is not None),
            w["cap_word"]: gr.update(choices=choices, value=choices[0][1] if choices else None),
            w["cap_heat"]: ui.to_jpeg_file(heat.picture) if heat else None,
            w["cap_legend"]: ui.heatmap_html(heat)}


def entities_view(tokens, entities) -> dict:
    return gr.update(value=ui.highlight_value(tokens, entities), color_map=ui.colour_map(entities))


def predict_problem(w: dict, message: str) -> dict:
    """An input the app cannot tag: say why in the status line, clear the old results. API callers get
    {"error": message} as the JSON output."""
    return {w["status"]: f"⚠️ **{md_escape(message)}**", w["caption"]: "", w["trust"]: "", w["entities"]: None,
            w["words"]: gr.update(choices=[], value=[]), w["fix_message"]: "",
            w["token"]: gr.update(choices=[], value=None), w["heatmap"]: None, w["legend"]: "",
            w["maps"]: gr.update(visible=False), w["map_note"]: gr.update(visible=False),
            w["gate"]: gr.update(value="", visible=False), w["cap_group"]: gr.update(visible=False),
            w["cap_word"]: gr.update(choices=[], value=None), w["cap_heat"]: None, w["cap_legend"]: "",
            w["json"]: {"error": message}, w["state"]: None}


def on_rerender(w: dict, state, choice, source, head) -> dict:
    """Another word, attention map or head: redraw the heatmap."""
    if not state or state.get("image") is None:
        return {w["heatmap"]: None, w["legend"]: ""}
    try:
        heat = ui.render_heatmap(state["pred"], state["image"], choice, source, head)
    except UserError as err:
        raise gr.Error(str(err), print_exception=False) from None
    return {w["heatmap"]: ui.to_jpeg_file(heat.picture) if heat else None, w["legend"]: ui.heatmap_html(heat)}


def on_caption_word(w: dict, state, choice) -> dict:
    """Another caption word: where the captioner looked when it wrote it."""
    if not state or state.get("photo") is None:
        return {w["cap_heat"]: None, w["cap_legend"]: ""}
    try:
        heat = ui.render_caption_heatmap(state["photo"], state.get("photo_image"), choice)
    except UserError as err:
        raise gr.Error(str(err), print_exception=False) from None
    return {w["cap_heat"]: ui.to_jpeg_file(heat.picture) if heat else None, w["cap_legend"]: ui.heatmap_html(heat)}


def on_span_click(state, evt: gr.SelectData):
    """A click on a highlighted span picks its words in the correction panel."""
    if not state:
        return gr.update()
    return gr.update(value=ui.words_of_span(state["pred"].tweet.tokens, state["entities"], evt.index, evt.value))


def on_correct(w: dict, state, words, etype, token) -> dict:
    """Apply one correction: the entities, the heatmap word list, the JSON and what Send will deliver follow it."""
    if not state:
        return {w["fix_message"]: "Predict first: there is nothing to correct."}
    pred = state["pred"]
    try:
        entities = ui.apply_correction(state["entities"], words, etype, len(pred.tweet.tokens))
    except UserError as err:
        return {w["fix_message"]: f"⚠️ {md_escape(err)}"}
    state = {**state, "entities": entities}
    choices = ui.token_choices(pred, entities)
    keep = token if token in {value for _, value in choices} else None
    what = "removed" if etype == ui.NOT_AN_ENTITY else f"labelled {etype}"
    return {w["entities"]: entities_view(pred.tweet.tokens, entities), w["words"]: gr.update(value=[]),
            w["fix_message"]: f"Corrected: {len(words)} word(s) {what}.",
            w["token"]: gr.update(choices=choices, value=keep or choices[0][1]),
            w["json"]: ui.prediction_json(pred, state.get("model", ""), state.get("modalities", ""), entities),
            w["state"]: state}


def caption_source_state(service: PredictService, checkpoint) -> dict:
    """The caption-source picker for a checkpoint: offered only when the model reads captions."""
    try:
        note = service.caption_source_note(checkpoint, None)
    except UserError:
        note = ""
    if note:
        return {"interactive": False, "info": note}
    return {"interactive": True, "info": "tags | given | lstm:<dir> | hf:<model id>"}


def on_model(service: PredictService, w: dict, checkpoint) -> dict:
    """Another checkpoint picked: say what it reads, show its card, and whether it reads captions."""
    try:
        folder = service.resolve(checkpoint)
    except UserError as err:
        return {w["model_info"]: f"⚠️ {md_escape(err)}", w["card"]: ""}
    return {w["model_info"]: ui.model_info(folder), w["card"]: model_card_text(folder),
            w["caption_source"]: gr.update(**caption_source_state(service, folder))}


def on_send(state, url, key, project):
    if not state:
        return "Predict first: there is nothing to send."
    try:
        return md_escape(handoff.send_to_label_studio(state["pred"], state.get("image_bytes"), state["entities"],
                                                      state["model_version"], project, url, key))
    except UserError as err:
        return md_escape(err)


def on_flush(url, key):
    return md_escape(handoff.flush_outbox(None, url, key))


def on_load():
    return md_escape(handoff.outbox_status())


def input_column(service: PredictService, checkpoints: list[tuple[str, str]]) -> dict:
    """Image, text, caption override, model choice, Predict button."""
    c = {"image": raw_image(label="Tweet image", sources=["upload", "clipboard"], height=300, elem_id="image-in"),
         "text": gr.Textbox(label="Tweet text (Ctrl+Enter to predict)", lines=3, max_lines=8, elem_id="tweet-text",
                            placeholder="e.g. Taylor Swift brought the house down at Madison Square Garden"),
         "override": gr.Textbox(label="Alt text / caption override (optional)", elem_id="caption-in",
                               info="Used as the image's caption by the `given` caption source "
                                    "(and by sources that accept a given caption).")}
    with gr.Accordion("Model", open=False):
        c["checkpoint"] = gr.Dropdown(choices=checkpoints, value=service.default_checkpoint, allow_custom_value=True,
                                      label="Checkpoint", elem_id="checkpoint",
                                      info="The models found here, or the path of any folder written by "
                                           "save_pretrained.")
        c["caption_source"] = gr.Dropdown(choices=list(CAPTION_SOURCES), value=DEFAULT_SOURCE,
                                          allow_custom_value=True, label="Caption source",
                                          **caption_source_state(service, None))
        with gr.Accordion("Model card", open=False):
            c["card"] = gr.Markdown(model_card_text(service.default_checkpoint), elem_id="model-card")
    c["model_info"] = gr.Markdown(ui.model_info(service.default_checkpoint, service.notice), elem_id="model-info")
    c["button"] = gr.Button("Predict", variant="primary", elem_id="predict-btn")
    return c


def correction_panel() -> dict:
    """Pick words (or click a span) and one of the four types: the only labels an entity can get."""
    with gr.Accordion("Correct the entities", open=False, elem_id="correct"):
        with gr.Row():
            p = {"words": gr.Dropdown(label="Words", choices=[], value=[], multiselect=True, scale=3,
                                      elem_id="correct-words"),
                 "type": gr.Radio(ui.CORRECTION_TYPES, label="Type", scale=3, elem_id="correct-type")}
        p["apply"] = gr.Button("Apply correction", size="sm", elem_id="correct-apply")
        p["message"] = gr.Markdown(elem_id="correct-message")
    return p


def image_panels() -> dict:
    """Heatmap controls, the heatmap and its scale, the gate plot: shown only when the model reads the image."""
    with gr.Column(visible=False) as group:
        with gr.Row():
            r = {"token": gr.Dropdown(label="Heatmap: where this word looked (7×7 image regions)", choices=[],
                                      value=None, elem_id="token-choice", scale=3),
                 "source": gr.Radio(label="Attention", choices=[ui.MAP_Q, ui.MAP_H], value=ui.MAP_Q,
                                    elem_id="map-source", scale=3),
                 "head": gr.Dropdown(label="Head", choices=[ui.MEAN_HEADS], value=ui.MEAN_HEADS,
                                     elem_id="head-choice", scale=2)}
        r["heatmap"] = gr.Image(label="Attention heatmap", show_label=False, type="filepath", interactive=False,
                                elem_id="heatmap")
        r["legend"] = gr.HTML(elem_id="heatmap-legend", padding=False)
    r["group"] = group
    r["gate"] = gr.HTML(visible=False, elem_id="gate-plot")  # HTML bars: tweet order, colours, page theme
    return r


def result_column() -> dict:
    r = {"status": gr.Markdown(elem_id="status"),
         "caption": gr.Textbox(label="Caption of the photo", interactive=False, elem_id="caption-out")}
    gr.HTML(ui.legend_html(), padding=False)
    r["trust"] = gr.Markdown(elem_id="trust")
    r["entities"] = gr.HighlightedText(label="Entities with confidence (click a span to correct it below)",
                                       show_legend=False, color_map=dict(ui.TYPE_COLOURS), elem_id="entities",
                                       elem_classes=["itjner-entities"])
    r["correct"] = correction_panel()
    r.update(image_panels())
    r["map_note"] = gr.Markdown(visible=False)
    with gr.Column(visible=False) as cap_group:
        r["cap_word"] = gr.Dropdown(label="Caption word: where the captioner looked when it wrote it (its soft "
                                          "attention over the 7×7 regions)", choices=[], value=None,
                                    elem_id="caption-word")
        r["cap_heat"] = gr.Image(show_label=False, type="filepath", interactive=False, elem_id="caption-heatmap")
        r["cap_legend"] = gr.HTML(padding=False, elem_id="caption-heatmap-legend")
    r["cap_group"] = cap_group
    return r


def label_studio_box() -> dict:
    with gr.Accordion("Send to Label Studio", open=False):
        with gr.Row():
            ls = {"url": gr.Textbox(label="Label Studio URL", value=os.environ.get("LABEL_STUDIO_URL", ""),
                                    placeholder="http://localhost:8080"),
                  "key": gr.Textbox(label="API key", type="password", value="",
                                    placeholder="empty: use $LABEL_STUDIO_API_KEY"),
                  "project": gr.Number(label="Project id", precision=0)}
        with gr.Row():
            ls["send"] = gr.Button("Send to Label Studio", elem_id="send-ls")
            ls["flush"] = gr.Button("Retry queued", size="sm")
        ls["status"] = gr.Markdown(elem_id="ls-status")
    return ls


def build(demo: gr.Blocks, service: PredictService, checkpoints: list[tuple[str, str]], examples: list[list[str]]
          ) -> dict:
    """Lay out and wire the tab."""
    with gr.Row():
        with gr.Column(scale=5):
            c = input_column(service, checkpoints)
        with gr.Column(scale=6):
            r = result_column()
            ls = label_studio_box()
            with gr.Accordion("Prediction as JSON", open=False):
                raw = gr.JSON(label="prediction")
    if examples:  # below the results: on a phone the results come right after the Predict button
        gr.Examples(examples=examples, inputs=[c["image"], c["text"]], elem_id="examples",
                    label="Examples: drawn images (a model that reads images sees a drawing, not a photo)")
    state = gr.State()
    fix = r["correct"]
    w = {**c, **r, **{f"ls_{k}": v for k, v in ls.items()}, "words": fix["words"], "fix_message": fix["message"],
         "fix_type": fix["type"], "maps": r["group"], "json": raw, "state": state}
    outputs = [w[name] for name in PREDICT_OUTPUTS]
    inputs = [w["image"], w["text"], w["override"], w["checkpoint"], w["caption_source"]]
    # many at once: concurrent requests reach the service together and are tagged in one model call
    w["button"].click(partial(on_predict, service, w), inputs, outputs, api_name="predict", concurrency_limit=32)
    for control in (w["token"], w["source"], w["head"]):
        control.input(partial(on_rerender, w), [state, w["token"], w["source"], w["head"]],
                      [w["heatmap"], w["legend"]], api_name=False, concurrency_limit=8)
    w["cap_word"].input(partial(on_caption_word, w), [state, w["cap_word"]], [w["cap_heat"], w["cap_legend"]],
                        api_name=False)
    w["entities"].select(on_span_click, state, w["words"], api_name=False)
    w["checkpoint"].change(partial(on_model, service, w), w["checkpoint"],
                           [w["model_info"], w["card"], w["caption_source"]], api_name=False)
    fix["apply"].click(partial(on_correct, w), [state, w["words"], w["fix_type"], w["token"]],
                       [w["entities"], w["words"], w["fix_message"], w["token"], w["json"], state], api_name=False)
    w["ls_send"].click(on_send, [state, w["ls_url"], w["ls_key"], w["ls_project"]], w["ls_status"], api_name=False)
    w["ls_flush"].click(on_flush, [w["ls_url"], w["ls_key"]], w["ls_status"], api_name=False)
    demo.load(on_load, None, w["ls_status"], api_name=False)
