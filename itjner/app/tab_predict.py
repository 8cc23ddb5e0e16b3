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


def on_predict(service: PredictService, image, text, caption, checkpoint, caption_source):
    try:
        res = service.predict(text, image, caption, checkpoint, caption_source)
    except UserError as err:
        return predict_problem(str(err))
    pred = res.prediction
    choices = ui.token_choices(pred)
    first = choices[0][1] if choices else None
    sources = ui.map_sources(pred)
    picture = res.image.image if res.uses_image else None
    heat = ui.render_heatmap(pred, picture, first, ui.MAP_Q, ui.MEAN_HEADS) if sources else None
    state = {"pred": pred, "image": picture, "image_bytes": res.image.data if not res.image.problem else None,
             "model_version": checkpoint_version(res.checkpoint), "entities": list(pred.entities),
             "photo": res.photo_caption, "photo_image": res.image.image}
    maps = bool(sources) and picture is not None
    gate = ui.gate_rows(pred) if picture is not None else None
    return (
        ui.status_message(res),
        ui.caption_text(res),
        entities_view(pred.tweet.tokens, pred.entities),
        gr.update(choices=ui.word_choices(pred.tweet.tokens), value=[]),
        "",
        gr.update(choices=choices, value=first),
        gr.update(choices=sources or [ui.MAP_Q], value=(sources or [ui.MAP_Q])[0]),
        gr.update(choices=ui.head_choices(pred), value=ui.MEAN_HEADS),
        ui.to_jpeg_file(heat.picture) if heat else None,
        ui.heatmap_html(heat),
        gr.update(visible=maps),
        gr.update(value=ui.map_note(res, sources), visible=res.uses_image and not maps),
        gr.update(value=ui.gate_html(gate), visible=bool(gate)),
        *caption_panel(res.photo_caption, res.image.image),
        ui.prediction_json(pred, Path(res.checkpoint).name, res.modalities),
        state,
    )


def caption_panel(photo, image) -> tuple:
    """The caption's words and the heatmap of the first: where the captioner looked for each word it wrote."""
    choices = ui.caption_word_choices(photo)
    heat = ui.render_caption_heatmap(photo, image, None) if choices else None
    return (gr.update(visible=heat is not None), gr.update(choices=choices, value=choices[0][1] if choices else None),
            ui.to_jpeg_file(heat.picture) if heat else None, ui.heatmap_html(heat))


def entities_view(tokens, entities) -> dict:
    return gr.update(value=ui.highlight_value(tokens, entities), color_map=ui.colour_map(entities))


def predict_problem(message: str):
    """An input the app cannot tag: say why in the status line, clear the old results. API callers get
    {"error": message} as the JSON output."""
    return (f"⚠️ **{md_escape(message)}**", "", None, gr.update(choices=[], value=[]), "",
            gr.update(choices=[], value=None), gr.update(), gr.update(), None, "", gr.update(visible=False),
            gr.update(visible=False), gr.update(value="", visible=False), gr.update(visible=False),
            gr.update(choices=[], value=None), None, "", {"error": message}, None)


def on_rerender(state, choice, source, head):
    if not state or state.get("image") is None:
        return None, ""
    try:
        heat = ui.render_heatmap(state["pred"], state["image"], choice, source, head)
    except UserError as err:
        raise gr.Error(str(err), print_exception=False) from None
    return (ui.to_jpeg_file(heat.picture) if heat else None), ui.heatmap_html(heat)


def on_caption_word(state, choice):
    if not state or state.get("photo") is None:
        return None, ""
    try:
        heat = ui.render_caption_heatmap(state["photo"], state.get("photo_image"), choice)
    except UserError as err:
        raise gr.Error(str(err), print_exception=False) from None
    return (ui.to_jpeg_file(heat.picture) if heat else None), ui.heatmap_html(heat)


def on_span_click(state, evt: gr.SelectData):
    """A click on a highlighted span picks its words in the correction panel."""
    if not state:
        return gr.update()
    return gr.update(value=ui.words_of_span(state["pred"].tweet.tokens, state["entities"], evt.index, evt.value))


