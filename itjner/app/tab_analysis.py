"""The Error analysis tab: tag a labelled split, then P/R/F1, a confusion matrix and the tweets with errors."""
from __future__ import annotations

from functools import partial

import gradio as gr

from ..analysis import ERROR_KINDS, SCORE_HEADERS, filter_rows, score_table
from ..data import ENTITY_TYPES, Entity
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


def on_analyse(service: PredictService, server_paths: bool, split, images, checkpoint, caption_source, mode,
               progress=gr.Progress()):
    try:
        if not server_paths:
            raise UserError(PATHS_OFF)
        run = runs.run_analysis(service, split, images, checkpoint, caption_source, mode,
                                progress=lambda f, d: progress(f, desc=d))
    except UserError as err:  # the old results go: they are not the answer to this request
        return problem(err), None, None, [], None, None, []
    result = run.result
    rows, cols, matrix = result.confusion
    errors = result.error_rows
    n_err = sum(len(r["errors"]) for r in errors)
    summary = (f"**{len(run.tweets)} tweets**, {len(errors)} with errors ({n_err} chunk errors) · "
               f"overall F1 {result.scores['overall']['f1']:.2f} · {md_escape(run.image_summary)}")
    return (summary, score_table(result.scores),
            ui.confusion_figure(rows, cols, matrix, f"Gold vs predicted types ({mode} spans)"),
            runs.error_table(errors), run.jsonl, run, errors)


def on_filter(run, kinds, types):
    if run is None:
        return [], []
    rows = filter_rows(run.result.error_rows, kinds or [], types or None)
    return runs.error_table(rows), rows


def on_select(service: PredictService, run, shown, evt: gr.SelectData):
    if run is None or not shown or evt.index is None:
        return (None, None, "", gr.update(choices=[], value=None), None, "", None)
    row = shown[evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index]
    gold, predicted = runs.gold_pred_highlights(row)
    tweet = run.tweets[row["index"]]
    path = image_path(run.images_dir, tweet.image_id)
    image = read_image_file(str(path) if path is not None and path.is_file() else None)
    try:
        res = service.predict_tokens(list(tweet.tokens), image, None, run.checkpoint, run.caption_source,
                                     image_id=tweet.image_id)
    except UserError as err:
        return (gold, None, problem(err), gr.update(choices=[], value=None), None, "", None)
    pred = res.prediction
    choices = ui.token_choices(pred)
    first = first_error_choice(row) or (choices[0][1] if choices else None)
    picture = image.image if res.uses_image else None
    heat = ui.render_heatmap(pred, picture, first) if ui.map_sources(pred) and picture is not None else None
    why = md_escape(image.problem or "image not used")
    note = (f"Tweet #{row['index']} (image {md_code(tweet.image_id)}): "
            + ("; ".join(f"{e['kind']}" for e in row["errors"]) or "no errors")
            + ("" if picture is not None else f" · no heatmap ({why})"))
    predicted = gr.update(value=predicted, color_map=ui.colour_map(
        [Entity(c["start"], c["end"], c["type"], c.get("score")) for c in row["pred"]]))
    return (gold, predicted, note, gr.update(choices=choices, value=first),
            ui.to_jpeg_file(heat.picture) if heat else None, ui.heatmap_html(heat), {"pred": pred, "image": picture})


def first_error_choice(row):
    """The first error's predicted entity (a choice of its own), else the first word of its gold chunk."""
    for err in row["errors"]:
        if err["pred"]:
            return f"e:{err['pred']['start']}:{err['pred']['end']}"
        if err["gold"]:
            return f"w:{err['gold']['start']}"
    return None


def on_token(state, choice):
    if not state or state.get("image") is None:
        return None, ""
    try:
        heat = ui.render_heatmap(state["pred"], state["image"], choice)
    except UserError as err:
        return None, problem(err)
    return (ui.to_jpeg_file(heat.picture) if heat else None), ui.heatmap_html(heat)


def build(service: PredictService, model: dict, server_paths: bool) -> None:
    paths_note = "" if server_paths else f"\n\n⚠️ {PATHS_OFF}"
    gr.Markdown("Tag a labelled split (Twitter CoNLL: `IMGID:` lines, `token<TAB>tag`) and look at the errors."
                " Paths are on the machine running the app." + paths_note)
    with gr.Row():
        split = gr.Textbox(label="CoNLL split file", placeholder="data/twitter2017/test.txt", scale=3)
        images_dir = gr.Textbox(label="Images folder (optional)", placeholder="folder with <IMGID>.jpg", scale=3)
        mode = gr.Radio(["exact", "overlap"], value="exact", label="Confusion pairs", scale=2,
                        info="exact: same span only; overlap: also overlapping spans")
    analyse_btn = gr.Button("Run analysis", variant="primary")
    summary = gr.Markdown(elem_id="analysis-summary")
    with gr.Row():
        scores = gr.Dataframe(headers=SCORE_HEADERS, label="P / R / F1 per type", interactive=False)
        confusion = gr.Plot(label="Confusion matrix", format="png")
    jsonl = gr.File(label="Results (JSONL, one row per tweet)")
    with gr.Row():
        kinds = gr.CheckboxGroup(list(ERROR_KINDS), value=list(ERROR_KINDS), label="Error kinds")
        types = gr.CheckboxGroup(list(ENTITY_TYPES), value=list(ENTITY_TYPES), label="Types involved")
    table = gr.Dataframe(headers=runs.ERROR_HEADERS, label="Tweets with errors (click one)", interactive=False,
                         wrap=True, max_height=360, elem_id="error-table")
    detail = gr.Markdown()
    with gr.Row():
        gold_hl = gr.HighlightedText(label="Gold", color_map=dict(ui.TYPE_COLOURS), show_legend=True,
                                     elem_id="gold-hl")
        pred_hl = gr.HighlightedText(label="Predicted", color_map=dict(ui.TYPE_COLOURS), elem_id="pred-hl")
    with gr.Row():
        a_token = gr.Dropdown(label="Heatmap for", choices=[], value=None)
        with gr.Column():
            a_heat = gr.Image(label="Text-guided image attention (mean of heads)", show_label=False,
                              type="filepath", interactive=False, elem_id="analysis-heatmap")
            a_legend = gr.HTML(padding=False)
    run_state, shown_state, a_state = gr.State(), gr.State(), gr.State()
    analyse_btn.click(partial(on_analyse, service, server_paths),
                      [split, images_dir, model["checkpoint"], model["caption_source"], mode],
                      [summary, scores, confusion, table, jsonl, run_state, shown_state], api_name="analyse")
    for box in (kinds, types):
        box.input(on_filter, [run_state, kinds, types], [table, shown_state], api_name=False)
    def select(run, shown, evt: gr.SelectData):  # a plain function: Gradio finds SelectData by its annotation
        return on_select(service, run, shown, evt)

    table.select(select, [run_state, shown_state],
                 [gold_hl, pred_hl, detail, a_token, a_heat, a_legend, a_state], api_name=False)
    a_token.input(on_token, [a_state, a_token], [a_heat, a_legend], api_name=False)
