"""The Blocks app: a header and one tab per function (tab_predict, tab_analysis, tab_export)."""
from __future__ import annotations

import json

import gradio as gr

from ..checkpoints import REPO, describe
from . import tab_analysis, tab_export, tab_predict
from .service import PredictService

TITLE = "ITJNER: image-text NER for tweets"
EXAMPLES = REPO / "examples"


def load_examples() -> list[list[str]]:
    path = EXAMPLES / "examples.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if (EXAMPLES / row["image"]).is_file():
                rows.append([str(EXAMPLES / row["image"]), row["text"]])
    return rows


# Ctrl+Enter (Cmd+Enter on a Mac) in the tweet box predicts, as in most chat and search boxes.
KEYS_JS = """
<script>
document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
  if (!event.target.closest || !event.target.closest("#tweet-text, #caption-in")) return;
  event.preventDefault();
  document.querySelector("#predict-btn")?.click();
});
</script>
"""


# On a phone the examples table fits the screen: cells wrap instead of pushing the table wider than the page.
# Highlighted text wraps between words (Gradio's default breaks anywhere: "Bara ck"); a word longer than the line
# (a URL) still breaks. Entity chips meet WCAG AA (>= 4.5:1): a span's label is black on its full type colour; Gradio
# draws the span itself in its type colour at half opacity, which over the dark theme's grey gives a mid tone (LOC:
# 4.3:1 with black or white text), so in dark mode a 40% black layer darkens it and the text is white (light mode:
# black on the pale blend). tests/integration/test_browser.py measures both themes.
CSS = """
@media (max-width: 640px) {
  #examples .table-wrap table { width: 100% !important; min-width: 0 !important; table-layout: fixed; }
  #examples .table-wrap th, #examples .table-wrap td {
    white-space: normal !important; overflow-wrap: anywhere; padding: 4px !important; min-width: 0 !important; }
  #examples .table-wrap img { max-width: 64px; height: auto; }
}
.itjner-entities .textfield { word-break: normal !important; overflow-wrap: anywhere; }
.itjner-entities .token .label { color: #000 !important; }
.dark .itjner-entities .token.highlighted { color: #fff !important;
  background-image: linear-gradient(rgba(0, 0, 0, 0.4), rgba(0, 0, 0, 0.4)); }
"""


def header() -> str:
    return ("## ITJNER · named entities in tweets, read with their images\n"
            "Image-text joint NER (Zhong et al., 2022). A model that reads images attends from the text to the "
            "photo's 7×7 regions and to a caption of it, and a visual gate decides per word how much of the image to "
            "use; a text-only model reads the words alone. Each tab says which model it runs and what it reads.")


def build_demo(service: PredictService, checkpoints: list[str] | None = None,
               examples: list[list[str]] | None = None, server_paths: bool = True) -> gr.Blocks:
    """`server_paths` False turns off the tabs that read server-side paths (analysis, export). The model picker
    lists `checkpoints` by name and what their cards say."""
    checkpoints = checkpoints or [service.default_checkpoint]
    choices = [(describe(c), c) for c in checkpoints]
    examples = load_examples() if examples is None else examples
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(header(), elem_id="header")
        with gr.Tab("Predict"):
            tab_predict.build(demo, service, choices, examples)
        with gr.Tab("Error analysis"):
            tab_analysis.build(service, choices, server_paths)
        with gr.Tab("Pre-annotation export"):
            tab_export.build(service, choices, server_paths)
    return demo
