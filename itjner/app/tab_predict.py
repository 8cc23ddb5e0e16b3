"""The Predict tab: a tweet and its image in; caption, entities (correctable), heatmaps, gate, Label Studio out."""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import gradio as gr

from . import handoff
from . import views as ui
from .messages import UserError, md_escape
from .service import CAPTION_SOURCES, DEFAULT_SOURCE, PredictService
from .widgets import raw_image

PREDICT_OUTPUTS = 12  # status, caption, entities, token, source, head, heatmap, map note, gate, gallery, JSON, state


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
    heat = ui.to_jpeg_file(ui.render_heatmap(pred, picture, first, ui.MAP_Q, ui.MEAN_HEADS)) if sources else None
    gallery = ui.caption_gallery(pred, res.image.image)
    state = {"pred": pred, "image": picture, "image_bytes": res.image.data if not res.image.problem else None,
             "model_version": Path(res.checkpoint).name}
    no_map = not sources or picture is None
    return (
        ui.status_message(res),
        ui.caption_text(res),
        gr.HighlightedText(value=ui.highlight_value(pred.tweet.tokens, pred.entities),
                           color_map=ui.colour_map(pred.entities)),
        gr.Dropdown(choices=choices, value=first, interactive=not no_map),
        gr.Radio(choices=sources or [ui.MAP_Q], value=(sources or [ui.MAP_Q])[0], interactive=not no_map),
        gr.Dropdown(choices=ui.head_choices(pred), value=ui.MEAN_HEADS, interactive=not no_map),
        heat,
        gr.Markdown(value=ui.map_note(res, sources), visible=no_map),
        ui.gate_frame(pred) if picture is not None else None,
        gr.Gallery(value=gallery or None, visible=bool(gallery)),
        ui.prediction_json(pred, Path(res.checkpoint).name, res.modalities),
        state,
    )


def predict_problem(message: str):
    """An input the app cannot tag: say why in the status line (and a toast), clear the old results. API callers get
    {"error": message} as the JSON output."""
    gr.Warning(message)
    return (f"⚠️ **{md_escape(message)}**", "", None, gr.Dropdown(choices=[], value=None), gr.Radio(),
            gr.Dropdown(), None, gr.Markdown(visible=False), None, gr.Gallery(value=None, visible=False),
            {"error": message}, None)


def on_rerender(state, choice, source, head):
    if not state or state.get("image") is None:
        return None
    try:
        return ui.to_jpeg_file(ui.render_heatmap(state["pred"], state["image"], choice, source, head))
    except UserError as err:
        raise gr.Error(str(err), print_exception=False) from None


def on_send(state, highlighted, url, key, project):
    if not state:
        return "Predict first: there is nothing to send."
    try:
        return md_escape(handoff.send_to_label_studio(state["pred"], state.get("image_bytes"), highlighted,
                                                      state["model_version"], project, url, key))
    except UserError as err:
        return md_escape(err)


def on_flush(url, key):
    return md_escape(handoff.flush_outbox(None, url, key))


def on_load():
    return md_escape(handoff.outbox_status())


def input_column(service: PredictService, checkpoints: list[str], examples: list[list[str]]) -> dict:
    """Image, text, caption override, model choice, Predict button, examples."""
    c = {"image": raw_image(label="Tweet image", sources=["upload", "clipboard"], height=300, elem_id="image-in"),
         "text": gr.Textbox(label="Tweet text", lines=3, max_lines=8, elem_id="tweet-text",
                            placeholder="e.g. Taylor Swift brought the house down at Madison Square Garden"),
         "caption": gr.Textbox(label="Alt text / caption override (optional)", elem_id="caption-in",
                               info="Used as the image's caption by the `given` caption source "
                                    "(and by sources that accept a given caption).")}
    with gr.Accordion("Model", open=False):
        c["checkpoint"] = gr.Dropdown(choices=checkpoints, value=service.default_checkpoint, allow_custom_value=True,
                                      label="Checkpoint folder",
                                      info="The default, or any folder written by save_pretrained.")
        c["caption_source"] = gr.Dropdown(choices=list(CAPTION_SOURCES), value=DEFAULT_SOURCE,
                                          allow_custom_value=True, label="Caption source",
                                          info="tags | given | lstm:<dir> | hf:<model id>")
    c["button"] = gr.Button("Predict", variant="primary", elem_id="predict-btn")
    if examples:
        gr.Examples(examples=examples, inputs=[c["image"], c["text"], c["caption"]],
                    label="Examples (procedurally drawn images)")
    return c