def on_correct(state, words, etype, token):
    """Apply one correction: the entities, the heatmap word list and what Send will deliver follow it."""
    if not state:
        return None, "Predict first: there is nothing to correct.", gr.update(), state
    pred = state["pred"]
    try:
        entities = ui.apply_correction(state["entities"], words, etype, len(pred.tweet.tokens))
    except UserError as err:
        return gr.update(), f"⚠️ {md_escape(err)}", gr.update(), state
    state = {**state, "entities": entities}
    choices = ui.token_choices(pred, entities)
    keep = token if token in {value for _, value in choices} else None
    what = "removed" if etype == ui.NOT_AN_ENTITY else f"labelled {etype}"
    return (entities_view(pred.tweet.tokens, entities), f"Corrected: {len(words)} word(s) {what}.",
            gr.update(choices=choices, value=keep or choices[0][1]), state)


def caption_source_state(service: PredictService, checkpoint) -> dict:
    """The caption-source picker for a checkpoint: offered only when the model reads captions."""
    try:
        note = service.caption_source_note(checkpoint, None)
    except UserError:
        note = ""
    if note:
        return {"interactive": False, "info": note}
    return {"interactive": True, "info": "tags | given | lstm:<dir> | hf:<model id>"}


def on_model(service: PredictService, checkpoint):
    """Another checkpoint picked: show its card, and whether it reads captions."""
    try:
        folder = service.resolve(checkpoint)
    except UserError as err:
        return f"⚠️ {md_escape(err)}", gr.update()
    return model_card_text(folder), gr.update(**caption_source_state(service, folder))


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
         "caption": gr.Textbox(label="Alt text / caption override (optional)", elem_id="caption-in",
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
    r["entities"] = gr.HighlightedText(label="Entities with confidence (click a span to correct it below)",
                                       show_legend=False, color_map=dict(ui.TYPE_COLOURS), elem_id="entities")
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
    """Lay out and wire the tab; returns the model controls the other tabs share."""
    with gr.Row():
        with gr.Column(scale=5):
            c = input_column(service, checkpoints)
        with gr.Column(scale=6):
            r = result_column()
            ls = label_studio_box()
            with gr.Accordion("Prediction as JSON", open=False):
                raw = gr.JSON(label="prediction")
    if examples:  # below the results: on a phone the results come right after the Predict button
        gr.Examples(examples=examples, inputs=[c["image"], c["text"], c["caption"]],
                    label="Examples (procedurally drawn images)", elem_id="examples")
    state = gr.State()
    fix = r["correct"]
    outputs = [r["status"], r["caption"], r["entities"], fix["words"], fix["message"], r["token"], r["source"],
               r["head"], r["heatmap"], r["legend"], r["group"], r["map_note"], r["gate"], r["cap_group"], r["cap_word"], r["cap_heat"], r["cap_legend"], raw,
               state]
    inputs = [c["image"], c["text"], c["caption"], c["checkpoint"], c["caption_source"]]
    # many at once: concurrent requests reach the service together and are tagged in one model call
    c["button"].click(partial(on_predict, service), inputs, outputs, api_name="predict", concurrency_limit=32)
    for control in (r["token"], r["source"], r["head"]):
        control.input(on_rerender, [state, r["token"], r["source"], r["head"]], [r["heatmap"], r["legend"]],
                      api_name=False, concurrency_limit=8)
    r["cap_word"].input(on_caption_word, [state, r["cap_word"]], [r["cap_heat"], r["cap_legend"]], api_name=False)
    r["entities"].select(on_span_click, state, fix["words"], api_name=False)
    c["checkpoint"].change(partial(on_model, service), c["checkpoint"], [c["card"], c["caption_source"]],
                           api_name=False)
    fix["apply"].click(on_correct, [state, fix["words"], fix["type"], r["token"]],
                       [r["entities"], fix["message"], r["token"], state], api_name=False)
    ls["send"].click(on_send, [state, ls["url"], ls["key"], ls["project"]], ls["status"], api_name=False)
    ls["flush"].click(on_flush, [ls["url"], ls["key"]], ls["status"], api_name=False)
    demo.load(on_load, None, ls["status"], api_name=False)
    return {"checkpoint": c["checkpoint"], "caption_source": c["caption_source"]}
