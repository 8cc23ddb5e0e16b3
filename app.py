"""ITJNER demo: tag a tweet with its image, see where each word looked, analyse errors on a labelled split.

    python app.py [--checkpoint DIR] [--host 127.0.0.1] [--port 7860] [--device cpu|cuda] [--caption-source SPEC]

The model is loaded once at start; the app binds 127.0.0.1 unless told otherwise (it reads server-side paths in the
error-analysis and export tabs: expose it only to people you would give a shell). Layout and event wiring only:
the logic is in itjner/app_ui.py.
"""
import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no calls home at launch
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent
EXAMPLES = REPO / "examples"
TYPE_ROWS = ["PER", "LOC", "ORG", "MISC"]


def default_checkpoint() -> Path:
    try:
        from itjner.predict import DEFAULT_CHECKPOINT
    except ImportError:  # pragma: no cover
        return REPO / "assets" / "itjner-lite-twitter2017"
    return Path(DEFAULT_CHECKPOINT)


def missing_checkpoint_message(path: Path) -> str:
    return (f"No ITJNER checkpoint at {path}.\n"
            "Get one by training it (CPU, offline; ~10-20 min for the lite preset on Twitter-2017):\n"
            f"  python -m itjner train --preset lite --data ../shared/data/twitter2017 --out {path}\n"
            "or start the app on any folder written by `python -m itjner train --out DIR` / save_pretrained:\n"
            "  python app.py --checkpoint DIR")


def load_examples() -> list[list[str]]:
    path = EXAMPLES / "examples.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if (EXAMPLES / row["image"]).is_file():
                rows.append([str(EXAMPLES / row["image"]), row["text"], row.get("caption", "")])
    return rows


