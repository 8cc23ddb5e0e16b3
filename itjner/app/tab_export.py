"""The Pre-annotation export tab: a file of tweets -> a Label Studio tasks.json with the predictions."""
from __future__ import annotations

from functools import partial

import gradio as gr

from ..labelstudio.tasks import LABEL_CONFIG
from . import runs
from .messages import UserError
from .service import PredictService
from .tab_analysis import PATHS_OFF, problem


def on_export(service: PredictService, server_paths: bool, data, images, checkpoint, caption_source, order,
              progress=gr.Progress(track_tqdm=True)):
    try:
        if not server_paths:
            raise UserError(PATHS_OFF)
        path, n = runs.run_export(service, data, images, checkpoint, caption_source, order)
    except UserError as err:  # no stale file beside the message
        return None, problem(err)
    return path, (f"Wrote {n} task(s). In Label Studio, create a project with the labeling config below, then "
                  "import this file.")


def build(service: PredictService, model: dict, server_paths: bool) -> None:
    gr.Markdown("Tag a file of tweets and write a Label Studio `tasks.json` with the predictions as "
                "pre-annotations (no server needed)." + ("" if server_paths else f"\n\n⚠️ {PATHS_OFF}"))
    with gr.Row():
        data = gr.Textbox(label="Tweets (CoNLL, JSONL or CSV)", scale=3)
        images = gr.Textbox(label="Images folder (optional)", scale=3)
        order = gr.Radio(["file", "uncertainty"], value="file", label="Task order", scale=2)
    export_btn = gr.Button("Export")
    tasks_file = gr.File(label="tasks.json", elem_id="export-file")
    message = gr.Markdown(elem_id="export-status")
    gr.Code(LABEL_CONFIG, language="html", label="Labeling config", interactive=False)
    export_btn.click(partial(on_export, service, server_paths),
                     [data, images, model["checkpoint"], model["caption_source"], order], [tasks_file, message],
                     api_name="export")
