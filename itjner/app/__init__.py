"""The Gradio demo: `layout` (tabs: `tab_predict`, `tab_analysis`, `tab_export`), `service` (predictions for the
UI), `views` (a Prediction as widgets show it), `handoff` (to Label Studio), `runs` (whole-file jobs), `launch` (start-up).

Importing this package does not import Gradio; `build_demo` and `main` do."""


def build_demo(*args, **kwargs):
    from .layout import build_demo as build

    return build(*args, **kwargs)


def main(argv=None) -> int:
    from .launch import main as run

    return run(argv)
