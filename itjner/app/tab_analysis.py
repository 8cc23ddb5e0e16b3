"""The Error analysis tab: tag a labelled split, then P/R/F1, a confusion matrix and the tweets with errors."""
from __future__ import annotations

from functools import partial

import gradio as gr

from ..analysis import ERROR_KINDS, SCORE_HEADERS, filter_rows, score_table
from ..data import ENTITY_TYPES, Entity
from ..checkpoints import describe
from ..images import image_path
from . import runs
from . import views as ui
from .messages import UserError, md_code, md_escape
from .service import PredictService, read_image_file

PATHS_OFF = ("This app listens on a non-local interface, so the tabs that read paths on the server are off. "
             "Restart it with --allow-server-paths to enable them (anyone who can reach the app can then make it "
             "read files on this machine).")


def problem(message: Exception | str) -> str:
    """A message for the tab's status line: it stays until the next run (a toast would vanish)."""
    return f"⚠️ **{md_escape(message)}**"


# The analysis handler's outputs, in order; the API (`/analyse`) returns them less the states and the layout group.
ANALYSE_OUTPUTS = ("summary", "scores", "confusion", "table", "jsonl", "run", "shown", "detail_group")
ANALYSE_API_OUTPUTS = ("summary", "scores", "confusion", "table", "jsonl")


def on_analyse(service: PredictService, server_paths: bool, w: dict, split, images, checkpoint, mode,
               progress=gr.Progress()) -> dict:
    """Tag a labelled split with the model picked in this tab; scores, confusion matrix, the tweets with errors."""
    try:
        if not server_paths:
            raise UserError(PATHS_OFF)
        run = runs.run_analysis(service, split, images, checkpoint, None, mode,
                                progress=lambda f, d: progress(f, desc=d))
    except UserError as err:  # the old results go: they are not the answer to this request
        return {w["summary"]: problem(err), w["scores"]: None, w["confusion"]: None, w["table"]: [],
                w["jsonl"]: None, w["run"]: None, w["shown"]: [], w["detail_group"]: gr.update(visible=False)}
    result = run.result
    rows, cols, matrix = result.confusion
    errors = result.error_rows
    n_err = sum(len(r["errors"]) for r in errors)
    summary = (f"**{len(run.tweets)} tweets** tagged by {md_code(describe(run.checkpoint))}: {len(errors)} with "
               f"errors ({n_err} chunk errors) · overall F1 {result.scores['overall']['f1']:.2f} · "
               f"{md_escape(run.image_summary)}")
    return {w["summary"]: summary, w["scores"]: score_table(result.scores),
            w["confusion"]: ui.confusion_figure(rows, cols, matrix, f"Gold vs predicted types ({mode} spans)"),
            w["table"]: runs.error_table(errors), w["jsonl"]: run.jsonl, w["run"]: run, w["shown"]: errors,
            w["detail_group"]: gr.update(visible=False)}


def on_filter(run, kinds, types):
    if run is None:
        return [], []
    rows = filter_rows(run.result.error_rows, kinds or [], types or None)
    return runs.error_table(rows), rows


def on_select(service: PredictService, w: dict, run, shown, evt: gr.SelectData) -> dict:
    """One tweet of the error table: gold and predicted spans, and (when the model reads images) its heatmap."""
    if run is None or not shown or evt.index is None:
        return {w["detail_group"]: gr.update(visible=False)}
    row = shown[evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index]
    gold, predicted = runs.gold_pred_highlights(row)
    tweet = run.tweets[row["index"]]
    predicted = gr.update(value=predicted, color_map=ui.colour_map(
        [Entity(c["start"], c["end"], c["type"], c.get("score")) for c in row["pred"]]))
    note = (f"Tweet #{row['index']} (image {md_code(tweet.image_id)}): "
            + ("; ".join(f"{e['kind']}" for e in row["errors"]) or "no errors"))
    out = {w["detail_group"]: gr.update(visible=True), w["gold"]: gold, w["predicted"]: predicted,
           w["heat_group"]: gr.update(visible=False), w["a_state"]: None}
    if not run.reads_images:
        return {**out, w["detail"]: note + " · the model reads no images: no heatmap"}
    path = image_path(run.images_dir, tweet.image_id)
    image = read_image_file(str(path) if path is not None and path.is_file() else None)
    try:
        res = service.predict_tokens(list(tweet.tokens), image, None, run.checkpoint, run.caption_source,
                                     image_id=tweet.image_id)
    except UserError as err:
        return {**out, w["detail"]: problem(err)}
    pred = res.prediction
    choices = ui.token_choices(pred)
    first = first_error_choice(row) or (choices[0][1] if choices else None)
    picture = image.image if res.uses_image else None
    heat = ui.render_heatmap(pred, picture, first) if ui.map_sources(pred) and picture is not None else None
    if heat is None:
        return {**out, w["detail"]: note + f" · no heatmap ({md_escape(image.problem or 'image not used')})"}
    return {**out, w["detail"]: note, w["heat_group"]: gr.update(visible=True),
            w["a_token"]: gr.update(choices=choices, value=first), w["a_heat"]: ui.to_jpeg_file(heat.picture),
            w["a_legend"]: ui.heatmap_html(heat), w["a_state"]: {"pred": pred, "image": picture}}