def raw_image(**kwargs):
    """A gr.Image whose value reaches Python as the uploaded file's path, untouched. Stock gr.Image opens (and in
    RGB mode re-encodes) the upload before our code runs, so a corrupt or huge file would fail with Gradio's message
    instead of ours, and the bytes (the feature cache key) could change. Overridden on the instance, not by
    subclassing: a component subclass makes Gradio write a .pyi stub next to this file."""
    import types

    import gradio as gr

    component = gr.Image(type="filepath", image_mode=None, **kwargs)

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.path:
            return str(payload.path)
        if payload.url and payload.url.startswith("data:"):
            _, _, b64 = payload.url.partition(",")
            fd, name = tempfile.mkstemp(prefix="upload-", dir=self.GRADIO_CACHE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(base64.b64decode(b64))
            return name
        return None

    component.preprocess = types.MethodType(preprocess, component)
    return component


PATHS_OFF = ("This app listens on a non-local interface, so the tabs that read paths on the server are off. "
             "Restart it with --allow-server-paths to enable them (anyone who can reach the app can then make it "
             "read files on this machine).")


def build_demo(service, checkpoints: list[str] | None = None, examples: list[list[str]] | None = None,
               server_paths: bool = True):
    """The Blocks app. `server_paths` False turns off the tabs that read server-side paths (analysis, export)."""
    import gradio as gr

    from itjner import app_ui as ui
    from itjner.analysis import ERROR_KINDS, SCORE_HEADERS, filter_rows, score_table

    checkpoints = checkpoints or [service.default_checkpoint]
    examples = load_examples() if examples is None else examples

    def fail(err: Exception | str):
        raise gr.Error(str(err), print_exception=False)

    # ---------------------------------------------------------------------------------------------- predict
    def on_predict(image, text, caption, checkpoint, caption_source):
        try:
            res = service.predict(text, image, caption, checkpoint, caption_source)
        except ui.UserError as err:
            return predict_problem(str(err))
        pred = res.prediction
        tokens = pred.tweet.tokens
        choices = ui.token_choices(pred)
        first = choices[0][1] if choices else None
        sources = ui.map_sources(pred)
        heads = ui.head_choices(pred)
        picture = res.image.image if res.uses_image else None
        heat = ui.to_jpeg_file(ui.render_heatmap(pred, picture, first, ui.MAP_Q, ui.MEAN_HEADS)) if sources else None
        gallery = ui.caption_gallery(pred, res.image.image)
        state = {"pred": pred, "image": picture, "image_bytes": res.image.data if not res.image.problem else None,
                 "model_version": Path(res.checkpoint).name}
        no_map = not sources or picture is None
        return (
            ui.status_message(res),
            ui.caption_text(res),
            gr.HighlightedText(value=ui.highlight_value(tokens, pred.entities),
                               color_map=ui.colour_map(pred.entities)),
            gr.Dropdown(choices=choices, value=first, interactive=not no_map),
            gr.Radio(choices=sources or [ui.MAP_Q], value=(sources or [ui.MAP_Q])[0], interactive=not no_map),
            gr.Dropdown(choices=heads, value=ui.MEAN_HEADS, interactive=not no_map),
            heat,
            gr.Markdown(value=_map_note(res, sources), visible=no_map),
            ui.gate_frame(pred) if picture is not None else None,
            gr.Gallery(value=gallery or None, visible=bool(gallery)),
            ui.prediction_json(pred, Path(res.checkpoint).name, res.modalities),
            state,
        )

    def predict_problem(message: str):
        """An input the app cannot tag: say why in the status line (and a toast), clear the old results. API
        callers get {"error": message} as the JSON output."""
        gr.Warning(message)
        return (f"⚠️ **{ui.md_escape(message)}**", "", None, gr.Dropdown(choices=[], value=None), gr.Radio(),
                gr.Dropdown(), None, gr.Markdown(visible=False), None, gr.Gallery(value=None, visible=False),
                {"error": message}, None)

    def _map_note(res, sources) -> str:
        if not res.uses_image:
            return "No heatmap: this checkpoint does not use the image."
        if res.image.image is None:
            return "No heatmap: no usable image."
        if not sources:
            return "No heatmap: this checkpoint returns no attention maps."
        return ""

    def on_rerender(state, choice, source, head):
        if not state or state.get("image") is None:
            return None
        try:
            return ui.to_jpeg_file(ui.render_heatmap(state["pred"], state["image"], choice, source, head))
        except ui.UserError as err:
            fail(err)

    def on_send(state, highlighted, url, key, project):
        if not state:
            return "Predict first: there is nothing to send."
        try:
            return ui.md_escape(ui.send_to_label_studio(state["pred"], state.get("image_bytes"), highlighted,
                                                        state["model_version"], project, url, key))
        except ui.UserError as err:
            return ui.md_escape(err)

    def on_flush(url, key):
        return ui.md_escape(ui.flush_outbox(None, url, key))

    def on_load():
        return ui.md_escape(ui.outbox_status())

    # ---------------------------------------------------------------------------------------------- analysis
    def on_analyse(split, images, checkpoint, caption_source, mode, progress=gr.Progress()):
        if not server_paths:
            fail(PATHS_OFF)
        try:
            run = ui.run_analysis(service, split, images, checkpoint, caption_source, mode,
                                  progress=lambda f, d: progress(f, desc=d))
        except ui.UserError as err:
            fail(err)
        result = run.result
        rows, cols, matrix = result.confusion
        errors = result.error_rows
        n_err = sum(len(r["errors"]) for r in errors)
        summary = (f"**{len(run.tweets)} tweets**, {len(errors)} with errors ({n_err} chunk errors) · "
                   f"overall F1 {result.scores['overall']['f1']:.2f} · {ui.md_escape(run.image_summary)}")
        return (summary, score_table(result.scores),
                ui.confusion_figure(rows, cols, matrix, f"Gold vs predicted types ({mode} spans)"),
                ui.error_table(errors), run.jsonl, run, errors)

    def on_filter(run, kinds, types):
        if run is None:
            return [], []
        rows = filter_rows(run.result.error_rows, kinds or [], types or None)
        return ui.error_table(rows), rows

    def on_select(run, shown, evt: gr.SelectData):
        empty = (None, None, "", gr.Dropdown(choices=[], value=None), None, None)
        if run is None or not shown or evt.index is None:
            return empty
        row = shown[evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index]
        gold, predicted = ui.gold_pred_highlights(row)
        tweet = run.tweets[row["index"]]
        image = ui.read_image_file(_image_file(run.images_dir, tweet.image_id))
        try:
            res = service.predict_tokens(list(tweet.tokens), image, None, run.checkpoint, run.caption_source,
                                         image_id=tweet.image_id)
        except ui.UserError as err:
            fail(err)
        pred = res.prediction
        choices = ui.token_choices(pred)
        first = _first_error_choice(row) or (choices[0][1] if choices else None)
        picture = image.image if res.uses_image else None
        heat = (ui.to_jpeg_file(ui.render_heatmap(pred, picture, first))
                if ui.map_sources(pred) and picture is not None else None)
        why = ui.md_escape(image.problem or "image not used")
        note = (f"Tweet #{row['index']} (image {ui.md_code(tweet.image_id)}): "
                + ("; ".join(f"{e['kind']}" for e in row["errors"]) or "no errors")
                + ("" if picture is not None else f" · no heatmap ({why})"))
        state = {"pred": pred, "image": picture}
        predicted = gr.HighlightedText(value=predicted, color_map=ui.colour_map(
            [ui.Entity(c["start"], c["end"], c["type"], c.get("score")) for c in row["pred"]]))
        return (gold, predicted, note, gr.Dropdown(choices=choices, value=first), heat, state)

    def _first_error_choice(row):
        """The first error's predicted entity (a choice of its own), else the first word of its gold chunk."""
        for err in row["errors"]:
            if err["pred"]:
                return f"e:{err['pred']['start']}:{err['pred']['end']}"
            if err["gold"]:
                return f"w:{err['gold']['start']}"
        return None

    def on_analysis_token(state, choice):
        if not state or state.get("image") is None:
            return None
        try:
            return ui.to_jpeg_file(ui.render_heatmap(state["pred"], state["image"], choice))
        except ui.UserError as err:
            fail(err)

    def on_export(data, images, checkpoint, caption_source, order, progress=gr.Progress(track_tqdm=True)):
        if not server_paths:
            fail(PATHS_OFF)
        try:
            path, n = ui.run_export(service, data, images, checkpoint, caption_source, order)
        except ui.UserError as err:
            fail(err)
        return path, f"Wrote {n} task(s). In Label Studio, create a project with the labeling config below, then " \
                     "import this file."

    # ------------------------------------------------------------------------------------------------ layout
    with gr.Blocks(title="ITJNER: image-text NER for tweets") as demo:
        gr.Markdown("## ITJNER · named entities in tweets, read with their images\n"
                    "Image-text joint NER (Zhong et al., 2022): the text attends to the image's 7×7 regions and to a "
                    "caption of it; a visual gate decides per word how much of the image to use.")
        with gr.Tab("Predict"):
            with gr.Row():
                with gr.Column(scale=5):
                    image = raw_image(label="Tweet image", sources=["upload", "clipboard"], height=300,
                                      elem_id="image-in")
                    text = gr.Textbox(label="Tweet text", lines=3, max_lines=8, elem_id="tweet-text",
                                      placeholder="e.g. Taylor Swift brought the house down at Madison Square Garden")
                    caption_in = gr.Textbox(label="Alt text / caption override (optional)", elem_id="caption-in",
                                            info="Used as the image's caption by the `given` caption source "
                                                 "(and by sources that accept a given caption).")
                    with gr.Accordion("Model", open=False):
                        checkpoint = gr.Dropdown(choices=checkpoints, value=service.default_checkpoint,
                                                 allow_custom_value=True, label="Checkpoint folder",
                                                 info="The default, or any folder written by save_pretrained.")
                        caption_source = gr.Dropdown(choices=list(ui.CAPTION_SOURCES), value=ui.DEFAULT_SOURCE,
                                                     allow_custom_value=True, label="Caption source",
                                                     info="tags | given | lstm:<dir> | hf:<model id>")
                    predict_btn = gr.Button("Predict", variant="primary", elem_id="predict-btn")
                    if examples:
                        gr.Examples(examples=examples, inputs=[image, text, caption_in], label="Examples "
                                    "(procedurally drawn images)")
                with gr.Column(scale=6):
                    status = gr.Markdown(elem_id="status")
                    caption_out = gr.Textbox(label="Caption the model read", interactive=False, elem_id="caption-out")
                    gr.HTML(ui.legend_html(), padding=False)
                    entities = gr.HighlightedText(label="Entities with confidence (select text or click a span to "
                                                        "correct it; labels: PER, LOC, ORG, MISC)", interactive=True,
                                                  show_legend=False, color_map=dict(ui.TYPE_COLOURS),
                                                  elem_id="entities")
                    with gr.Row():
                        token = gr.Dropdown(label="Heatmap: where this word looked (7×7 image regions)", choices=[],
                                            value=None, elem_id="token-choice", scale=3)
                        source = gr.Radio(label="Attention", choices=[ui.MAP_Q, ui.MAP_H], value=ui.MAP_Q,
                                          elem_id="map-source", scale=3)
                        head = gr.Dropdown(label="Head", choices=[ui.MEAN_HEADS], value=ui.MEAN_HEADS,
                                           elem_id="head-choice", scale=2)
                    heatmap = gr.Image(label="Attention heatmap", show_label=False, type="filepath",
                                       interactive=False, elem_id="heatmap")
                    map_note = gr.Markdown(visible=False)
                    gate_plot = gr.BarPlot(x="word", y="gate", color="type", color_map=ui.GATE_COLOURS,
                                           y_lim=[0, 1], sort=None, x_label_angle=-60, x_title=" ",
                                           y_title="gate g", color_title=" ", height=260,
                                           label="Visual gate per word: how much of the image each word lets "
                                                 "through (mean of g over dimensions)", elem_id="gate-plot")
                    gallery = gr.Gallery(label="Captioner's attention per caption word", columns=6, height=200,
                                         visible=False, elem_id="caption-attention")
                    with gr.Accordion("Send to Label Studio", open=False):
                        with gr.Row():
                            ls_url = gr.Textbox(label="Label Studio URL", value=os.environ.get("LABEL_STUDIO_URL", ""),
                                                placeholder="http://localhost:8080")
                            ls_key = gr.Textbox(label="API key", type="password", value="",
                                                placeholder="empty: use $LABEL_STUDIO_API_KEY")
                            ls_project = gr.Number(label="Project id", precision=0)
                        with gr.Row():
                            send_btn = gr.Button("Send to Label Studio", elem_id="send-ls")
                            flush_btn = gr.Button("Retry queued", size="sm")
                        ls_status = gr.Markdown(elem_id="ls-status")
                    with gr.Accordion("Prediction as JSON", open=False):
                        raw = gr.JSON(label="prediction")
            state = gr.State()

            predict_btn.click(on_predict, [image, text, caption_in, checkpoint, caption_source],
                              [status, caption_out, entities, token, source, head, heatmap, map_note, gate_plot,
                               gallery, raw, state], api_name="predict", concurrency_limit=4)
            for control in (token, source, head):
                control.input(on_rerender, [state, token, source, head], heatmap, api_name=False,
                              concurrency_limit=8)
            send_btn.click(on_send, [state, entities, ls_url, ls_key, ls_project], ls_status, api_name=False)
            flush_btn.click(on_flush, [ls_url, ls_key], ls_status, api_name=False)
            demo.load(on_load, None, ls_status, api_name=False)

        with gr.Tab("Error analysis"):
            paths_note = "" if server_paths else f"\n\n⚠️ {PATHS_OFF}"
            gr.Markdown("Tag a labelled split (Twitter CoNLL: `IMGID:` lines, `token<TAB>tag`) and look at the errors."
                        " Paths are on the machine running the app." + paths_note)
            with gr.Row():
                split = gr.Textbox(label="CoNLL split file", placeholder="../shared/data/twitter2017/test.txt",
                                   scale=3)
                images_dir = gr.Textbox(label="Images folder (optional)", placeholder="folder with <IMGID>.jpg",
                                        scale=3)
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
                types = gr.CheckboxGroup(TYPE_ROWS, value=TYPE_ROWS, label="Types involved")
            table = gr.Dataframe(headers=ui.ERROR_HEADERS, label="Tweets with errors (click one)",
                                 interactive=False, wrap=True, max_height=360, elem_id="error-table")
            detail = gr.Markdown()
            with gr.Row():
                gold_hl = gr.HighlightedText(label="Gold", color_map=dict(ui.TYPE_COLOURS), show_legend=True,
                                             elem_id="gold-hl")
                pred_hl = gr.HighlightedText(label="Predicted", color_map=dict(ui.TYPE_COLOURS), elem_id="pred-hl")
            with gr.Row():
                a_token = gr.Dropdown(label="Heatmap for", choices=[], value=None)
                a_heat = gr.Image(label="Text-guided image attention (mean of heads)", show_label=False,
                                  type="filepath", interactive=False, elem_id="analysis-heatmap")
            run_state, shown_state, a_state = gr.State(), gr.State(), gr.State()

            analyse_btn.click(on_analyse, [split, images_dir, checkpoint, caption_source, mode],
                              [summary, scores, confusion, table, jsonl, run_state, shown_state], api_name="analyse")
            for box in (kinds, types):
                box.input(on_filter, [run_state, kinds, types], [table, shown_state], api_name=False)
            table.select(on_select, [run_state, shown_state], [gold_hl, pred_hl, detail, a_token, a_heat, a_state],
                         api_name=False)
            a_token.input(on_analysis_token, [a_state, a_token], a_heat, api_name=False)

        with gr.Tab("Pre-annotation export"):
            gr.Markdown("Tag a file of tweets and write a Label Studio `tasks.json` with the predictions as "
                        "pre-annotations (no server needed)." + paths_note)
            with gr.Row():
                ex_data = gr.Textbox(label="Tweets (CoNLL, JSONL or CSV)", scale=3)
                ex_images = gr.Textbox(label="Images folder (optional)", scale=3)
                ex_order = gr.Radio(["file", "uncertainty"], value="file", label="Task order", scale=2)
            export_btn = gr.Button("Export")
            ex_file = gr.File(label="tasks.json")
            ex_msg = gr.Markdown()
            from itjner.labelstudio import LABEL_CONFIG

            gr.Code(LABEL_CONFIG, language="html", label="Labeling config", interactive=False)
            export_btn.click(on_export, [ex_data, ex_images, checkpoint, caption_source, ex_order],
                             [ex_file, ex_msg], api_name="export")
    return demo


def _image_file(images_dir, image_id):
    from itjner.images import image_path

    path = image_path(images_dir, image_id)
    return str(path) if path is not None and path.is_file() else None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="ITJNER demo app (Gradio)")
    p.add_argument("--checkpoint", help=f"model folder (default {default_checkpoint()})")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--caption-source", help="tags | given | lstm:<dir> | hf:<model> (default: the checkpoint's)")
    p.add_argument("--cache-dir", help="image feature cache (default $ITJNER_CACHE or ~/.cache/itjner)")
    p.add_argument("--allow-server-paths", action="store_true",
                   help="keep the error-analysis and export tabs (they read server paths) on a non-local --host")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is much faster on a "
                                               "machine whose cores are busy with other work)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from itjner import app_ui as ui

    folder = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    if not ui.is_checkpoint(folder):
        if args.checkpoint and folder.exists():
            print(f"error: {folder} is not an ITJNER checkpoint (it needs config.json and model.safetensors).",
                  file=sys.stderr)
        else:
            print("error: " + missing_checkpoint_message(folder), file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from itjner.cli import _quiet_transformers

    _quiet_transformers()
    service = ui.PredictService(folder, args.device, args.caption_source,
                                cache_dir=Path(args.cache_dir) / "features" if args.cache_dir else None)
    try:
        service.predictor()  # load once, now: the first request does not pay for it and a broken folder fails here
        warm = service.warm_up()
    except ui.UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    roots = [REPO / "assets", REPO / "runs", folder.parent]
    checkpoints = [service.default_checkpoint] + [c for c in ui.find_checkpoints(roots)
                                                  if Path(c).resolve() != Path(service.default_checkpoint).resolve()]
    local = args.host in ("127.0.0.1", "localhost", "::1") or args.host.startswith("127.")
    demo = build_demo(service, checkpoints, server_paths=local or args.allow_server_paths)
    demo.queue(default_concurrency_limit=4)
    print(f"ITJNER app: model {folder} ({service.predictor().config.modalities()}, warm-up {warm:.1f} s) on "
          f"http://{args.host}:{args.port}", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=f"{ui.MAX_UPLOAD_MB}mb",
                show_error=True, footer_links=["api"], allowed_paths=[str(EXAMPLES)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
