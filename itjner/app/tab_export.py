"""The Pre-annotation export tab: a file of tweets -> a Label Studio tasks.json with the predictions."""
from __future__ import annotations

from functools import partial

import gradio as gr

from ..checkpoints import describe
from ..labelstudio.tasks import LABEL_CONFIG
from . import runs
from .messages import UserError, md_code
from .service import PredictService
from .tab_analysis import PATHS_OFF, problem


def on_export(service: PredictService, server_paths: bool, data, images, checkpoint, order,
              progress=gr.Progress(track_tqdm=True)):
    try:
        if not server_paths:
            raise UserError(PATHS_OFF)
        path, n = runs.run_export(service, data, images, checkpoint, None, order)
    except UserError as err:  # no stale file beside the message
        return None, problem(err)
    return path, (f"Wrote {n} task(s) with the predictions of {md_code(describe(service.resolve(checkpoint)))}. In "
                  "Label Studio, create a project with the labeling config below, then import this file.")


def build(service: PredictService, checkpoints: list[tuple[str, str]], server_paths: bool) -> None:
    gr.Markdown("Tag a file of tweets and write a Label Studio `tasks.json` with the predictions as "
                "pre-annotations (no server needed)." + ("" if server_paths else f"\n\n⚠️ {PATHS_OFF}"))
    with gr.Row():
        data = gr.Textbox(label="Tweets (CoNLL, JSONL or CSV)", scale=3)
        images = gr.Textbox(label="Images folder (optional)", scale=3)
        order = gr.Radio(["file", "uncertainty"], value="file", label="Task order", scale=2)
    model = gr.Dropdown(choices=checkpoints, value=service.default_checkpoint, allow_custom_value=True,
                        label="Model that pre-annotates", elem_id="export-model")
    export_btn = gr.Button("Export")
    tasks_file = gr.File(label="tasks.json", elem_id="export-file")
    message = gr.Markdown(elem_id="export-status")
    gr.Code(LABEL_CONFIG, language="html", label="Labeling config", interactive=False)
    export_btn.click(partial(on_export, service, server_paths), [data, images, model, order],
                     [tasks_file, message], api_name="export")