def first_error_choice(row):
    """The first error's predicted entity (a choice of its own), else the first word of its gold chunk."""
    for err in row["errors"]:
        if err["pred"]:
            return f"e:{err['pred']['start']}:{err['pred']['end']}"
        if err["gold"]:
            return f"w:{err['gold']['start']}"
    return None


def on_token(w: dict, state, choice) -> dict:
    if not state or state.get("image") is None:
        return {w["a_heat"]: None, w["a_legend"]: ""}
    try:
        heat = ui.render_heatmap(state["pred"], state["image"], choice)
    except UserError as err:
        return {w["a_heat"]: None, w["a_legend"]: problem(err)}
    return {w["a_heat"]: ui.to_jpeg_file(heat.picture) if heat else None, w["a_legend"]: ui.heatmap_html(heat)}


def build(service: PredictService, checkpoints: list[tuple[str, str]], server_paths: bool) -> None:
    paths_note = "" if server_paths else f"\n\n⚠️ {PATHS_OFF}"
    gr.Markdown("Tag a labelled split (Twitter CoNLL: `IMGID:` lines, `token<TAB>tag`) and look at the errors."
                " Paths are on the machine running the app." + paths_note)
    w: dict = {}
    with gr.Row():
        split = gr.Textbox(label="CoNLL split file", placeholder="data/twitter2017/test.txt", scale=3)
        images_dir = gr.Textbox(label="Images folder (optional)", placeholder="folder with <IMGID>.jpg", scale=3)
        mode = gr.Radio(["exact", "overlap"], value="exact", label="Confusion pairs", scale=2,
                        info="exact: same span only; overlap: also overlapping spans")
    model = gr.Dropdown(choices=checkpoints, value=service.default_checkpoint, allow_custom_value=True,
                        label="Model to analyse", elem_id="analysis-model")
    analyse_btn = gr.Button("Run analysis", variant="primary")
    w["summary"] = gr.Markdown(elem_id="analysis-summary")
    with gr.Row():
        w["scores"] = gr.Dataframe(headers=SCORE_HEADERS, label="P / R / F1 per type", interactive=False)
        w["confusion"] = gr.Plot(label="Confusion matrix", format="png")
    w["jsonl"] = gr.File(label="Results (JSONL, one row per tweet)", elem_id="analysis-jsonl")
    with gr.Row():
        kinds = gr.CheckboxGroup(list(ERROR_KINDS), value=list(ERROR_KINDS), label="Error kinds")
        types = gr.CheckboxGroup(list(ENTITY_TYPES), value=list(ENTITY_TYPES), label="Types involved")
    w["table"] = gr.Dataframe(headers=runs.ERROR_HEADERS, label="Tweets with errors (click one)", interactive=False,
                              wrap=True, max_height=360, elem_id="error-table")
    with gr.Column(visible=False) as w["detail_group"]:
        w["detail"] = gr.Markdown()
        with gr.Row():
            w["gold"] = gr.HighlightedText(label="Gold", color_map=dict(ui.TYPE_COLOURS), show_legend=True,
                                           elem_id="gold-hl", elem_classes=["itjner-entities"])
            w["predicted"] = gr.HighlightedText(label="Predicted", color_map=dict(ui.TYPE_COLOURS),
                                                elem_id="pred-hl", elem_classes=["itjner-entities"])
        with gr.Row(visible=False) as w["heat_group"]:
            w["a_token"] = gr.Dropdown(label="Heatmap for", choices=[], value=None)
            with gr.Column():
                w["a_heat"] = gr.Image(label="Text-guided image attention (mean of heads)", show_label=False,
                                       type="filepath", interactive=False, elem_id="analysis-heatmap")
                w["a_legend"] = gr.HTML(padding=False)
    w["run"], w["shown"], w["a_state"] = gr.State(), gr.State(), gr.State()
    analyse_btn.click(partial(on_analyse, service, server_paths, w), [split, images_dir, model, mode],
                      [w[name] for name in ANALYSE_OUTPUTS], api_name="analyse")
    for box in (kinds, types):
        box.input(on_filter, [w["run"], kinds, types], [w["table"], w["shown"]], api_name=False)

    def select(run, shown, evt: gr.SelectData):  # a plain function: Gradio finds SelectData by its annotation
        return on_select(service, w, run, shown, evt)

    w["table"].select(select, [w["run"], w["shown"]],
                      [w[k] for k in ("detail_group", "detail", "gold", "predicted", "heat_group", "a_token",
                                      "a_heat", "a_legend", "a_state")], api_name=False)
    w["a_token"].input(partial(on_token, w), [w["a_state"], w["a_token"]], [w["a_heat"], w["a_legend"]],
                       api_name=False)