def result_column() -> dict:
    """Status, caption, entities, heatmap controls and picture, gate plot, caption attention, JSON."""
    r = {"status": gr.Markdown(elem_id="status"),
         "caption": gr.Textbox(label="Caption the model read", interactive=False, elem_id="caption-out")}
    gr.HTML(ui.legend_html(), padding=False)
    r["entities"] = gr.HighlightedText(label="Entities with confidence (select text or click a span to correct it; "
                                             "labels: PER, LOC, ORG, MISC)", interactive=True, show_legend=False,
                                       color_map=dict(ui.TYPE_COLOURS), elem_id="entities")
    with gr.Row():
        r["token"] = gr.Dropdown(label="Heatmap: where this word looked (7×7 image regions)", choices=[],
                                 value=None, elem_id="token-choice", scale=3)
        r["source"] = gr.Radio(label="Attention", choices=[ui.MAP_Q, ui.MAP_H], value=ui.MAP_Q,
                               elem_id="map-source", scale=3)
        r["head"] = gr.Dropdown(label="Head", choices=[ui.MEAN_HEADS], value=ui.MEAN_HEADS, elem_id="head-choice",
                                scale=2)
    r["heatmap"] = gr.Image(label="Attention heatmap", show_label=False, type="filepath", interactive=False,
                            elem_id="heatmap")
    r["map_note"] = gr.Markdown(visible=False)
    r["gate"] = gr.BarPlot(x="word", y="gate", color="type", color_map=ui.GATE_COLOURS, y_lim=[0, 1], sort=None,
                           x_label_angle=-60, x_title=" ", y_title="gate g", color_title=" ", height=260,
                           label="Visual gate per word: how much of the image each word lets through (mean of g "
                                 "over dimensions)", elem_id="gate-plot")
    r["gallery"] = gr.Gallery(label="Captioner's attention per caption word", columns=6, height=200, visible=False,
                              elem_id="caption-attention")
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


def build(demo: gr.Blocks, service: PredictService, checkpoints: list[str], examples: list[list[str]]) -> dict:
    """Lay out and wire the tab; returns the model controls the other tabs share."""
    with gr.Row():
        with gr.Column(scale=5):
            c = input_column(service, checkpoints, examples)
        with gr.Column(scale=6):
            r = result_column()
            ls = label_studio_box()
            with gr.Accordion("Prediction as JSON", open=False):
                raw = gr.JSON(label="prediction")
    state = gr.State()
    c["button"].click(partial(on_predict, service), [c["image"], c["text"], c["caption"], c["checkpoint"],
                                                     c["caption_source"]],
                      [r["status"], r["caption"], r["entities"], r["token"], r["source"], r["head"], r["heatmap"],
                       r["map_note"], r["gate"], r["gallery"], raw, state], api_name="predict", concurrency_limit=4)
    for control in (r["token"], r["source"], r["head"]):
        control.input(on_rerender, [state, r["token"], r["source"], r["head"]], r["heatmap"], api_name=False,
                      concurrency_limit=8)
    ls["send"].click(on_send, [state, r["entities"], ls["url"], ls["key"], ls["project"]], ls["status"],
                     api_name=False)
    ls["flush"].click(on_flush, [ls["url"], ls["key"]], ls["status"], api_name=False)
    demo.load(on_load, None, ls["status"], api_name=False)
    return {"checkpoint": c["checkpoint"], "caption_source": c["caption_source"]}
